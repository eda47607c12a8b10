"""Deterministic synthetic radiographs of the seven MURA body parts, written in the MURA layout.

These are phantoms for demos and tests, not MURA: see docs/SYNTHETIC.md.
Run `python -m training.synthetic OUT --studies N --seed S [--valid-studies M]`.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from classifiers.body_parts import BODY_PARTS
from mura.findings import FindingBox, write_findings_csv
from training.findings import finding_box
from training.phantoms import LAYOUTS, Part, Phantom, ViewGeometry, add_findings

ABNORMAL_FRACTION = 0.4
SIXTEEN_BIT_FRACTION = 0.15
VIEW_COUNT_PROBABILITIES = {1: 0.15, 2: 0.35, 3: 0.35, 4: 0.15}
# Patient numbers per split do not overlap, so a patient-level split stays clean.
SPLIT_PATIENT_OFFSETS = {"train": 0, "valid": 70000, "test": 85000}
MAX_STUDIES_PER_SPLIT = 14999
LONG_SIDE_RANGE = (300, 512)
PNG_COMPRESS_LEVEL = 6  # noisy images barely compress further; level 6 takes twice the time
_GLYPHS = {"L": ["1....", "1....", "1....", "1....", "1....", "1....", "11111"],
           "R": ["1111.", "1...1", "1...1", "1111.", "1.1..", "1..1.", "1...1"]}


def _radius_profile(part: Part, along: np.ndarray, scale: float) -> np.ndarray:
    """Return the pixel radius at fractions `along` of the capsule, flares included."""
    radius = (part.start_radius + (part.end_radius - part.start_radius) * along) * scale
    if part.start_flare:
        radius *= 1.0 + part.start_flare * np.exp(-((along * (1 / 0.12)) ** 2))
    if part.end_flare:
        radius *= 1.0 + part.end_flare * np.exp(-(((1 - along) * (1 / 0.12)) ** 2))
    return radius


def _render_part(attenuation: np.ndarray, part: Part, geometry: ViewGeometry) -> None:
    """Add one capsule's projected attenuation to `attenuation` (height, width) in place."""
    start, end = geometry.apply(part.start), geometry.apply(part.end)
    reach = max(part.start_radius, part.end_radius) * geometry.scale * (1 + max(part.start_flare, part.end_flare)) + 2
    height, width = attenuation.shape
    x0, x1 = int(max(0, min(start[0], end[0]) - reach)), int(min(width, max(start[0], end[0]) + reach + 1))
    y0, y1 = int(max(0, min(start[1], end[1]) - reach)), int(min(height, max(start[1], end[1]) + reach + 1))
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    # Plain floats keep the arithmetic in float32 (NumPy 2 promotes float32 arrays by float64 scalars).
    start_x, start_y = float(start[0]), float(start[1])
    vector_x, vector_y = float(end[0]) - start_x, float(end[1]) - start_y
    length_squared = vector_x**2 + vector_y**2
    xs -= start_x
    ys -= start_y
    if length_squared > 1e-9:
        along = np.clip((xs * vector_x + ys * vector_y) * (1 / length_squared), 0.0, 1.0)
    else:
        along = np.zeros_like(xs)
    distance = np.hypot(xs - along * vector_x, ys - along * vector_y)
    radius = _radius_profile(part, along, geometry.scale)
    ratio_squared = (distance / radius) ** 2
    outer = np.sqrt(np.clip(1.0 - ratio_squared, 0.0, None))
    if part.kind == "bone":
        value = 1.25 * (outer - 0.72 * np.sqrt(np.clip(0.62**2 - ratio_squared, 0.0, None)))
    elif part.kind == "tissue":
        value = outer
    elif part.kind == "metal":
        value = np.clip(radius - distance + 0.5, 0.0, 1.0)
    else:  # lesion: thin bright shell around a lucent centre that cancels the bone beneath
        value = 0.5 * (outer - np.sqrt(np.clip(0.85**2 - ratio_squared, 0.0, None)))
        value -= np.sqrt(np.clip(0.8**2 - ratio_squared, 0.0, None)) / 0.8
    attenuation[y0:y1, x0:x1] += part.density * value


def _bounding_box(parts: Sequence[Part]) -> tuple[np.ndarray, np.ndarray]:
    """Return the canonical (min xy, max xy) corners of all non-tissue parts."""
    corners = []
    for part in parts:
        if part.kind != "tissue":
            radius = max(part.start_radius, part.end_radius)
            for point in (part.start, part.end):
                corners += [(point[0] - radius, point[1] - radius), (point[0] + radius, point[1] + radius)]
    array = np.array(corners)
    return array.min(axis=0), array.max(axis=0)


