"""Load the pipeline once per app, in the foreground or in a background thread."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import current_app

from classifiers.backends.registry import DEFAULT_BACKEND
from classifiers.decoding.imaging import ImageLimits
from classifiers.drift_monitor import DriftMonitor
from classifiers.errors import ModelRepositoryError
from classifiers.pipeline import Pipeline, PipelineSettings
from classifiers.results import StudyResult
from web.errors import ApiError

logger = logging.getLogger(__name__)


def build_settings(config: Mapping[str, Any], on_batch: Callable[[str, int], None],
                   on_study: Callable[[StudyResult], None] | None = None) -> PipelineSettings:
    """Translate the app config into PipelineSettings; `on_study` sees every answered study (the drift monitor)."""
    return PipelineSettings(
        max_batch_size=config["MAX_BATCH_SIZE"],
        max_wait_ms=config["MAX_WAIT_MS"],
        max_queue_views=config["MAX_QUEUE_VIEWS"],
        max_views=config["MAX_VIEWS"],
        max_study_pixels=config["MAX_STUDY_PIXELS"],
        pixel_budget=config["PIXEL_BUDGET"],
        image_limits=ImageLimits(max_pixels=config["MAX_PIXELS"], min_side=config["MIN_SIDE"]),
        warmup=config["WARMUP"],
        jit_compile=config["JIT_COMPILE"],
        intra_op_threads=config["INTRA_OP_THREADS"],
        inter_op_threads=config["INTER_OP_THREADS"],
        backend=config["BACKEND"] or DEFAULT_BACKEND,
        preload_explainers=config["PRELOAD_EXPLAINERS"],
        reject_out_of_distribution=config["REJECT_OUT_OF_DISTRIBUTION"],
        on_batch=on_batch,
        on_study=on_study,
    )


def lower_thread_priority(increment: int) -> None:
    """Raise this thread's nice value by `increment` (Linux: per thread; the threads it starts inherit it)."""
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    thread_id = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread_id, os.getpriority(os.PRIO_PROCESS, thread_id) + increment)
    except OSError as error:
        logger.warning("cannot lower the model threads' priority (%s); refusals may wait behind the models",
                       error.strerror)


class PipelineLoader:
    """Holds the app's pipeline, or why it is not there yet."""

    def __init__(self, repository: Path, settings: PipelineSettings, model_nice: int = 0,
                 drift_monitor: DriftMonitor | None = None):
        self.repository = repository
        self.settings = settings
        self.model_nice = model_nice  # background loading: the model threads' nice value above the request threads'
        self.drift_monitor = drift_monitor  # given the repository's drift reference once it is loaded

        self.pipeline: Pipeline | None = None
        self.failure: str | None = None
        self.loaded = threading.Event()

    def load(self) -> Pipeline:
        """Load and warm up every model; raises ModelRepositoryError with a message that says what to do."""
        try:
            pipeline = Pipeline.load(self.repository, self.settings)
            if self.drift_monitor is not None:  # before any study can reach the pipeline
                self.drift_monitor.use_reference(pipeline.drift_reference,
                                                 {role: loaded.version for role, loaded in pipeline.models.items()})
            self.pipeline = pipeline
            log_loaded(self.pipeline)
        except ModelRepositoryError as error:
            # The message names the bad file; clients see it relative to the repository, not the server path.
            message = str(error).replace(str(self.repository), self.repository.name)
            self.failure = f"the model repository failed to load: {message}"
            raise
        except Exception as error:
            self.failure = f"the model repository failed to load ({type(error).__name__}); see the service log"
            raise
        finally:
            self.loaded.set()
        return self.pipeline

    def load_in_background(self) -> threading.Thread:
        """Start loading in a daemon thread so /healthz answers at once; /readyz says 503 meanwhile."""

        def run() -> None:
            # The batcher threads and the runtimes' pools (TensorFlow's, ONNX Runtime's) start from this
            # thread and inherit its priority: under overload gunicorn's request threads get the CPU first,
            # so a refusal (503) waits less behind the models (docs/PERFORMANCE.md, "Refusals on the TensorFlow
            # backend"; TRIAGE_MODEL_NICE, 0 by default).
            lower_thread_priority(self.model_nice)
            try:
                self.load()
            except Exception:
                logger.exception("%s", self.failure)

        thread = threading.Thread(target=run, name="pipeline-loader", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop the pipeline's batcher threads, if it loaded."""
        if self.pipeline is not None:
            self.pipeline.close()

    def queue_depths(self) -> dict[str, int]:
        """Queue depth per model, empty before the pipeline is loaded."""
        return self.pipeline.queue_depths() if self.pipeline is not None else {}

    def not_ready_reason(self) -> str | None:
        """None when ready, otherwise why not (still loading, or the load failure)."""
        if self.pipeline is not None:
            return None
        if self.failure is not None:
            return self.failure
        return "the models are still loading; retry shortly"


def log_loaded(pipeline: Pipeline) -> None:
    """Say what runs: each model, the backend, the device, the load time, and that the service is ready."""
    for role, loaded in pipeline.models.items():
        logger.info("%-11s %s (%s backend, %s, %dx%d)", role, loaded.version, loaded.runner.backend,
                    loaded.runner.library, *loaded.input_size)
    reference = pipeline.drift_reference
    if reference is None:
        logger.info("no drift reference in the repository: drift PSI figures are off (docs/MONITORING.md)")
    else:
        logger.info("drift reference of %d body parts (%s)", len(reference.parts),
                    reference.computed_on.get("data", "data not recorded"))
    causes = ", ".join(f"{cause} {seconds:.1f} s" for cause, seconds in pipeline.load_breakdown.items())
    logger.info("%d models loaded from %s with the %s backend on %s in %.1f s (%s); ready", len(pipeline.models),
                pipeline.repository, pipeline.backend.name, pipeline.device, pipeline.load_seconds, causes)


def not_ready_error(loader: PipelineLoader) -> ApiError | None:
    """None when ready; 503 not_ready + Retry-After while loading; 503 load_failed without it for good.

    A repository that failed to load stays failed until the process restarts: "retry shortly" would be
    untrue, so that answer has no Retry-After and a code of its own.
    """
    reason = loader.not_ready_reason()
    if reason is None:
        return None
    if loader.failure is not None:
        return ApiError(503, "load_failed", reason)
    return ApiError(503, "not_ready", reason, retry_after_s=current_app.config["RETRY_AFTER_NOT_READY_S"])


def get_pipeline() -> Pipeline:
    """The current app's pipeline, or the 503 of `not_ready_error`."""
    loader: PipelineLoader = current_app.extensions["pipeline_loader"]
    error = not_ready_error(loader)
    if error is not None:
        raise error
    return loader.pipeline  # type: ignore[return-value]
