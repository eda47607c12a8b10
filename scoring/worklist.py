"""The triage worklist: scored studies, most likely abnormal first, for reading-list prioritisation."""

from __future__ import annotations

import csv
from pathlib import Path

from classifiers.triage import triage_order

WORKLIST_COLUMNS = ("rank", "study", "priority", "abnormality", "label", "body_part",
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


def order_worklist(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Return rows in triage order (classifiers.triage): studies that could not be scored first, then by abnormality."""
    return triage_order(rows, _abnormality, lambda row: row["study"])


def write_worklist(path: Path, rows: list[dict[str, str]]) -> int:
    """Write the worklist CSV and return how many studies it lists."""
    ordered = order_worklist(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(WORKLIST_COLUMNS)
        for rank, row in enumerate(ordered, start=1):
            priority = "unscored: read first" if _abnormality(row) is None else row["label"]
            writer.writerow([rank, row["study"], priority, row["abnormality"], row["label"], row["body_part"],
                             row["body_part_confidence"], row["n_images"], row["warnings"]])
    return len(ordered)
