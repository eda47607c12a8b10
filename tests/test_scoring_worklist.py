"""scoring.worklist: unscored first, then most likely abnormal, ties by study id."""

from __future__ import annotations

import csv
from pathlib import Path

from scoring.worklist import WORKLIST_COLUMNS, order_worklist, write_worklist


def test_worklist_order_breaks_ties_by_study_id() -> None:
    rows = [{"study": "b", "abnormality": "0.5", "label": "abnormal"},
            {"study": "a", "abnormality": "0.5", "label": "abnormal"},
            {"study": "c", "abnormality": "0.9", "label": "abnormal"},
            {"study": "d", "abnormality": "0.1", "label": "normal"},
            {"study": "e", "abnormality": "", "label": "unscored"}]
    assert [row["study"] for row in order_worklist(rows)] == ["e", "c", "a", "b", "d"]


def test_worklist_csv_lists_flagged_before_indeterminate_before_low_with_the_category(tmp_path: Path) -> None:
    base = {"body_part": "XR_HAND", "body_part_confidence": "0.9", "n_images": "1", "warnings": ""}
    rows = [base | {"study": "low", "abnormality": "0.40", "label": "normal", "triage": "low"},
            base | {"study": "flagged", "abnormality": "0.70", "label": "abnormal", "triage": "flagged"},
            base | {"study": "indeterminate", "abnormality": "0.95", "label": "abnormal", "triage": "indeterminate"},
            base | {"study": "old-release", "abnormality": "0.99", "label": "abnormal", "triage": ""},
            base | {"study": "unscored", "abnormality": "", "label": "unscored", "triage": ""}]
    assert write_worklist(tmp_path / "worklist.csv", rows) == 5
    with open(tmp_path / "worklist.csv", newline="") as handle:
        listed = list(csv.DictReader(handle))
    assert tuple(listed[0]) == WORKLIST_COLUMNS
    assert [(row["study"], row["triage"]) for row in listed] == [
        ("unscored", ""), ("flagged", "flagged"), ("old-release", ""), ("indeterminate", "indeterminate"),
        ("low", "low")]
