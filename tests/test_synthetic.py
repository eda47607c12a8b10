"""Tests of the synthetic radiograph generator (training.synthetic, training.phantoms)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifiers.body_parts import BODY_PARTS
from training.phantoms import LAYOUTS, Phantom, add_findings
from training.synthetic import _is_abnormal, generate_dataset, main, render_view, save_png

NUM_STUDIES = 7  # one study per body part
SEED = 11
STUDY_PATTERN = re.compile(r"^SYNTH/(train|valid)/(XR_[A-Z]+)/patient(\d{5})/study1_(positive|negative)/$")


def _write(parent: Path, seed: int = SEED, num_studies: int = NUM_STUDIES) -> Path:
    """Write train and valid splits under parent/SYNTH and return that root."""
    root = parent / "SYNTH"
    generate_dataset(root, num_studies, seed, split="train")
    generate_dataset(root, 3, seed, split="valid")
    return root


def _files(root: Path) -> dict[str, bytes]:
    """Return every file under root by relative path."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small two-split synthetic data set, shared by the module."""
    return _write(tmp_path_factory.mktemp("first"))


def test_same_seed_gives_identical_bytes(dataset: Path, tmp_path: Path) -> None:
    again = _files(_write(tmp_path))
    first = _files(dataset)
    assert len(first) > 2 * NUM_STUDIES
    assert first.keys() == again.keys()
    assert [name for name in first if first[name] != again[name]] == []


def test_different_seeds_give_different_images(dataset: Path, tmp_path: Path) -> None:
    other = _files(_write(tmp_path, seed=SEED + 1))
    first = _files(dataset)
    shared = [name for name in first.keys() & other.keys() if name.endswith("image1.png")]
    assert shared  # same patients, same body parts: image1 of a study may still exist in both
    assert all(first[name] != other[name] for name in shared)


def test_a_study_depends_only_on_seed_split_and_index(dataset: Path, tmp_path: Path) -> None:
    fewer = tmp_path / "SYNTH"
    generate_dataset(fewer, 3, SEED, split="train")
    shorter = _files(fewer)
    first = _files(dataset)
    images = [name for name in shorter if name.endswith(".png")]
    assert images and all(first[name] == shorter[name] for name in images)


def test_csvs_list_exactly_the_files_in_mura_form(dataset: Path) -> None:
    for split, num_studies in (("train", NUM_STUDIES), ("valid", 3)):
        image_lines = (dataset / f"{split}_image_paths.csv").read_text().splitlines()
        on_disk = sorted(path.relative_to(dataset.parent).as_posix() for path in (dataset / split).rglob("*.png"))
        assert sorted(image_lines) == on_disk
        assert all(re.fullmatch(r"SYNTH/" + split + r"/XR_[A-Z]+/patient\d{5}/study1_\w+/image[1-4]\.png", line)
                   for line in image_lines)
        study_lines = (dataset / f"{split}_labeled_studies.csv").read_text().splitlines()
        assert len(study_lines) == num_studies
        for line in study_lines:
            folder, label = line.rsplit(",", 1)
            match = STUDY_PATTERN.match(folder)
            assert match and match.group(1) == split
            assert label == ("1" if match.group(4) == "positive" else "0")
            views = sorted(path.name for path in (dataset.parent / folder).iterdir())
            assert 1 <= len(views) <= 4 and views == [f"image{index}.png" for index in range(1, len(views) + 1)]


def test_every_body_part_is_present_and_splits_use_different_patients(dataset: Path) -> None:
    parts = {path.name for path in (dataset / "train").iterdir()}
    assert parts == set(BODY_PARTS)
    train_patients = {path.name for path in (dataset / "train").glob("*/*")}
    valid_patients = {path.name for path in (dataset / "valid").glob("*/*")}
    assert len(train_patients) == NUM_STUDIES and not train_patients & valid_patients


