"""One spooled study scored: its instance files in, its SR out, through the pipeline's one study path.

Views from the instance bytes, one `Pipeline.run` (admission included; an unreadable instance is left
out and the rest scored), the SR built by classifiers.dicom_output, superseding the node's earlier SRs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from classifiers.dicom_output.secondary_capture import build_heatmap_captures, capture_bytes
from classifiers.dicom_output.structured_report import build_structured_report, structured_report_bytes
from classifiers.errors import NoReadableView
from classifiers.pipeline import Pipeline
from classifiers.results import StudyResult, ViewInput
from classifiers.study_request import StudyRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredStudy:
    """The pipeline's result for a study and what to send: the SR (evidence: the instances read), any captures."""

    result: StudyResult
    report: Dataset
    captures: tuple[Dataset, ...]  # heatmap Secondary Captures, one per view, when asked
    left_out: tuple[str, ...]  # spool ids of instances that could not be read

    def files(self) -> list[bytes]:
        """The DICOM files to send, the SR first."""
        return [structured_report_bytes(self.report), *(capture_bytes(capture) for capture in self.captures)]


def score_study(pipeline: Pipeline, instance_files: Sequence[Path], previous_reports: Sequence[Dataset] = (),
                heatmaps: bool = False) -> ScoredStudy | None:
    """Score the instances of one study and build its SR (and heatmap captures); None when none can be read.

    `previous_reports`: the node's earlier SRs of the study (their UIDs suffice); the SR supersedes them.
    An instance that cannot be read (its error names it by spool id) is left out and the rest are scored.

    Raises:
        ClassifierError: the study as a whole is refused (too many views or pixels, overloaded).
    """
    views = tuple(ViewInput(path.stem, path.read_bytes()) for path in instance_files)
    try:
        result = pipeline.run(StudyRequest(views, explain=heatmaps, skip_unreadable=True))
    except NoReadableView as error:
        for view in error.unreadable:
            logger.warning("instance left out: %s", view.message)
        return None
    for view in result.unreadable:
        logger.warning("instance left out: %s", view.message)
    report = build_structured_report(result.source_headers, result, previous_versions=list(previous_reports),
                                     instance_number=len(previous_reports) + 1)
    overlays = [view.explanation.heatmap_png for view in result.images if view.explanation is not None]
    captures = build_heatmap_captures(result.source_headers, overlays) if overlays else []
    return ScoredStudy(result, report, tuple(captures), tuple(view.name for view in result.unreadable))
