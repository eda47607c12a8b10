"""One spooled study scored: its instance files in, its SR out, through the pipeline's one study path.

Views from the instance bytes, one `Pipeline.run` (admission included; an unreadable instance is left
out and the rest scored), the objects made by the one builder (classifiers.outputs.dicom_outputs): the
SR superseding the node's earlier SRs, and with heatmaps a capture and a presentation state per view.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from classifiers.errors import NoReadableView
from classifiers.outputs.dicom_outputs import DicomOutputs, build_dicom_outputs, scoring_backend
from classifiers.pipeline import Pipeline
from classifiers.results import StudyResult, ViewInput
from classifiers.study_request import StudyRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredStudy:
    """The pipeline's result for a study and what to send: the SR (evidence: the instances read), any captures."""

    result: StudyResult
    outputs: DicomOutputs  # the SR, and with heatmaps a Secondary Capture and a presentation state per view
    left_out: tuple[str, ...]  # spool ids of instances that could not be read

    @property
    def report(self) -> Dataset:
        """The study's SR."""
        return self.outputs.report

    def files(self) -> list[bytes]:
        """The DICOM files to send, the SR first."""
        return self.outputs.instances_bytes()


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
    outputs = build_dicom_outputs(result, explained=heatmaps, backend=scoring_backend(pipeline, result),
                                  previous_versions=list(previous_reports), instance_number=len(previous_reports) + 1)
    return ScoredStudy(result, outputs, tuple(view.name for view in result.unreadable))