def test_images_are_grayscale_in_size_range_with_some_sixteen_bit(dataset: Path) -> None:
    modes = []
    for path in dataset.rglob("*.png"):
        with Image.open(path) as image:
            modes.append(image.mode)
            assert image.mode in ("L", "I;16")
            assert 300 <= max(image.size) <= 512 and min(image.size) >= 0.6 * max(image.size)
            pixels = np.asarray(image)
            if image.mode == "I;16":
                assert pixels.dtype == np.uint16 and pixels.min() == 0 and pixels.max() == 65535
            # dark background: the corners are mostly darker than the brightest structures
            assert np.median(pixels) < 0.6 * pixels.max()
    assert "I;16" in modes and "L" in modes


def test_save_png_sixteen_bit_round_trips(tmp_path: Path) -> None:
    image = np.linspace(0.1, 0.7, 64 * 48, dtype=np.float32).reshape(64, 48)
    save_png(image, tmp_path / "deep.png", sixteen_bit=True)
    with Image.open(tmp_path / "deep.png") as loaded:
        pixels = np.asarray(loaded)
    assert loaded.mode == "I;16" and pixels[0, 0] == 0 and pixels[-1, -1] == 65535
    assert np.all(np.diff(pixels.ravel().astype(np.int64)) >= 0)


@pytest.mark.parametrize("body_part", BODY_PARTS)
def test_findings_change_the_image_visibly_at_128_pixels(body_part: str) -> None:
    for seed in range(3):
        layout = LAYOUTS[body_part](np.random.default_rng(seed))
        abnormal = add_findings(layout, np.random.default_rng(seed + 100))
        normal = Phantom(tuple(layout), abnormal.finding_points)  # same points, so the same geometry
        views = [render_view(phantom, (400, 300), 1.0, "R", np.random.default_rng(seed)) for phantom in
                 (normal, abnormal)]
        small = [np.asarray(Image.fromarray(view).resize((128, 128), Image.BILINEAR)) for view in views]
        difference = np.abs(small[1] - small[0])
        assert difference.max() > 0.2, (body_part, seed, difference.max())
        assert (difference > 0.1).sum() >= 30, (body_part, seed)


@pytest.mark.parametrize(("arguments", "error"), [
    ({"split": "holdout"}, ValueError),
    ({"body_parts": ("XR_KNEE",)}, ValueError),
    ({"num_studies": 0}, ValueError),
])
def test_rejects_bad_arguments(tmp_path: Path, arguments: dict, error: type[Exception]) -> None:
    options = {"root": tmp_path / "SYNTH", "num_studies": 1, "seed": 0} | arguments
    with pytest.raises(error, match="holdout|XR_KNEE|num_studies"):
        generate_dataset(**options)


def test_existing_split_is_refused_unless_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "SYNTH"
    generate_dataset(root, 2, 0, body_parts=("XR_HAND",))
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_dataset(root, 2, 0)
    folders = generate_dataset(root, 1, 0, body_parts=("XR_WRIST",), overwrite=True)
    assert [folder.parent.parent.name for folder in folders] == ["XR_WRIST"]
    assert not (root / "train" / "XR_HAND").exists()


def test_cli_writes_train_and_valid_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "SYNTH"
    assert main([str(out), "--studies", "2", "--seed", "3", "--valid-studies", "1"]) == 0
    assert len((out / "valid_labeled_studies.csv").read_text().splitlines()) == 1
    assert len((out / "train_labeled_studies.csv").read_text().splitlines()) == 2
    assert main([str(out), "--studies", "2", "--seed", "3"]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [0, 5, 123])
def test_labels_are_stratified_so_any_three_studies_of_a_part_hold_both(seed: int) -> None:
    for split in ("train", "valid"):
        for body_part in BODY_PARTS:
            labels = [_is_abnormal(seed, split, body_part, index) for index in range(40)]
            assert sum(labels) == 16
            assert all(sum(labels[start:start + 5]) == 2 for start in range(36))
            assert all(0 < sum(labels[start:start + 3]) < 3 for start in range(38))


def test_labels_in_folder_names_match_the_study_csv(dataset: Path) -> None:
    lines = (dataset / "train_labeled_studies.csv").read_text().splitlines()
    assert lines
    for line in lines:
        folder, label = line.rsplit(",", 1)
        assert folder.rstrip("/").endswith("_positive" if label == "1" else "_negative")
