"""Score studies on a Ray cluster (or a local Ray) with Ray Data: one Pipeline per actor, rows streamed back.

The study list becomes a Ray Dataset of plain records; `map_batches` runs `ScoringActor`, an actor class
that loads `classifiers.Pipeline` once and scores a batch of studies with the same code as the local
engine (`scoring.runner`: decoding in the actor, several studies in flight so their views share
batches). Rows come back as the actors finish them and go through the caller's `on_outcome`, which
appends them to the CSV: a killed run loses only the studies in flight, and a rerun resumes.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifiers.logs import native_output_logged, safe_error_text
from mura.studies import Study
from scoring.runner import ImageFailure, StudyOutcome

logger = logging.getLogger(__name__)
INSTALL_HINT = "the ray engine needs Ray: pip install -r requirements-ray.txt"
STUDIES_PER_BATCH = 4  # studies one actor call scores together (their views share model batches)


class RayEngineError(Exception):
    """Scoring on Ray could not start or failed; the message is one line for the user."""

    def __init__(self, message: str, models_failed: bool = False) -> None:
        super().__init__(message)
        self.models_failed = models_failed  # the repository does not load: a rerun will not help


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run: `address` None starts a local Ray; GPUs are per actor."""

    address: str | None = None
    actors: int = 2
    gpus_per_actor: float = 0.0
    threads_per_actor: int = 4


def study_record(study: Study) -> dict[str, Any]:
    """A Study as a plain record a Ray Dataset can hold."""
    return {"study_id": study.study_id, "paths": json.dumps([str(path) for path in study.image_paths]),
            "body_part": study.body_part or "", "label": -1 if study.label is None else study.label}


def record_study(record: dict[str, Any]) -> Study:
    """The Study a record describes (the inverse of `study_record`)."""
    label = int(record["label"])
    return Study(str(record["study_id"]), tuple(Path(path) for path in json.loads(record["paths"])),
                 str(record["body_part"]) or None, None if label < 0 else label)


class ScoringActor:
    """Loads the pipeline once; scores each batch of study records it is given.

    Errors never escape as Ray traces: a repository that does not load, or a failed batch, comes back as
    an `error` row that the driver turns into one line for the user.
    """

    def __init__(self, models: str, aggregation: str, threads: int) -> None:
        from classifiers.logs import configure_logging

        configure_logging("WARNING")
        self.aggregation = aggregation
        self.threads = threads
        self.pipeline, self.load_error = None, ""
        try:
            from classifiers import Pipeline

            self.pipeline = Pipeline.load(models)
        except Exception as error:  # reported with the first batch, as one line
            self.load_error = f"the models in {models} do not load: {error}"

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        """Score the batch's studies; return their rows and failures as JSON strings (or one error row)."""
        from scoring.runner import score_studies

        if self.pipeline is None:
            return _error_rows(self.load_error, models_failed=True)
        records = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        outcomes: list[StudyOutcome] = []
        try:
            score_studies(self.pipeline, [record_study(record) for record in records], outcomes.append,
                          self.aggregation, workers=self.threads, decode_workers=min(2, self.threads))
        except Exception as error:
            return _error_rows(safe_error_text(error))  # a library's message may quote a header value
        return {"study_id": [outcome.study.study_id for outcome in outcomes],
                "row": [json.dumps(outcome.row) for outcome in outcomes],
                "failures": [json.dumps([[str(failure.image_path), failure.error, failure.message]
                                         for failure in outcome.failures]) for outcome in outcomes],
                "error": ["" for _ in outcomes], "models_failed": [False for _ in outcomes]}


def _error_rows(message: str, models_failed: bool = False) -> dict[str, list[Any]]:
    """One row that carries an actor's error to the driver."""
    return {"study_id": [""], "row": ["{}"], "failures": ["[]"], "error": [message],
            "models_failed": [models_failed]}


