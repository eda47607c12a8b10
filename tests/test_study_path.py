"""One study path for every door: HTTP, score.py and the PACS worker give the same admission verdicts."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import JPEGLSLossless, generate_uid

import score
from classifiers.admission import Admission, AdmissionLimits, PixelBudget
from classifiers.decoding.imaging import ImageLimits
from classifiers.errors import NoReadableView, StudyTooLarge, TooManyViews, UnreadableImage
from classifiers.results import ViewInput
from classifiers.study_request import StudyRequest
from pacs.state import load_state
from tests.support.dicom_factory import make_dataset, synthetic_radiograph, to_bytes
from tests.support.orthanc_server import running_orthanc
from tests.test_pacs import run_worker, study_reports, upload_study

FRAMES_OVER_THE_VIEW_LIMIT = 13  # the default limit is 12 views per study


@pytest.fixture(scope="module")
def default_limits_app(tiny_repository: Path):
    """The app with the default limits (the session app allows 3 views), as score.py and the worker have them."""
    from app import create_app

    flask_app = create_app({"MODELS_DIR": str(tiny_repository), "WARMUP": False})
    yield flask_app
    flask_app.extensions["pipeline_loader"].close()


def _multi_frame_study(study_uid: str) -> bytes:
    """One DICOM file of 13 small frames: 13 views of one study."""
    frame = np.round(synthetic_radiograph("XR_WRIST", seed=2, size=(40, 32)) * 255).astype(np.uint8)
    return to_bytes(make_dataset(np.stack([frame] * FRAMES_OVER_THE_VIEW_LIMIT), study_uid=study_uid))


def _huge_study(study_uid: str) -> list[bytes]:
    """Four 6000 x 6000 16-bit views (each under the per-view limit, 144 M pixels together), JPEG-LS: 2 KB each.

    Admission reads sizes from the headers only: the study is refused before any pixel is decoded.
    """
    files = []
    for number in range(4):
        dataset = make_dataset(np.zeros((6000, 6000), dtype=np.uint16), bits_stored=12, study_uid=study_uid,
                               extra={"InstanceNumber": number + 1})
        dataset.compress(JPEGLSLossless)
        files.append(to_bytes(dataset))
    return files


def _score_folder(folder: Path, tiny_repository: Path, out: Path) -> tuple[int, dict[str, dict[str, str]]]:
    code = score.main([str(folder), "--out", str(out), "--models", str(tiny_repository), "--no-progress"])
    with open(out, newline="", encoding="utf-8") as handle:
        return code, {row["study"]: row for row in csv.DictReader(handle)}


@pytest.mark.parametrize(("make_files", "code", "refusal"), [
    (lambda uid: [_multi_frame_study(uid)], "too_many_views", "13 views"),
    (lambda uid: _huge_study(uid), "study_too_large", "144,000,000 pixels"),
])
def test_http_score_and_pacs_refuse_the_same_study_and_go_on(make_files, code, refusal, default_limits_app,
                                                              tiny_repository, tmp_path):
    study_uid = generate_uid()
    files = make_files(study_uid)
    response = default_limits_app.test_client().post(
        "/predict", data={"image": [(io.BytesIO(data), f"{index}.dcm") for index, data in enumerate(files)]},
        content_type="multipart/form-data")
    assert response.status_code == 413 and response.get_json()["error"]["code"] == code, response.get_json()
    assert refusal in response.get_json()["error"]["message"]

    tree = tmp_path / "tree"
    for study, study_files in (("refused", files), ("fine", [to_bytes(make_dataset(np.round(
            synthetic_radiograph("XR_WRIST", seed=4) * 255).astype(np.uint8)))])):
        (tree / study).mkdir(parents=True)
        for index, data in enumerate(study_files):
            (tree / study / f"image{index}.dcm").write_bytes(data)
    exit_code, rows = _score_folder(tree, tiny_repository, tmp_path / "predictions.csv")
    assert exit_code == 0
    with open(tmp_path / "predictions_errors.csv", newline="", encoding="utf-8") as handle:
        [error_row] = list(csv.DictReader(handle))
    assert error_row["study"] == study_uid and refusal in error_row["message"]
    refused = rows.pop(study_uid)  # DICOM files are grouped into studies by StudyInstanceUID
    [fine] = rows.values()
    assert refused["label"] == "unscored" and "refused" in refused["warnings"] and refusal in refused["warnings"]
    assert fine["label"] in ("normal", "abnormal")

    with running_orthanc(tmp_path / "orthanc") as orthanc:
        study_id = upload_study(orthanc, files)
        state = tmp_path / "state.json"
        assert run_worker(orthanc, tiny_repository, state) == 0
        assert load_state(state).studies[study_id].skipped in (TooManyViews.__name__, StudyTooLarge.__name__)
        assert study_reports(orthanc, study_id) == []


def _admission(max_views: int = 3, max_study_pixels: int = 10_000) -> Admission:
    limits = AdmissionLimits(max_views, max_study_pixels, ImageLimits(max_pixels=5_000, min_side=8),
                             explain_pixels_per_view=1_000)
    return Admission(limits, PixelBudget(20_000), refuse_if_late=lambda deadline, part: None)


def _png(width: int, height: int) -> bytes:
    from tests.support.helpers import encode_image

    return encode_image(np.zeros((height, width), dtype=np.uint8), mode="L")


def test_admission_counts_pixels_from_headers_and_holds_them_while_the_study_runs() -> None:
    admission = _admission()
    request = StudyRequest((ViewInput("a.png", _png(50, 40)), ViewInput("b.png", _png(30, 20))))
    with admission.admit(request) as admitted:
        assert admitted.num_pixels == 50 * 40 + 30 * 20
        assert admission.budget.in_use == 2600
        assert [view.name for view in admitted.views] == ["a.png", "b.png"]
    assert admission.budget.in_use == 0


@pytest.mark.parametrize(("views", "error", "message"), [
    ([("a.png", (40, 40))] * 4, TooManyViews, "4 views"),
    ([("a.png", (70, 70)), ("b.png", (70, 70)), ("c.png", (70, 70))], StudyTooLarge, "14,700 pixels"),
])
def test_admission_refuses_a_study_over_its_limits_before_holding_anything(views, error, message) -> None:
    admission = _admission()
    request = StudyRequest(tuple(ViewInput(name, _png(*size)) for name, size in views))
    with pytest.raises(error, match=message), admission.admit(request):
        pass
    assert admission.budget.in_use == 0


def test_an_unreadable_view_refuses_the_study_or_is_left_out_as_the_request_says() -> None:
    admission = _admission()
    views = (ViewInput("good.png", _png(40, 40)), ViewInput("notes.txt", b"hello"))
    with pytest.raises(UnreadableImage, match="notes.txt"), admission.admit(StudyRequest(views)):
        pass
    with admission.admit(StudyRequest(views, skip_unreadable=True)) as admitted:
        assert [view.name for view in admitted.views] == ["good.png"]
        assert [(view.name, view.error) for view in admitted.unreadable] == [("notes.txt", "UnreadableImage")]
    with pytest.raises(NoReadableView) as raised, admission.admit(StudyRequest(views[1:], skip_unreadable=True)):
        pass
    assert [view.name for view in raised.value.unreadable] == ["notes.txt"]


def test_each_view_is_parsed_once(monkeypatch, tiny_pipeline) -> None:
    import classifiers.decoding.dicom as dicom_module

    calls: list[str] = []
    read = dicom_module.read_dicom
    monkeypatch.setattr(dicom_module, "read_dicom", lambda data, name: calls.append(name) or read(data, name))
    frame = np.round(synthetic_radiograph("XR_WRIST", seed=3) * 255).astype(np.uint8)
    tiny_pipeline.predict_study([ViewInput("a.dcm", to_bytes(make_dataset(frame)))])
    assert calls == ["a.dcm"]


def test_an_explained_study_holds_its_heatmaps_memory_in_the_budget_too() -> None:
    admission = _admission()
    views = (ViewInput("a.png", _png(50, 40)), ViewInput("b.png", _png(30, 20)))
    with admission.admit(StudyRequest(views, explain=True)):
        assert admission.budget.in_use == 2600 + 2 * 1_000
    with admission.admit(StudyRequest(views)):
        assert admission.budget.in_use == 2600
