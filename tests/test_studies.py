"""mura.studies on small MURA-layout trees, plain leaf-folder trees and MURA-style CSVs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mura.studies import Study, StudySourceError, find_studies


def _write_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (40, 40), color=128).save(path)
    return path


def _write_mura_tree(root: Path) -> None:
    """Write valid/XR_WRIST (2 studies), valid/XR_ELBOW (1 study) and a stray non-image file."""
    _write_png(root / "XR_WRIST/patient00001/study1_positive/image1.png")
    _write_png(root / "XR_WRIST/patient00001/study1_positive/image2.png")
    _write_png(root / "XR_WRIST/patient00002/study1_negative/image1.png")
    _write_png(root / "XR_ELBOW/patient00003/study2_negative/image1.png")
    (root / "XR_ELBOW/patient00003/study2_negative/notes.txt").write_text("not an image")


def test_mura_tree_gives_body_part_label_and_stable_ids(tmp_path: Path) -> None:
    _write_mura_tree(tmp_path / "valid")
    studies = find_studies(tmp_path / "valid")
    assert [study.study_id for study in studies] == [
        "XR_ELBOW/patient00003/study2_negative",
        "XR_WRIST/patient00001/study1_positive",
        "XR_WRIST/patient00002/study1_negative",
    ]
    assert [study.body_part for study in studies] == ["XR_ELBOW", "XR_WRIST", "XR_WRIST"]
    assert [study.label for study in studies] == [0, 1, 0]
    assert [len(study.image_paths) for study in studies] == [1, 2, 1]  # notes.txt ignored
    assert studies[1].image_paths[0].name == "image1.png"
    assert find_studies(str(tmp_path / "valid")) == studies  # same ids on a second call


def test_leaf_folder_tree_without_mura_names_has_unknown_part_and_label(tmp_path: Path) -> None:
    _write_png(tmp_path / "ward3/alice/2026-01-02/view_a.jpg")
    _write_png(tmp_path / "ward3/bob/scan/front.png")
    studies = find_studies(tmp_path)
    assert studies == [
        Study("ward3/alice/2026-01-02", (tmp_path / "ward3/alice/2026-01-02/view_a.jpg",), None, None),
        Study("ward3/bob/scan", (tmp_path / "ward3/bob/scan/front.png",), None, None),
    ]


def test_folder_holding_images_directly_is_one_study_named_after_it(tmp_path: Path) -> None:
    _write_png(tmp_path / "study7_positive/image1.png")
    studies = find_studies(tmp_path / "study7_positive")
    assert [(study.study_id, study.label) for study in studies] == [("study7_positive", 1)]


def _write_mura_csvs(data_root: Path, with_labels: bool) -> Path:
    """Write MURA-v1.1/valid_image_paths.csv (paths written as MURA writes them) under data_root."""
    _write_mura_tree(data_root / "MURA-v1.1/valid")
    # A study whose folder name carries no label: only the labeled-studies CSV can give it one.
    _write_png(data_root / "MURA-v1.1/valid/XR_HAND/patient00009/study1/image1.png")
    lines = [
        "MURA-v1.1/valid/XR_WRIST/patient00001/study1_positive/image1.png",
        "MURA-v1.1/valid/XR_WRIST/patient00001/study1_positive/image2.png",
        "MURA-v1.1/valid/XR_WRIST/patient00002/study1_negative/image1.png",
        "MURA-v1.1/valid/XR_HAND/patient00009/study1/image1.png",
    ]
    csv_path = data_root / "MURA-v1.1/valid_image_paths.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    if with_labels:
        (data_root / "MURA-v1.1/valid_labeled_studies.csv").write_text(
            "MURA-v1.1/valid/XR_WRIST/patient00001/study1_positive/,1\n"
            "MURA-v1.1/valid/XR_WRIST/patient00002/study1_negative/,0\n"
            "MURA-v1.1/valid/XR_HAND/patient00009/study1/,1\n"
        )
    return csv_path


@pytest.mark.parametrize("with_labels", [True, False])
def test_mura_image_paths_csv_resolves_against_the_folder_above_the_data_set(
    tmp_path: Path, with_labels: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path.parent)  # the working directory must not be what makes it resolve
    csv_path = _write_mura_csvs(tmp_path / "data", with_labels)
    studies = find_studies(csv_path)
    assert [study.study_id for study in studies] == [
        "MURA-v1.1/valid/XR_HAND/patient00009/study1",
        "MURA-v1.1/valid/XR_WRIST/patient00001/study1_positive",
        "MURA-v1.1/valid/XR_WRIST/patient00002/study1_negative",
    ]
    assert all(path.is_file() for study in studies for path in study.image_paths)
    assert [len(study.image_paths) for study in studies] == [1, 2, 1]
    assert [study.body_part for study in studies] == ["XR_HAND", "XR_WRIST", "XR_WRIST"]
    expected_hand_label = 1 if with_labels else None
    assert [study.label for study in studies] == [expected_hand_label, 1, 0]


def test_csv_with_header_and_absolute_paths(tmp_path: Path) -> None:
    image = _write_png(tmp_path / "images/XR_FINGER/p1/study1_negative/image1.png")
    csv_path = tmp_path / "elsewhere/list.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(f"path\n{image}\n")
    studies = find_studies(csv_path)
    assert len(studies) == 1
    assert studies[0].image_paths == (image,)
    assert (studies[0].body_part, studies[0].label) == ("XR_FINGER", 0)


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root, "no images found"),
        (lambda root: _text_file(root / "input.txt", "x"), "neither a folder nor a .csv"),
        (lambda root: _text_file(root / "list.csv", "nowhere/study1/image1.png\n"), "cannot find"),
        (lambda root: _text_file(root / "list.csv", ""), "no images found"),
    ],
)
def test_unusable_input_raises_study_source_error(tmp_path: Path, make_input, message: str) -> None:
    (tmp_path / "empty_subfolder").mkdir()
    with pytest.raises(StudySourceError, match=message):
        find_studies(make_input(tmp_path))


def _text_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