def score_studies_on_ray(models: Path, studies: Sequence[Study], on_outcome: Callable[[StudyOutcome], None],
                         aggregation: str, options: RayOptions) -> None:
    """Score `studies` on Ray, calling `on_outcome` in this process as each one comes back.

    Raises:
        RayEngineError: Ray is missing, cannot start, or the scoring failed; one line, no Ray trace.
    """
    try:
        import ray
    except ImportError:
        raise RayEngineError(INSTALL_HINT) from None
    started_here = _start_ray(ray, options.address)
    by_id = {study.study_id: study for study in studies}
    rows = None
    try:
        scored = study_dataset(ray, studies).map_batches(
            ScoringActor, fn_constructor_kwargs={"models": str(models), "aggregation": aggregation,
                                                 "threads": options.threads_per_actor},
            batch_size=STUDIES_PER_BATCH, concurrency=options.actors, num_gpus=options.gpus_per_actor or None,
            batch_format="numpy")
        rows = iter(scored.iter_rows())
        for row in rows:
            if row["error"]:
                raise RayEngineError(str(row["error"]), models_failed=bool(row["models_failed"]))
            on_outcome(_outcome(by_id[str(row["study_id"])], row))
    except RayEngineError:
        raise
    except Exception as error:  # Ray's own failures (a worker lost, the cluster gone)
        raise RayEngineError(root_cause(error)) from None
    finally:
        _stop_rows_then_ray(ray, rows, started_here)


def _stop_rows_then_ray(ray: Any, rows: Iterator[Any] | None, started_here: bool) -> None:
    """Stop Ray Data's executor (close the row iterator left open by an error), then the local Ray.

    An iterator left open keeps the executor's threads running in this process; shutting Ray down under
    them can make Ray's core worker see its raylet die and end the process with exit code 1 and no message
    (seen once in CI, when a repository did not load), which would swallow the one line the user needs.
    """
    close = getattr(rows, "close", None)
    if close is not None:
        try:
            close()
        except Exception as error:  # the error that ended the run matters more than the executor's own
            logger.debug("closing Ray Data's row iterator: %s", error)
    if started_here:
        ray.shutdown()


def study_dataset(ray: Any, studies: Sequence[Study]) -> Any:
    """The studies as a Ray Dataset of one block per actor call.

    An actor returns a block's rows only when the whole block is scored. Left to itself, Ray cuts the list
    into about 200 blocks (two per CPU on a larger cluster), so on an archive of a million studies each
    block would hold thousands: rows would come back in bursts, and a kill would lose all of them.
    """
    blocks = max(1, math.ceil(len(studies) / STUDIES_PER_BATCH))
    return ray.data.from_items([study_record(study) for study in studies], override_num_blocks=blocks)


def ray_address(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The address for ray.init: --ray-address, else RAY_ADDRESS (as `ray job submit` sets), else "local".

    Never None: Ray would then join whatever cluster `ray start` last started on this machine, which on a
    shared machine is someone else's.
    """
    environ = os.environ if environ is None else environ
    return option or environ.get("RAY_ADDRESS") or "local"


def _outcome(study: Study, row: dict[str, Any]) -> StudyOutcome:
    """Rebuild a StudyOutcome from one row the actors returned."""
    failures = [ImageFailure(Path(path), error, message) for path, error, message in json.loads(row["failures"])]
    return StudyOutcome(study, json.loads(row["row"]), failures)


def _start_ray(ray: Any, address: str | None) -> bool:
    """Connect to `address`, or start a local Ray; return whether this call started it."""
    if ray.is_initialized():
        return False
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ notices; score.py --verbose keeps them
    address = ray_address(address)
    try:
        with native_output_logged(logger):  # the C++ start-up lines (log level set, ports) go to the log
            ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level=logging.ERROR,
                     configure_logging=True)
    except Exception as error:  # ConnectionError, ValueError, RuntimeError: Ray's own for a bad address
        where = f"the Ray cluster at {address}" if address != "local" else "a local Ray"
        raise RayEngineError(f"cannot start {where}: {root_cause(error)}") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # score.py draws its own
    for name in ("ray", "ray.data"):  # Ray Data's execution plan and progress notices
        logging.getLogger(name).setLevel(logging.DEBUG if logging.getLogger().isEnabledFor(logging.DEBUG)
                                         else logging.ERROR)
    return True


def root_cause(error: BaseException) -> str:
    """The innermost error's type and first line: what went wrong inside an actor, without Ray's trace."""
    cause: BaseException = error
    while True:
        inner = getattr(cause, "cause", None) or cause.__cause__
        if not isinstance(inner, BaseException) or inner is cause:
            break
        cause = inner
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    # Ray's own wrappers start with the trace's header; the last line holds the original error.
    message = lines[-1] if lines and type(cause).__module__.startswith("ray") else (lines[0] if lines else "")
    return f"{type(cause).__name__}: {message}"[:500]
