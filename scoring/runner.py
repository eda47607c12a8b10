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

from classifiers.decoding import load_view_file
from classifiers.errors import ImageError, Overloaded
from classifiers.imaging import ImageLimits
from classifiers.overlay import Explanation
from classifiers.pipeline import Pipeline
from classifiers.results import DecodedView
from mura.studies import Study
from scoring.dicom_files import write_dicom_outputs

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


def decode_study(study: Study, limits: ImageLimits) -> tuple[list[DecodedView], list[Path], list[ImageFailure]]:
    """Decode every file of a study: its views (a multi-frame DICOM gives one per frame), each view's file, and
    the failures, reported, not raised."""
    views: list[DecodedView] = []
    sources: list[Path] = []
    failures: list[ImageFailure] = []
    for image_path in study.image_paths:
        try:
            decoded = load_view_file(image_path, limits)
            views.extend(decoded)
            sources.extend([image_path] * len(decoded))
        except ImageError as error:
            failures.append(ImageFailure(image_path, type(error).__name__, str(error)))
        except OSError as error:
            message = f"{image_path.name}: cannot read the file ({error.strerror or error})"
            failures.append(ImageFailure(image_path, "FileError", message))
    return views, sources, failures


def _base_row(study: Study) -> dict[str, object]:
    return {
        "study": study.study_id,
        "true_body_part": study.body_part or "",
        "true_label": "" if study.label is None else study.label,
    }


def score_decoded(pipeline: Pipeline, study: Study, decoded: tuple, aggregation: str,
                  explain: bool = False, sr_folder: Path | None = None) -> StudyOutcome:
    """Run the pipeline on one decoded study and build its predictions row (heatmaps when `explain`, SR when asked)."""
    views, sources, failures = decoded
    failure_warnings = [f"unreadable image {failure.message}" for failure in failures]
    row = _base_row(study) | {"n_images": len(views), "n_unreadable": len(failures)}
    if not views:
        # Nothing to score: the row says so, and the worklist puts the study first for a human read.
        row |= {"label": UNSCORED_LABEL, "warnings": "; ".join(["no readable image", *failure_warnings])}
        return StudyOutcome(study, row, failures)
    while True:
        try:
            result = pipeline.predict_decoded(views, aggregation=aggregation, explain=explain)
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
        # Views the out-of-domain gate flags; empty when the repository has no gate statistics.
        "n_out_of_distribution": "" if any(view.out_of_distribution is None for view in result.images)
        else sum(bool(view.out_of_distribution) for view in result.images),
    }
    explained = [(_overlay_source(source, view), view.image.size, view_result.explanation)
                 for source, view, view_result in zip(sources, views, result.images, strict=True)
                 if view_result.explanation]
    if sr_folder is not None and all(view.header is not None for view in views):
        written = write_dicom_outputs(sr_folder, result, bool(explained), pipeline)
        row["warnings"] = "; ".join(filter(None, [row["warnings"], *written]))
    return StudyOutcome(study, row, failures, explained)


def _overlay_source(source: Path, view: DecodedView) -> Path:
    """The path a view's overlay is named after: its file, with the frame number for a multi-frame DICOM."""
    if view.dicom is None or source.name == view.name:
        return source
    return source.with_name(f"{source.stem}_frame{view.dicom.frame}{source.suffix}")


def score_studies(
    pipeline: Pipeline,
    studies: Iterable[Study],
    on_outcome: Callable[[StudyOutcome], None],
    aggregation: str = "mean",
    workers: int = 8,
    decode_workers: int = 4,
    limits: ImageLimits | None = None,
    explain: bool = False,
    sr_folder: Path | None = None,
) -> None:
    """Score `studies`, calling `on_outcome` in this thread as each one finishes.

    At most `2 * workers` studies are decoded or scored at a time. If `on_outcome` or scoring raises
    (or the user presses Ctrl-C), studies not yet started are cancelled and the error propagates. With
    `sr_folder`, each study whose views are all DICOM gets its SR written there.
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
                lambda: score_decoded(pipeline, study, decoded.result(), aggregation, explain, sr_folder)
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
