"""One spooled study scored: its instance files in, its SR out (the one call to swap for the common study path).

Called as the Orthanc worker calls the pipeline (pacs/processor.py): views from the instance bytes, one
pipeline call, the SR built by classifiers.structured_report, superseding the node's earlier SRs of the study.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from classifiers.errors import ImageError
from classifiers.pipeline import Pipeline
from classifiers.results import StudyResult, ViewInput
from classifiers.structured_report import build_structured_report

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredStudy:
    """The pipeline's result for a study and the SR to send (its evidence: the instances actually read)."""

    result: StudyResult
    report: Dataset
    left_out: tuple[str, ...]  # spool ids of instances that could not be read


def score_study(pipeline: Pipeline, instance_files: Sequence[Path],
                previous_reports: Sequence[Dataset] = ()) -> ScoredStudy | None:
    """Score the instances of one study and build its SR; None when none of them can be read.

    `previous_reports`: the node's earlier SRs of the study (their UIDs suffice); the SR supersedes them.
    An instance that cannot be read (its error names it by spool id) is left out and the rest are scored.

    Raises:
        ClassifierError: the study as a whole is refused (too many views or pixels, overloaded).
    """
    views = [ViewInput(path.stem, path.read_bytes()) for path in instance_files]
    left_out: list[str] = []
    while views:
        try:
            result = pipeline.predict_study(views)
        except ImageError as error:
            remaining = [view for view in views if view.name != error.view_name]
            if len(remaining) == len(views):
                raise
            logger.warning("instance left out: %s", error)
            left_out.append(error.view_name)
            views = remaining
            continue
        report = build_structured_report(result.source_headers, result, previous_versions=list(previous_reports),
                                         instance_number=len(previous_reports) + 1)
        return ScoredStudy(result, report, tuple(left_out))
    return None
