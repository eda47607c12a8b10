"""scoring.worklist: unscored first, then most likely abnormal, ties by study id."""

from __future__ import annotations

from scoring.worklist import order_worklist


def test_worklist_order_breaks_ties_by_study_id() -> None:
    rows = [{"study": "b", "abnormality": "0.5", "label": "abnormal"},
            {"study": "a", "abnormality": "0.5", "label": "abnormal"},
            {"study": "c", "abnormality": "0.9", "label": "abnormal"},
            {"study": "d", "abnormality": "0.1", "label": "normal"},
            {"study": "e", "abnormality": "", "label": "unscored"}]
    assert [row["study"] for row in order_worklist(rows)] == ["e", "c", "a", "b", "d"]