def _choose_geometry(phantom: Phantom, size: tuple[int, int], compress: float, mirrored: bool,
                     rng: np.random.Generator) -> ViewGeometry:
    """Choose rotation, scale and placement so that every finding stays well inside the image."""
    height, width = size
    low, high = _bounding_box(phantom.parts)
    corners = np.array([[low[0], low[1]], [low[0], high[1]], [high[0], low[1]], [high[0], high[1]]])
    for attempt in range(30):
        angle = math.radians(rng.uniform(-30, 30)) if attempt < 29 else 0.0
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        linear = rotation @ np.diag([compress * (-1 if mirrored else 1), 1.0])
        mapped = corners @ linear.T
        extent = mapped.max(axis=0) - mapped.min(axis=0)
        scale = float(min(width / extent[0], height / extent[1]) * rng.uniform(0.82, 1.08))
        centre = (mapped.max(axis=0) + mapped.min(axis=0)) / 2 * scale
        jitter = rng.uniform(-0.04, 0.04, 2) * (width, height)
        geometry = ViewGeometry(linear * scale, np.array([width / 2, height / 2]) - centre + jitter, scale)
        margin = 0.1 * min(width, height)
        points = [geometry.apply(point) for point in phantom.finding_points]
        if all(margin <= x <= width - margin and margin <= y <= height - margin for x, y in points):
            return geometry
    return geometry


def _draw_marker(image: np.ndarray, letter: str, rng: np.random.Generator) -> None:
    """Stamp a bright laterality letter ("L" or "R") near a random corner, in place."""
    height, width = image.shape
    cell = max(2, int(max(height, width) * rng.uniform(0.007, 0.01)))
    glyph = np.kron(np.array([[c == "1" for c in row] for row in _GLYPHS[letter]], dtype=np.float32),
                    np.ones((cell, cell), dtype=np.float32))
    pad = int(0.04 * min(height, width))
    top = pad if rng.random() < 0.5 else height - pad - glyph.shape[0]
    left = pad if rng.random() < 0.5 else width - pad - glyph.shape[1]
    region = image[top:top + glyph.shape[0], left:left + glyph.shape[1]]
    np.maximum(region, glyph * rng.uniform(0.85, 1.0), out=region)


def render_view(phantom: Phantom, size: tuple[int, int], compress: float, laterality: str,
                rng: np.random.Generator) -> np.ndarray:
    """Render one view; returns (height, width) float32 brightness in [0, 1], bone bright."""
    return render_view_and_geometry(phantom, size, compress, laterality, rng)[0]


def render_view_and_geometry(phantom: Phantom, size: tuple[int, int], compress: float, laterality: str,
                             rng: np.random.Generator) -> tuple[np.ndarray, ViewGeometry]:
    """Render one view as render_view does; also return its canonical-to-pixel geometry."""
    height, width = size
    geometry = _choose_geometry(phantom, size, compress, laterality == "L", rng)
    attenuation = np.zeros((height, width), dtype=np.float32)
    for part in phantom.parts:
        _render_part(attenuation, part, geometry)
    attenuation *= float(rng.uniform(0.85, 1.15))
    brightness = 1.0 - np.exp(-np.clip(attenuation, 0.0, None))
    background = float(rng.uniform(0.02, 0.08))
    ramp = np.linspace(-1, 1, height, dtype=np.float32)[:, None] * float(rng.uniform(-0.06, 0.06))
    image = background + (0.92 - background) * brightness ** float(rng.uniform(0.8, 1.25)) * (1 + ramp)
    if rng.random() < 0.25:  # collimation: a lighter unexposed border outside the field
        left, top, right, bottom = (rng.uniform(0.0, 0.07, 4) * (width, height, width, height)).astype(int)
        border = rng.uniform(0.2, 0.4)
        image[:top, :] = border
        image[height - bottom:, :] = border
        image[:, :left] = border
        image[:, width - right:] = border
    image += rng.standard_normal(image.shape, dtype=np.float32) * float(rng.uniform(0.006, 0.02))
    _draw_marker(image, laterality, rng)
    return np.clip(image, 0.0, 1.0), geometry


def save_png(image: np.ndarray, path: Path, sixteen_bit: bool) -> None:
    """Save brightness in [0, 1] as an 8-bit (L) PNG or a 16-bit (I;16) PNG stretched to 0..65535."""
    if sixteen_bit:
        low, high = float(image.min()), float(image.max())
        pixels = np.round((image - low) / max(high - low, 1e-6) * 65535).astype(np.uint16)
    else:
        pixels = np.round(image * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def _study_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Return the study's own generator, derived from (seed, split, index) only."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def _write_study(folder: Path, body_part: str, rng: np.random.Generator,
                 abnormal: bool) -> list[tuple[Path, list[tuple[str, tuple[int, int, int, int]]]]]:
    """Draw one study's phantom and write its 1-4 views; returns each image path with its findings' boxes."""
    layout = LAYOUTS[body_part](rng)
    phantom = add_findings(layout, rng, count=int(rng.choice([1, 2], p=[0.75, 0.25]))) if abnormal \
        else Phantom(tuple(layout))
    laterality = "L" if rng.random() < 0.5 else "R"
    num_views = int(rng.choice(list(VIEW_COUNT_PROBABILITIES), p=list(VIEW_COUNT_PROBABILITIES.values())))
    folder.mkdir(parents=True)
    paths = []
    for view in range(num_views):
        long_side = int(rng.integers(LONG_SIDE_RANGE[0], LONG_SIDE_RANGE[1] + 1))
        short_side = int(long_side * rng.uniform(0.62, 1.0))
        portrait = rng.random() < (0.5 if body_part in ("XR_SHOULDER", "XR_ELBOW") else 0.85)
        size = (long_side, short_side) if portrait else (short_side, long_side)
        compress = (1.0, 0.6, 0.8)[view] * rng.uniform(0.93, 1.07) if view < 3 else rng.uniform(0.6, 1.0)
        image, geometry = render_view_and_geometry(phantom, size, compress, laterality, rng)
        path = folder / f"image{view + 1}.png"
        save_png(image, path, sixteen_bit=rng.random() < SIXTEEN_BIT_FRACTION)
        boxes = [(finding.kind, finding_box(finding, geometry, size)) for finding in phantom.findings]
        paths.append((path, [(kind, box) for kind, box in boxes if box is not None]))
    return paths


