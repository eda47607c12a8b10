"""Score many studies with one pipeline: files read in a thread pool, several studies in flight.

Each study's files are read by a read pool while earlier studies run through the models, and up to
`workers` studies go through `Pipeline.run` at once (admission, decoding, both stages: the service's
path), so their views share the batches of the pipeline's dynamic batchers. An unreadable file is that
view's failure and the rest of the study is scored; a study the admission refuses is reported as refused.
Results come back to the calling thread in completion order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from classifiers.errors import ClassifierError, NoReadableView, Overloaded
from classifiers.names import printable_name
from classifiers.pipeline import Pipeline
from classifiers.results import Explanation, StudyResult, ViewInput
from classifiers.study_request import StudyRequest
from mura.studies import Study
from scoring.dicom_files import write_dicom_outputs

UNSCORED_LABEL = "unscored"
OVERLOADED_RETRY_S = 0.05
FRAME_SUFFIX = " [frame "


@dataclass
class ImageFailure:
    """One image of a study that could not be read or decoded, or a refused study (its folder as the path)."""

    image_path: Path
    error: str
    message: str


@dataclass
class StudyOutcome:
    """What scoring one study produced: its predictions row and its image failures."""

    study: Study
    row: dict[str, object]
    failures: list[ImageFailure] = field(default_factory=list)
    # With heatmaps: (image path, its size (width, height), its explanation) per scored view.
    explained: list[tuple[Path, tuple[int, int], Explanation]] = field(default_factory=list)
    refused: ImageFailure | None = None  # admission refused the whole study (its limits): the folder and why


@dataclass(frozen=True)
class StudyFiles:
    """A study's files read into memory: the views by display name, and the files that could not be read."""

    views: tuple[ViewInput, ...]
    paths: dict[str, Path]  # view name -> its file
    failures: tuple[ImageFailure, ...]


def read_study(study: Study) -> StudyFiles:
    """Read every file of a study; a file that cannot be read (a folder, FIFO, device, I/O error) is a failure."""
    views, paths, failures = [], {}, []
    for image_path in study.image_paths:
        name = _unique_name(printable_name(image_path.name), paths)
        try:
            if not image_path.is_file():
                raise IsADirectoryError(0, "not a regular file (a folder, FIFO or device); list image files only")
            data = image_path.read_bytes()
        except OSError as error:
            failures.append(ImageFailure(image_path, "FileError", f"{name}: cannot read the file"
                                                                  f" ({error.strerror or error})"))
            continue
        views.append(ViewInput(name, data))
        paths[name] = image_path
    return StudyFiles(tuple(views), paths, tuple(failures))


def _unique_name(name: str, taken: dict[str, Path]) -> str:
    """The view's display name, numbered when another file of the study has the same base name."""
    unique, number = name, 1
    while unique in taken:
        number += 1
        unique = f"{name} ({number})"
    return unique


def _base_row(study: Study) -> dict[str, object]:
    return {
        "study": study.study_id,
        "true_body_part": study.body_part or "",
        "true_label": "" if study.label is None else study.label,
    }


def score_read_study(pipeline: Pipeline, study: Study, files: StudyFiles, aggregation: str,
                     explain: bool = False, sr_folder: Path | None = None) -> StudyOutcome:
    """Run one read study through the pipeline's study path and build its row (heatmaps and SR when asked).

    A study nobody can score (no readable file, or refused by admission: too many views or pixels) gets
    an `unscored` row saying why, and the worklist puts it first for a person to read.
    """
    failures = list(files.failures)
    row = _base_row(study) | {"n_images": 0, "n_unreadable": len(failures)}
    if not files.views:
        return _unscored(study, row, failures, "no readable image")
    request = StudyRequest(files.views, aggregation=aggregation, explain=explain, skip_unreadable=True)
    try:
        result = _run_retrying(pipeline, request)
    except NoReadableView as error:
        failures += [ImageFailure(files.paths[view.name], view.error, view.message) for view in error.unreadable]
        return _unscored(study, row | {"n_unreadable": len(failures)}, failures, "no readable image")
    except ClassifierError as error:
        # Refused as a whole (views or pixels over the limits): reported, and the run goes on.
        outcome = _unscored(study, row, failures, f"refused: {error}")
        outcome.refused = ImageFailure(study.image_paths[0].parent, type(error).__name__, f"study refused: {error}")
        return outcome
    failures += [ImageFailure(files.paths[view.name], view.error, view.message) for view in result.unreadable]
    row |= {
        "n_images": result.n_images,
        "n_unreadable": len(failures),
        "body_part": result.body_part,
        "body_part_confidence": f"{result.body_part_confidence:.6f}",
        "abnormality": f"{result.abnormality:.6f}",
        "label": result.label,
        "threshold": result.threshold,
        "triage": result.triage or "",  # empty when the expert's manifest entry has no operating points
        "warnings": "; ".join([*result.warnings, *_file_warnings(files.failures)]),
        # Views the out-of-domain gate flags; empty when the repository has no gate statistics.
        "n_out_of_distribution": "" if any(view.out_of_distribution is None for view in result.images)
        else sum(bool(view.out_of_distribution) for view in result.images),
    }
    explained = [(_overlay_source(files.paths, view.name), view.explanation.view_size, view.explanation)
                 for view in result.images if view.explanation]
    if sr_folder is not None and result.source_headers and len(result.source_headers) == result.n_images:
        written = write_dicom_outputs(sr_folder, result, bool(explained), pipeline)
        row["warnings"] = "; ".join(filter(None, [row["warnings"], *written]))
    return StudyOutcome(study, row, failures, explained)


