"""score.py over DICOM trees: a study is a StudyInstanceUID, refused files reported, --sr writes one SR per study."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import score
from mura.studies import find_studies
from tests.support.dicom_factory import make_dataset, png_bytes, synthetic_radiograph, to_bytes

PIXELS = np.round(synthetic_radiograph("XR_HAND", seed=21) * 255).astype(np.uint8)
SPREAD, FIRST_OF_TWO, SECOND_OF_TWO, MURA = (generate_uid() for _ in range(4))


def write_dicom(path: Path, study_uid: str, **options) -> pydicom.Dataset:
    """Write a synthetic DICOM view of `study_uid` at `path`."""
    dataset = make_dataset(options.pop("pixels", PIXELS), study_uid=study_uid, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_bytes(dataset))
    return dataset


@pytest.fixture(scope="module")
def dicom_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One study spread over two folders, a folder of two studies, a MURA study, a PNG study, bad files."""
    root = tmp_path_factory.mktemp("dicom_tree")
    write_dicom(root / "day1" / "a.dcm", SPREAD)
    write_dicom(root / "day2" / "b" / "c.DCM", SPREAD, pixels=np.stack([PIXELS, PIXELS]))
    write_dicom(root / "export" / "IM000001", SPREAD)  # PACS exports: no suffix, or a UID as the name
    write_dicom(root / "export" / "1.2.840.99.7", SPREAD)
    (root / "export" / "README").write_text("not an image")
    write_dicom(root / "shared" / "one.dcm", FIRST_OF_TWO)
    write_dicom(root / "shared" / "two.dcm", SECOND_OF_TWO)
    mura = root / "XR_WRIST" / "patient00001" / "study1_positive"
    write_dicom(mura / "image1.dcm", MURA)
    write_dicom(mura / "image2.dcm", MURA)
    (mura / "image3.dcm").write_bytes(to_bytes(make_dataset(PIXELS, study_uid=MURA, modality="CT")))
    truncated = to_bytes(make_dataset(PIXELS, study_uid=MURA))
    (mura / "image4.dcm").write_bytes(truncated[: len(truncated) // 2])
    (root / "pngs" / "study_negative").mkdir(parents=True)
    (root / "pngs" / "study_negative" / "image1.png").write_bytes(png_bytes(PIXELS))
    return root


def test_dicom_studies_are_grouped_by_study_instance_uid(dicom_tree: Path) -> None:
    studies = {study.study_id: study for study in find_studies(dicom_tree)}
    assert set(studies) == {SPREAD, FIRST_OF_TWO, SECOND_OF_TWO, MURA, "pngs/study_negative"}
    assert sorted(path.name for path in studies[SPREAD].image_paths) == ["1.2.840.99.7", "IM000001", "a.dcm",
                                                                          "c.DCM"]
    mura = studies[MURA]
    assert (mura.body_part, mura.label) == ("XR_WRIST", 1)
    assert [path.name for path in mura.image_paths] == ["image1.dcm", "image2.dcm", "image3.dcm", "image4.dcm"]


def test_score_py_scores_dicom_and_writes_one_sr_per_study(dicom_tree: Path, tiny_repository: Path,
                                                            tmp_path: Path) -> None:
    out, sr_folder = tmp_path / "predictions.csv", tmp_path / "sr"
    heatmaps = tmp_path / "heatmaps"
    exit_code = score.main([str(dicom_tree), "--out", str(out), "--models", str(tiny_repository), "--sr",
                            str(sr_folder), "--heatmaps", str(heatmaps), "--no-progress", "--workers", "2"])
    assert exit_code == 0
    with open(out, newline="", encoding="utf-8") as handle:
        rows = {row["study"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {SPREAD, FIRST_OF_TWO, SECOND_OF_TWO, MURA, "pngs/study_negative"}
    assert (rows[SPREAD]["n_images"], rows[MURA]["n_images"], rows[MURA]["n_unreadable"]) == ("5", "2", "2")
    assert (rows[MURA]["true_body_part"], rows[MURA]["true_label"]) == ("XR_WRIST", "1")
    with open(tmp_path / "predictions_errors.csv", newline="", encoding="utf-8") as handle:
        errors = sorted((Path(row["image"]).name, row["error"]) for row in csv.DictReader(handle))
    assert errors == [("image3.dcm", "UnsupportedModality"), ("image4.dcm", "MalformedDicom")]
    written = sorted(path.name for path in sr_folder.iterdir() if "_heatmap" not in path.name)
    assert written == sorted(f"{uid}.dcm" for uid in (SPREAD, FIRST_OF_TWO, SECOND_OF_TWO, MURA))
    # With --heatmaps, each view's overlay also goes beside the SR as a DICOM Secondary Capture.
    for uid in (SPREAD, FIRST_OF_TWO, SECOND_OF_TWO, MURA):
        captures = sorted(sr_folder.glob(f"{uid}_heatmap*.dcm"))
        assert len(captures) == int(rows[uid]["n_images"]), uid
    capture = pydicom.dcmread(sr_folder / f"{SPREAD}_heatmap1.dcm")
    assert (capture.StudyInstanceUID, capture.SOPClassUID, capture.PhotometricInterpretation) == (
        SPREAD, "1.2.840.10008.5.1.4.1.1.7", "RGB")
    report = pydicom.dcmread(io.BytesIO((sr_folder / f"{SPREAD}.dcm").read_bytes()))
    references = [item.ReferencedSOPSequence[0] for item in report.ContentSequence if item.ValueType == "IMAGE"]
    assert report.StudyInstanceUID == SPREAD and len(references) == 4
    assert [list(reference.get("ReferencedFrameNumber") or []) for reference in references].count([1, 2]) == 1
    probability = next(item for item in report.ContentSequence if item.ValueType == "NUM")
    assert float(probability.MeasuredValueSequence[0].NumericValue) == pytest.approx(
        float(rows[SPREAD]["abnormality"]), abs=1e-6)
    # One overlay per view: the two frames of c.DCM get one each, named by frame.
    overlays = sorted(path.name for path in (heatmaps / SPREAD).iterdir())
    assert overlays == ["1.2.840.99_heatmap.png", "IM000001_heatmap.png", "a_heatmap.png", "c_frame1_heatmap.png",
                        "c_frame2_heatmap.png"]
