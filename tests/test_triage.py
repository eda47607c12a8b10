"""classifiers.triage: the one reading order both worklists (score.py and the PACS worker) use."""

from __future__ import annotations

from classifiers.triage import triage_order
from pacs.state import StudyRecord, WorkerState
from pacs.worklist import worklist_rows
from scoring.worklist import order_worklist

# (study id, abnormality or None when the study could not be scored)
STUDIES = [("b", 0.5), ("nan", float("nan")), ("a", 0.5), ("z-unscored", None), ("c", 0.9), ("d", 0.1),
           ("e-unscored", None)]
EXPECTED = ["e-unscored", "nan", "z-unscored", "c", "a", "b", "d"]


def test_unscored_studies_come_first_by_id_then_the_scored_highest_first_ties_by_id() -> None:
    ordered = triage_order(STUDIES, lambda study: study[1], lambda study: study[0])
    assert [study_id for study_id, _ in ordered] == EXPECTED


def test_the_scoring_and_the_pacs_worklists_give_the_same_order_for_the_same_studies() -> None:
    rows = [{"study": study_id, "abnormality": "" if score is None else str(score),
             "label": "unscored" if score is None else ("abnormal" if score >= 0.5 else "normal")}
            for study_id, score in STUDIES if study_id != "nan"]
    state = WorkerState(1, {study_id: StudyRecord((f"1.{index}",), abnormality=score,
                                                  skipped=None if score is not None else "no readable radiograph")
                            for index, (study_id, score) in enumerate(STUDIES) if study_id != "nan"})
    from_scoring = [row["study"] for row in order_worklist(rows)]
    from_pacs = [row[0] for row in worklist_rows(state)]
    assert from_scoring == from_pacs == [study_id for study_id in EXPECTED if study_id != "nan"]