def _run_retrying(pipeline: Pipeline, request: StudyRequest) -> StudyResult:
    """`pipeline.run`, waiting while the process's queues or pixel budget are full (a batch run has no deadline)."""
    while True:
        try:
            return pipeline.run(request)
        except Overloaded:
            time.sleep(OVERLOADED_RETRY_S)


def _unscored(study: Study, row: dict[str, object], failures: list[ImageFailure], reason: str) -> StudyOutcome:
    """The row of a study that was not scored: label `unscored`, and why in its warnings."""
    row |= {"label": UNSCORED_LABEL,
            "warnings": "; ".join([reason, *(f"unreadable image {failure.message}" for failure in failures)])}
    return StudyOutcome(study, row, failures)


def _file_warnings(failures: Iterable[ImageFailure]) -> list[str]:
    """One warning per file that could not be read (decoding failures are the pipeline's warnings)."""
    return [f"unreadable image {failure.message}" for failure in failures if failure.error == "FileError"]


def _overlay_source(paths: dict[str, Path], view_name: str) -> Path:
    """The path a view's overlay is named after: its file, with the frame number for a multi-frame DICOM."""
    if view_name in paths:
        return paths[view_name]
    name, _, frame = view_name.rpartition(FRAME_SUFFIX)
    source = paths[name]
    return source.with_name(f"{source.stem}_frame{frame.rstrip(']')}{source.suffix}")


def score_studies(
    pipeline: Pipeline,
    studies: Iterable[Study],
    on_outcome: Callable[[StudyOutcome], None],
    aggregation: str = "mean",
    workers: int = 8,
    decode_workers: int = 4,
    explain: bool = False,
    sr_folder: Path | None = None,
) -> None:
    """Score `studies`, calling `on_outcome` in this thread as each one finishes.

    At most `2 * workers` studies are read or scored at a time (`decode_workers` threads read the files).
    If `on_outcome` or scoring raises (or the user presses Ctrl-C), studies not yet started are cancelled
    and the error propagates. With `sr_folder`, each study whose views are all DICOM gets its SR there.
    """
    if workers < 1 or decode_workers < 1:
        raise ValueError(f"workers and decode_workers must be at least 1, got {workers} and {decode_workers}")
    study_iterator = iter(studies)
    max_in_flight = 2 * workers
    with (
        ThreadPoolExecutor(decode_workers, thread_name_prefix="read") as read_pool,
        ThreadPoolExecutor(workers, thread_name_prefix="score") as score_pool,
    ):
        in_flight: set[Future] = set()

        def submit_next() -> None:
            study = next(study_iterator, None)
            if study is None:
                return
            files = read_pool.submit(read_study, study)
            in_flight.add(score_pool.submit(
                lambda: score_read_study(pipeline, study, files.result(), aggregation, explain, sr_folder)
            ))

        try:
            for _ in range(max_in_flight):
                submit_next()
            while in_flight:
                finished, _still_running = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    in_flight.discard(future)
                    on_outcome(future.result())
                    submit_next()
        except BaseException:
            for future in in_flight:
                future.cancel()
            read_pool.shutdown(wait=False, cancel_futures=True)
            score_pool.shutdown(wait=False, cancel_futures=True)
            raise