def _is_abnormal(seed: int, split: str, body_part: str, part_index: int) -> bool:
    """Stratified label of a part's `part_index`-th study: any five in a row hold exactly two abnormal ones."""
    key = [seed, zlib.crc32(split.encode()), zlib.crc32(body_part.encode())]
    phase = float(np.random.default_rng(np.random.SeedSequence(key)).random())
    return math.floor((part_index + 1) * ABNORMAL_FRACTION + phase) > math.floor(part_index * ABNORMAL_FRACTION + phase)


def generate_dataset(root: str | Path, num_studies: int, seed: int, split: str = "train",
                     body_parts: Sequence[str] = BODY_PARTS, overwrite: bool = False) -> list[Path]:
    """Write `num_studies` synthetic studies of ROOT/{split} in the MURA layout; returns the study folders.

    Args:
        root: the data-set folder (the "MURA-v1.1" of MURA); CSV paths start with its name.
        num_studies: studies to write, body parts taken round-robin by index.
        seed: same seed, same bytes; each study depends only on (seed, split, index).
        split: "train", "valid" or "test"; other splits of the same root are left alone.
        body_parts: the parts to draw, a subset of BODY_PARTS.
        overwrite: replace an existing ROOT/{split} instead of refusing.

    Raises:
        ValueError: a bad split, body part or study count.
        FileExistsError: ROOT/{split} exists and `overwrite` is False.
    """
    if split not in SPLIT_PATIENT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLIT_PATIENT_OFFSETS)}")
    unknown = [part for part in body_parts if part not in LAYOUTS]
    if unknown or not body_parts:
        raise ValueError(f"unknown body parts {unknown} (or none given); choose from {list(BODY_PARTS)}")
    if not 1 <= num_studies <= MAX_STUDIES_PER_SPLIT:
        raise ValueError(f"num_studies must be between 1 and {MAX_STUDIES_PER_SPLIT}, got {num_studies}")
    root = Path(root)
    split_folder = root / split
    if split_folder.exists():
        if not overwrite:
            raise FileExistsError(f"{split_folder} already exists; remove it or pass overwrite=True (--overwrite)")
        shutil.rmtree(split_folder)
    study_folders, image_lines, study_lines, finding_rows = [], [], [], []
    for index in range(num_studies):
        body_part = body_parts[index % len(body_parts)]
        rng = _study_rng(seed, split, index)
        abnormal = _is_abnormal(seed, split, body_part, index // len(body_parts))
        patient = f"patient{SPLIT_PATIENT_OFFSETS[split] + index + 1:05d}"
        folder = split_folder / body_part / patient / f"study1_{'positive' if abnormal else 'negative'}"
        for path, boxes in _write_study(folder, body_part, rng, abnormal):
            image_lines.append(path.relative_to(root.parent).as_posix())
            finding_rows += [FindingBox(image_lines[-1], kind, *box) for kind, box in boxes]
        study_lines.append(f"{folder.relative_to(root.parent).as_posix()}/,{int(abnormal)}")
        study_folders.append(folder)
    (root / f"{split}_image_paths.csv").write_text("\n".join(image_lines) + "\n")
    (root / f"{split}_labeled_studies.csv").write_text("\n".join(study_lines) + "\n")
    write_findings_csv(root / f"{split}_findings.csv", finding_rows)
    return study_folders


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a synthetic train split (and optionally a valid split) under OUT."""
    parser = argparse.ArgumentParser(prog="python -m training.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="data-set folder to create, e.g. data/SYNTH-v1")
    parser.add_argument("--studies", type=int, required=True, help="number of train studies")
    parser.add_argument("--seed", type=int, required=True, help="random seed (same seed, same files)")
    parser.add_argument("--valid-studies", type=int, default=0, help="number of valid studies (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing split folders")
    args = parser.parse_args(argv)
    try:
        for split, count in (("train", args.studies), ("valid", args.valid_studies)):
            if split == "train" or count > 0:
                began = time.perf_counter()
                folders = generate_dataset(args.out, count, args.seed, split, overwrite=args.overwrite)
                images = sum(len(list(folder.glob("*.png"))) for folder in folders)
                seconds = time.perf_counter() - began
                print(f"{split}: {len(folders)} studies, {images} images in {seconds:.1f} s "
                      f"({images / seconds:.1f} images/s) -> {args.out / split}")
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
