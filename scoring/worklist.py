"""The triage worklist: scored studies, most likely abnormal first, for reading-list prioritisation."""

from __future__ import annotations

import csv
from pathlib import Path

WORKLIST_COLUMNS = ("rank", "study", "priority", "abnormality", "label", "body_part",
                    "body_part_confidence", "n_images", "warnings")


def _abnormality(row: dict[str, str]) -> float:
    try:
        return float(row["abnormality"])
    except ValueError:
        return float("nan")


def order_worklist(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Return rows in triage order.

    Studies that could not be scored (no readable image) come first: nothing says they are normal,
    so a person must look at them. Then scored studies by abnormality, highest first; ties by study id.
    """
    unscored = sorted((row for row in rows if row["label"] not in ("normal", "abnormal")),
                      key=lambda row: row["study"])
    scored = sorted((row for row in rows if row["label"] in ("normal", "abnormal")),
                    key=lambda row: (-_abnormality(row), row["study"]))
    return unscored + scored


def write_worklist(path: Path, rows: list[dict[str, str]]) -> int:
    """Write the worklist CSV and return how many studies it lists."""
    ordered = order_worklist(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(WORKLIST_COLUMNS)
        for rank, row in enumerate(ordered, start=1):
            priority = "unscored: read first" if row["label"] not in ("normal", "abnormal") else row["label"]
            writer.writerow([rank, row["study"], priority, row["abnormality"], row["label"], row["body_part"],
                             row["body_part_confidence"], row["n_images"], row["warnings"]])
    return len(ordered)
