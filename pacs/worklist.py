"""`python -m pacs worklist`: the scored studies of the state file, most likely abnormal first."""

from __future__ import annotations

from collections.abc import Iterable

from pacs.state import WorkerState

COLUMNS = ("orthanc_study", "study_date", "body_part", "score", "label")


NOT_SCORED = "not scored"


def worklist_rows(state: WorkerState) -> list[tuple[str, str, str, str, str]]:
    """(study id, date, body part, score, label): studies moved aside first ("not scored"), then by score."""
    moved_aside = [(study_id, record.study_date, "", "", NOT_SCORED)
                   for study_id, record in state.studies.items() if record.moved_aside]
    scored = [(study_id, record) for study_id, record in state.studies.items() if record.abnormality is not None]
    scored.sort(key=lambda item: item[1].abnormality, reverse=True)
    return moved_aside + [(study_id, record.study_date, record.body_part, f"{record.abnormality:.6f}", record.label)
                          for study_id, record in scored]


def format_worklist(rows: Iterable[tuple[str, ...]]) -> str:
    """Tab-separated lines with a header line (no patient attribute: none is kept in the state)."""
    return "\n".join("\t".join(row) for row in [COLUMNS, *rows]) + "\n"
