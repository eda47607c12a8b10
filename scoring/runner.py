"""Score many studies with one pipeline: decoding in a thread pool, several studies in flight.

Each study's images are decoded by a decode pool while earlier studies run through the models, and
up to `workers` studies call `Pipeline.predict_images` at once, so their views share the batches of
the pipeline's dynamic batchers. Results come back to the calling thread in completion order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from classifiers.errors import ImageError, Overloaded
from classifiers.imaging import ImageLimits, load_image_file
from classifiers.overlay import Explanation
from classifiers.pipeline import Pipeline
from mura.studies import Study

UNSCORED_LABEL = "unscored"
OVERLOADED_RETRY_S = 0.05


@dataclass
class ImageFailure:
    """One image of a study that could not be decoded."""

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


def decode_study(study: Study, limits: ImageLimits) -> tuple[list[str], list[Image.Image], list[ImageFailure]]:
    """Decode every image of a study; an unreadable one becomes an ImageFailure, not an exception."""
    names: list[str] = []
    images: list[Image.Image] = []
    failures: list[ImageFailure] = []
    for image_path in study.image_paths:
        try:
            images.append(load_image_file(image_path, limits))
            names.append(image_path.name)
        except ImageError as error:
            failures.append(ImageFailure(image_path, type(error).__name__, str(error)))
        except OSError as error:
            message = f"{image_path.name}: cannot read the file ({error.strerror or error})"
            failures.append(ImageFailure(image_path, "FileError", message))
    return names, images, failures


def _base_row(study: Study) -> dict[str, object]:
    return {
        "study": study.study_id,
        "true_body_part": study.body_part or "",
        "true_label": "" if study.label is None else study.label,
    }


def score_decoded(pipeline: Pipeline, study: Study, decoded: tuple, aggregation: str,
                  explain: bool = False) -> StudyOutcome:
    """Run the pipeline on one decoded study and build its predictions row (with heatmaps when `explain`)."""
    names, images, failures = decoded
    failure_warnings = [f"unreadable image {failure.message}" for failure in failures]
    row = _base_row(study) | {"n_images": len(images), "n_unreadable": len(failures)}
    if not images:
        # Nothing to score: the row says so, and the worklist puts the study first for a human read.
        row |= {"label": UNSCORED_LABEL, "warnings": "; ".join(["no readable image", *failure_warnings])}
        return StudyOutcome(study, row, failures)
    while True:
        try:
            result = pipeline.predict_images(names, images, aggregation=aggregation, explain=explain)
            break
        except Overloaded:
            time.sleep(OVERLOADED_RETRY_S)
    row |= {
        "body_part": result.body_part,
        "body_part_confidence": f"{result.body_part_confidence:.6f}",
        "abnormality": f"{result.abnormality:.6f}",
        "label": result.label,
        "threshold": result.threshold,
        "warnings": "; ".join([*result.warnings, *failure_warnings]),
    }
    failed = {failure.image_path for failure in failures}
    paths = [path for path in study.image_paths if path not in failed]
    explained = [(path, image.size, view.explanation) for path, image, view in zip(paths, images, result.images,
                                                                                    strict=True) if view.explanation]
    return StudyOutcome(study, row, failures, explained)


def score_studies(
    pipeline: Pipeline,
    studies: Iterable[Study],
    on_outcome: Callable[[StudyOutcome], None],
    aggregation: str = "mean",
    workers: int = 8,
    decode_workers: int = 4,
    limits: ImageLimits | None = None,
    explain: bool = False,
) -> None:
    """Score `studies`, calling `on_outcome` in this thread as each one finishes.

    At most `2 * workers` studies are decoded or scored at a time. If `on_outcome` or scoring raises
    (or the user presses Ctrl-C), studies not yet started are cancelled and the error propagates.
    """
    if workers < 1 or decode_workers < 1:
        raise ValueError(f"workers and decode_workers must be at least 1, got {workers} and {decode_workers}")
    limits = limits or pipeline.settings.image_limits
    study_iterator = iter(studies)
    max_in_flight = 2 * workers
    with (
        ThreadPoolExecutor(decode_workers, thread_name_prefix="decode") as decode_pool,
        ThreadPoolExecutor(workers, thread_name_prefix="score") as score_pool,
    ):
        in_flight: set[Future] = set()

        def submit_next() -> None:
            study = next(study_iterator, None)
            if study is None:
                return
            decoded = decode_pool.submit(decode_study, study, limits)
            in_flight.add(score_pool.submit(
                lambda: score_decoded(pipeline, study, decoded.result(), aggregation, explain)
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
            decode_pool.shutdown(wait=False, cancel_futures=True)
            score_pool.shutdown(wait=False, cancel_futures=True)
            raise
