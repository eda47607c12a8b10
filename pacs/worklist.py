"""`python -m pacs worklist`: the radiograph studies of the state file in triage order (classifiers.triage).

Studies whose radiographs could not be scored come first (label `unscored: read first (<why>)`): nothing
says they are normal, so a person must look at them. Then the scored studies: flagged, indeterminate (or without
a category: the expert had no operating points), low; each most likely abnormal first.
Studies without any radiograph (CT, MR, ...) are not this service's to triage and are not listed.
"""

from __future__ import annotations

from collections.abc import Iterable

from classifiers.triage import is_unscored, triage_order
from pacs.state import StudyRecord, WorkerState

COLUMNS = ("orthanc_study", "study_date", "body_part", "score", "label", "triage")


def worklist_rows(state: WorkerState) -> list[tuple[str, str, str, str, str, str]]:
    """(Orthanc study id, study date, body part, score, label, triage category) of every radiograph study, in
    triage order; the category is empty when the study has none.

    A study moved aside (the archive kept failing on it) is listed, unscored, whatever is known of it.
    """
    listed = [(study_id, record) for study_id, record in state.studies.items()
              if record.instances or record.moved_aside]
    ordered = triage_order(listed, lambda item: item[1].abnormality, lambda item: item[0], lambda item: item[1].triage)
    return [_row(study_id, record) for study_id, record in ordered]


def _row(study_id: str, record: StudyRecord) -> tuple[str, str, str, str, str, str]:
    """One worklist line; an unscored study says why in its label."""
    if is_unscored(record.abnormality):
        why = record.skipped or "its SR holds no score"
        return study_id, record.study_date, record.body_part, "", f"unscored: read first ({why})", ""
    return (study_id, record.study_date, record.body_part, f"{record.abnormality:.6f}", record.label,
            record.triage or "")


def format_worklist(rows: Iterable[tuple[str, ...]]) -> str:
    """Tab-separated lines with a header line (no patient attribute: none is kept in the state)."""
    return "\n".join("\t".join(row) for row in [COLUMNS, *rows]) + "\n"
