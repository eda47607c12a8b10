"""Findings with known locations: boxes of the synthetic generator (training.findings) and the findings CSV."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifiers.body_parts import BODY_PARTS
from mura.findings import FINDINGS_CSV_HEADER, FindingBox, read_findings_csv, write_findings_csv
from training.findings import finding_box
from training.phantoms import FINDINGS, LAYOUTS, Part, Phantom, ViewGeometry, add_findings
from training.synthetic import _render_part, generate_dataset, render_view_and_geometry

# sha256 of the images of generate_dataset(root, 14, seed=7, split="test"), concatenated in CSV order, as the
# generator wrote them before it recorded findings: recording them must not change a single byte.
# (Computed with this project's NumPy 2 and Pillow's zlib; another zlib may compress differently.)
IMAGES_SHA256_SEED_7 = "fec2924a2234c01565a92597904af293acd530bcb6f3b4f472a188d0db542e33"
VIEW_SIZE = (400, 300)


def _attenuation(parts: tuple[Part, ...], geometry: ViewGeometry) -> np.ndarray:
    """Noise-free projected attenuation of `parts` in one view, (height, width) float32."""
    attenuation = np.zeros(VIEW_SIZE, dtype=np.float32)
    for part in parts:
        _render_part(attenuation, part, geometry)
    return attenuation


def _phantoms_with_every_kind(body_part: str) -> list[tuple[list[Part], Phantom]]:
    """(layout, abnormal phantom) pairs, seeds tried until each finding kind was drawn at least once."""
    pairs, kinds = [], set()
    for seed in range(60):
        layout = LAYOUTS[body_part](np.random.default_rng(seed))
        phantom = add_findings(layout, np.random.default_rng(seed + 1000), count=1)
        if phantom.findings and phantom.findings[0].kind not in kinds:
            kinds.add(phantom.findings[0].kind)
            pairs.append((layout, phantom))
        if kinds == set(FINDINGS):
            break
    assert kinds == set(FINDINGS), (body_part, kinds)
    return pairs


def _inside(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of mask that lie outside box, as a boolean array."""
    x0, y0, x1, y1 = box
    outside = mask.copy()
    outside[y0:y1, x0:x1] = False
    return outside


def test_recording_findings_leaves_the_images_byte_identical(tmp_path: Path) -> None:
    root = tmp_path / "S"
    generate_dataset(root, 14, seed=7, split="test")
    digest = hashlib.sha256()
    for line in (root / "test_image_paths.csv").read_text().split():
        digest.update((tmp_path / line).read_bytes())
    assert digest.hexdigest() == IMAGES_SHA256_SEED_7


@pytest.mark.parametrize("body_part", BODY_PARTS)
def test_each_box_covers_the_pixels_its_finding_changes(body_part: str) -> None:
    for index, (layout, phantom) in enumerate(_phantoms_with_every_kind(body_part)):
        finding = phantom.findings[0]
        _, geometry = render_view_and_geometry(phantom, VIEW_SIZE, 0.8, "LR"[index % 2], np.random.default_rng(index))
        box = finding_box(finding, geometry, VIEW_SIZE)
        assert box is not None
        x0, y0, x1, y1 = box
        assert (x1 - x0) * (y1 - y0) < 0.4 * VIEW_SIZE[0] * VIEW_SIZE[1], (body_part, finding.kind, box)
        with_finding = _attenuation(phantom.parts, geometry)
        if finding.kind == "fracture":
            # The displaced shaft moves along its whole length; the box marks the break, so only the old and the
            # moved shaft may differ outside it.
            without = _attenuation(tuple(layout), geometry)
            shafts = [part for part in phantom.parts if part not in layout and part not in finding.outline]
            shafts += [part for part in layout if part not in phantom.parts]
            allowed = _attenuation(tuple(shafts), geometry) != 0
        else:
            without = _attenuation(tuple(part for part in phantom.parts if part not in finding.outline), geometry)
            allowed = np.zeros(VIEW_SIZE, dtype=bool)
        changed = np.abs(with_finding - without) > 1e-5
        assert changed[y0:y1, x0:x1].sum() >= 50, (body_part, finding.kind)
        assert not (_inside(changed, box) & ~allowed).any(), (body_part, finding.kind, box)
        if finding.kind != "fracture":  # tight: the change reaches within 3 px of every edge the image does not clip
            rows, columns = np.nonzero(changed)
            assert columns.min() - x0 <= 3 or x0 == 0
            assert rows.min() - y0 <= 3 or y0 == 0
            assert x1 - 1 - columns.max() <= 3 or x1 == VIEW_SIZE[1]
            assert y1 - 1 - rows.max() <= 3 or y1 == VIEW_SIZE[0]


def test_findings_csv_names_every_abnormal_image_and_only_those(tmp_path: Path) -> None:
    root = tmp_path / "S"
    generate_dataset(root, 14, seed=7, split="test")
    rows = (root / "test_findings.csv").read_text().splitlines()
    assert rows[0] == ",".join(FINDINGS_CSV_HEADER)
    boxes = read_findings_csv(root / "test_findings.csv")
    images = (root / "test_image_paths.csv").read_text().split()
    assert {box.image for box in boxes} == {image for image in images if "_positive/" in image}
    assert {box.finding for box in boxes} <= set(FINDINGS)
    for box in boxes:
        with Image.open(tmp_path / box.image) as image:
            width, height = image.size
        assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height


def test_findings_csv_round_trips_and_names_a_bad_line(tmp_path: Path) -> None:
    boxes = [FindingBox("S/a.png", "lesion", 1, 2, 30, 40), FindingBox("S/b.png", "fracture", 0, 0, 5, 6)]
    write_findings_csv(tmp_path / "f.csv", boxes)
    assert read_findings_csv(tmp_path / "f.csv") == boxes
    (tmp_path / "bad.csv").write_text("S/a.png,lesion,1,2,3\n")
    with pytest.raises(ValueError, match="line 1"):
        read_findings_csv(tmp_path / "bad.csv")
