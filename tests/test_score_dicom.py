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
    written = sorted(path.name for path in sr_folder.iterdir() if "_" not in path.name.split(".")[-2])
    assert written == sorted(f"{uid}.dcm" for uid in (SPREAD, FIRST_OF_TWO, SECOND_OF_TWO, MURA))
    # With --heatmaps, each view's overlay also goes beside the SR as a DICOM Secondary Capture, and its peak as a
    # presentation state.
    for uid in (SPREAD, FIRST_OF_TWO, SECOND_OF_TWO, MURA):
        assert len(list(sr_folder.glob(f"{uid}_heatmap*.dcm"))) == int(rows[uid]["n_images"]), uid
        assert len(list(sr_folder.glob(f"{uid}_gsps*.dcm"))) == int(rows[uid]["n_images"]), uid
    state = pydicom.dcmread(sr_folder / f"{SPREAD}_gsps1.dcm")
    assert (state.StudyInstanceUID, state.Modality) == (SPREAD, "PR")
    capture = pydicom.dcmread(sr_folder / f"{SPREAD}_heatmap1.dcm")
    assert (capture.StudyInstanceUID, capture.SOPClassUID, capture.PhotometricInterpretation) == (
        SPREAD, "1.2.840.10008.5.1.4.1.1.7", "RGB")
    report = pydicom.dcmread(io.BytesIO((sr_folder / f"{SPREAD}.dcm").read_bytes()))
    [measurements] = [item for item in report.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"]
    study_group = measurements.ContentSequence[0].ContentSequence
    references = [item.ReferencedSOPSequence[0] for item in study_group if item.ValueType == "IMAGE"]
    assert report.StudyInstanceUID == SPREAD and len(references) == 4
    probability = next(item for item in study_group if item.ValueType == "NUM")
    assert float(probability.MeasuredValueSequence[0].NumericValue) == pytest.approx(
        float(rows[SPREAD]["abnormality"]), abs=1e-6)
    # One overlay per view: the two frames of c.DCM get one each, named by frame.
    overlays = sorted(path.name for path in (heatmaps / SPREAD).iterdir())
    assert overlays == ["1.2.840.99_heatmap.png", "IM000001_heatmap.png", "a_heatmap.png", "c_frame1_heatmap.png",
                        "c_frame2_heatmap.png"]


def test_score_py_sr_takes_hostile_headers_without_stopping_the_run(tiny_repository: Path, tmp_path: Path,
                                                                   capsys) -> None:
    from tests.support.hostile_headers import BAD_VALUE_MARKERS, HOSTILE_FILES, invalid_study_uid

    tree, sr_folder, out = tmp_path / "tree", tmp_path / "sr", tmp_path / "predictions.csv"
    for name, make in [*HOSTILE_FILES.items(), ("invalid-uid", invalid_study_uid)]:
        (tree / name).mkdir(parents=True)
        (tree / name / "view.dcm").write_bytes(make())
    assert score.main([str(tree), "--out", str(out), "--models", str(tiny_repository), "--sr", str(sr_folder),
                       "--no-progress", "--workers", "2"]) == 0
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(row["label"] in ("normal", "abnormal") for row in rows)
    reports = [pydicom.dcmread(path) for path in sr_folder.iterdir()]
    assert len(reports) == 3  # the study whose UID is not a UID gets none, and says so
    assert sum("no SR written" in row["warnings"] for row in rows) == 1
    assert sum("PatientSex" in row["warnings"] for row in rows) == 1
    assert "19270815" in {str(report.PatientBirthDate) for report in reports}
    captured = capsys.readouterr()
    for marker in (*BAD_VALUE_MARKERS, "UIDMARKER"):
        assert marker not in captured.out + captured.err + "".join(row["warnings"] for row in rows)


def test_score_py_reports_lying_codestreams_per_file_before_decoding(tmp_path: Path, tiny_repository: Path,
                                                                     decode_calls: list[int]) -> None:
    """A frame whose own header disagrees with its dataset is that file's error; the study's other view is scored."""
    from fuzz.crafted import lying_datasets

    study_uid = generate_uid()
    lying = lying_datasets(PIXELS)
    for case in ("jpeg-ls-huge", "jpeg2000-larger", "rle-segments"):
        dataset = lying[case]
        dataset.StudyInstanceUID = study_uid
        (tmp_path / "tree").mkdir(exist_ok=True)
        (tmp_path / "tree" / f"{case}.dcm").write_bytes(to_bytes(dataset))
    write_dicom(tmp_path / "tree" / "good.dcm", study_uid)
    out = tmp_path / "predictions.csv"
    assert score.main([str(tmp_path / "tree"), "--out", str(out), "--models", str(tiny_repository),
                       "--no-progress", "--workers", "1"]) == 0
    with open(out, newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["study"], row["n_images"], row["n_unreadable"]) == (study_uid, "1", "3")
    with open(tmp_path / "predictions_errors.csv", newline="", encoding="utf-8") as handle:
        errors = sorted((Path(line["image"]).name, line["error"]) for line in csv.DictReader(handle))
    assert errors == [("jpeg-ls-huge.dcm", "ImageTooLarge"), ("jpeg2000-larger.dcm", "MalformedDicom"),
                      ("rle-segments.dcm", "MalformedDicom")]
    assert decode_calls == []  # the good view is native: no codec ran at all
