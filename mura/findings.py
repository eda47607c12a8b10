"""Findings with known locations: the findings CSV and the pointing game scored against it."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

FINDINGS_CSV_HEADER = ("image", "finding", "x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class FindingBox:
    """One finding in one image: pixels x0 <= x < x1, y0 <= y < y1 (x to the right, y down)."""

    image: str
    finding: str
    x0: int
    y0: int
    x1: int
    y1: int


def write_findings_csv(path: Path, boxes: Iterable[FindingBox]) -> None:
    """Write `<split>_findings.csv`: a header, then one row per finding per image."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(FINDINGS_CSV_HEADER)
        for box in boxes:
            writer.writerow((box.image, box.finding, box.x0, box.y0, box.x1, box.y1))


def read_findings_csv(path: str | Path) -> list[FindingBox]:
    """Read a findings CSV (header optional); raises ValueError naming the line that is not a finding row."""
    boxes = []
    with open(path, newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if not row or (line_number == 1 and tuple(row) == FINDINGS_CSV_HEADER):
                continue
            try:
                image, finding, *corners = row
                x0, y0, x1, y1 = (int(value) for value in corners)
            except ValueError:
                raise ValueError(f"{path}, line {line_number}: expected image,finding,x0,y0,x1,y1 with integer"
                                 f" pixel corners; got {row[:6]}") from None
            boxes.append(FindingBox(image, finding, x0, y0, x1, y1))
    return boxes


def boxes_by_image(boxes: Sequence[FindingBox]) -> dict[str, list[FindingBox]]:
    """Group finding boxes by image path."""
    grouped: dict[str, list[FindingBox]] = {}
    for box in boxes:
        grouped.setdefault(box.image, []).append(box)
    return grouped


POINTING_MARGIN = 0.05  # a box is enlarged by this fraction of the image side on each edge


def peak_hits(peak: tuple[int, int], size: tuple[int, int], boxes: Sequence[FindingBox],
              margin: float = POINTING_MARGIN) -> bool:
    """Pointing game for one view: is the peak (x, y) inside a box enlarged by `margin` of the (width, height)?"""
    x, y = peak
    width, height = size
    return any(box.x0 - margin * width <= x < box.x1 + margin * width
               and box.y0 - margin * height <= y < box.y1 + margin * height for box in boxes)


def pointing_game(views: Sequence[tuple[str, tuple[int, int], tuple[int, int], Sequence[FindingBox]]],
                  margin: float = POINTING_MARGIN) -> dict[str, dict[str, float | int]]:
    """Hit rate per body part and overall of views (body part, peak, (width, height), boxes with a finding)."""
    counts: dict[str, list[int]] = {}
    for body_part, peak, size, boxes in views:
        hit = int(peak_hits(peak, size, boxes, margin))
        for key in (body_part, "overall"):
            counts.setdefault(key, [0, 0])
            counts[key][0] += hit
            counts[key][1] += 1
    return {key: {"hits": hits, "views": total, "hit_rate": hits / total}
            for key, (hits, total) in sorted(counts.items(), key=lambda item: (item[0] == "overall", item[0]))}
