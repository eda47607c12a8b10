"""score.py --heatmaps: overlay PNGs, the peaks file, and the pointing game against the findings CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from mura.findings import FindingBox, peak_hits, read_findings_csv
from score import main
from training.synthetic import generate_dataset


@pytest.mark.parametrize(("peak", "hit"), [
    ((50, 50), True), ((44, 50), True), ((43, 50), False),  # box 50..60 x 50..60, margin 5 % of 120 = 6 px
    ((65, 55), True), ((66, 55), False), ((55, 44), True), ((55, 43), False),
])
def test_peak_hits_a_box_enlarged_by_five_percent_of_the_side(peak: tuple, hit: bool) -> None:
    box = FindingBox("a.png", "lesion", 50, 50, 60, 60)
    assert peak_hits(peak, (120, 120), [box]) is hit


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, tiny_repository: Path) -> dict:
    """A small synthetic test split scored with heatmaps, the findings CSV found beside the input."""
    folder = tmp_path_factory.mktemp("heatmaps")
    generate_dataset(folder / "SYN", 10, seed=5, split="test")
    out = folder / "out" / "predictions.csv"
    code = main([str(folder / "SYN" / "test_image_paths.csv"), "--out", str(out), "--models", str(tiny_repository),
                 "--report", str(folder / "report"), "--heatmaps", str(folder / "heat"), "--no-progress",
                 "--bootstrap-replicates", "20"])
    assert code == 0
    return {"folder": folder, "out": out}


def test_every_view_gets_an_overlay_at_its_size_and_a_peak_row(scored: dict) -> None:
    folder = scored["folder"]
    images = (folder / "SYN" / "test_image_paths.csv").read_text().split()
    with open(scored["out"].with_name("predictions_peaks.csv"), newline="") as handle:
        peaks = list(csv.DictReader(handle))
    assert len(peaks) == len(images)
    for line, row in zip(sorted(images), sorted(peaks, key=lambda row: (row["study"], row["image"])), strict=True):
        study, image = line.rsplit("/", 1)
        assert row["image"] == image and row["study"].rstrip("/") == study
        with Image.open(folder / line) as view:
            assert (int(row["width"]), int(row["height"])) == view.size
            assert 0 <= int(row["peak_x"]) < view.width and 0 <= int(row["peak_y"]) < view.height
    overlays = sorted((folder / "heat").rglob("*_heatmap.png"))
    assert len(overlays) == len(images)
    with Image.open(overlays[0]) as overlay:
        assert overlay.format == "PNG" and max(overlay.size) >= 300


def test_pointing_game_counts_match_the_peaks_and_boxes(scored: dict) -> None:
    folder = scored["folder"]
    boxes: dict[str, list[FindingBox]] = {}
    for box in read_findings_csv(folder / "SYN" / "test_findings.csv"):
        boxes.setdefault(Path(box.image).parent.as_posix() + "/" + Path(box.image).name, []).append(box)
    with open(scored["out"].with_name("predictions_peaks.csv"), newline="") as handle:
        peaks = list(csv.DictReader(handle))
    hits = views = 0
    for row in peaks:
        key = row["study"].rstrip("/") + "/" + row["image"]
        if key in boxes:
            views += 1
            size = (int(row["width"]), int(row["height"]))
            x, y = int(row["peak_x"]), int(row["peak_y"])
            hits += any(b.x0 - 0.05 * size[0] <= x < b.x1 + 0.05 * size[0] and
                        b.y0 - 0.05 * size[1] <= y < b.y1 + 0.05 * size[1] for b in boxes[key])
    result = json.loads((folder / "report" / "pointing_game.json").read_text())
    overall = result["per_body_part"]["overall"]
    assert views > 0 and (overall["hits"], overall["views"]) == (hits, views)
    assert sum(counts["views"] for part, counts in result["per_body_part"].items() if part != "overall") == views
    assert "## Pointing game" in (folder / "report" / "report.md").read_text()
