"""classifiers.triage: the one reading order both worklists (score.py and the PACS worker) use."""

from __future__ import annotations

import pytest

from classifiers.triage import triage_order
from pacs.state import StudyRecord, WorkerState
from pacs.worklist import COLUMNS, worklist_rows
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


# (study id, abnormality or None when unscored, triage category or None without operating points)
CATEGORISED = [("low-high", 0.45, "low"), ("flag-low", 0.61, "flagged"), ("none", 0.3, None),
               ("ind", 0.5, "indeterminate"), ("flag-high", 0.99, "flagged"), ("unscored", None, None),
               ("low-low", 0.01, "low"), ("none-high", 0.8, None)]
CATEGORISED_ORDER = ["unscored", "flag-high", "flag-low", "none-high", "ind", "none", "low-high", "low-low"]


def test_flagged_then_indeterminate_or_uncategorised_by_score_then_low_with_unscored_still_first() -> None:
    ordered = triage_order(CATEGORISED, lambda study: study[1], lambda study: study[0], lambda study: study[2])
    assert [study_id for study_id, _, _ in ordered] == CATEGORISED_ORDER


def test_an_unknown_category_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="flagged, indeterminate, low"):
        triage_order([("a", 0.5, "urgent")], lambda study: study[1], lambda study: study[0], lambda study: study[2])


def test_both_worklists_sort_by_category_the_same_way_and_show_it() -> None:
    rows = [{"study": study_id, "abnormality": "" if score is None else str(score), "triage": category or "",
             "label": "unscored" if score is None else ("abnormal" if score >= 0.5 else "normal")}
            for study_id, score, category in CATEGORISED]
    state = WorkerState(1, {study_id: StudyRecord((f"1.{index}",), abnormality=score, triage=category,
                                                  skipped=None if score is not None else "no readable radiograph")
                            for index, (study_id, score, category) in enumerate(CATEGORISED)})
    pacs_rows = worklist_rows(state)
    assert [row["study"] for row in order_worklist(rows)] == [row[0] for row in pacs_rows] == CATEGORISED_ORDER
    categories = dict((study_id, category or "") for study_id, _, category in CATEGORISED)
    assert [row[COLUMNS.index("triage")] for row in pacs_rows] == [categories[name] for name in CATEGORISED_ORDER]
