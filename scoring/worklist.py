"""The triage worklist: unscored studies first, then flagged, indeterminate and low ones, each most likely abnormal
first (classifiers.triage), for reading-list prioritisation."""

from __future__ import annotations

import csv
from pathlib import Path

from classifiers.repository.entries import TRIAGE_CATEGORIES
from classifiers.triage import triage_order

WORKLIST_COLUMNS = ("rank", "study", "priority", "abnormality", "label", "triage", "body_part",
                    "body_part_confidence", "n_images", "warnings")
SCORED_LABELS = ("normal", "abnormal")


def _abnormality(row: dict[str, str]) -> float | None:
    """The row's abnormality, None when the study was not scored."""
    if row["label"] not in SCORED_LABELS:
        return None
    try:
        return float(row["abnormality"])
    except ValueError:
        return None


def _category(row: dict[str, str]) -> str | None:
    """The row's triage category; None when it has none (no operating points, or a file of an earlier release)."""
    category = row.get("triage") or None
    return category if category in TRIAGE_CATEGORIES else None


def order_worklist(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Return rows in triage order (classifiers.triage): unscored first, then by triage category and abnormality."""
    return triage_order(rows, _abnormality, lambda row: row["study"], _category)


def write_worklist(path: Path, rows: list[dict[str, str]]) -> int:
    """Write the worklist CSV and return how many studies it lists."""
    ordered = order_worklist(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(WORKLIST_COLUMNS)
        for rank, row in enumerate(ordered, start=1):
            priority = "unscored: read first" if _abnormality(row) is None else row["label"]
            writer.writerow([rank, row["study"], priority, row["abnormality"], row["label"],
                             _category(row) or "", row["body_part"],
                             row["body_part_confidence"], row["n_images"], row["warnings"]])
    return len(ordered)
