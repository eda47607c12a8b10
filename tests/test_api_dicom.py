"""POST /predict with DICOM views: every input form, DICOM fields, the SR answer, refusals, no patient data out."""

from __future__ import annotations

import base64
import io
import json
import logging

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import Comprehensive3DSRStorage, GrayscaleSoftcopyPresentationStateStorage, generate_uid

from tests.support.dicom_factory import (
    LEAK_MARKERS,
    jpeg_baseline,
    make_dataset,
    png_bytes,
    synthetic_radiograph,
    to_bytes,
)
from tests.support.helpers import validate_against_spec

STUDY_UID = generate_uid()
PIXELS = np.round(synthetic_radiograph("XR_ELBOW", seed=7) * 255).astype(np.uint8)
DICOM_A = make_dataset(PIXELS, study_uid=STUDY_UID, body_part="ELBOW")
DICOM_B = make_dataset(255 - PIXELS, photometric="MONOCHROME1", study_uid=STUDY_UID, body_part="ELBOW")
BYTES_A, BYTES_B = to_bytes(DICOM_A), to_bytes(DICOM_B)
PNG = png_bytes(PIXELS)


def multipart(*named: tuple[str, bytes, str]) -> dict:
    """Multipart 'image' parts with the given names and (any) content types."""
    return {"image": [(io.BytesIO(data), name, content_type) for name, data, content_type in named]}


INPUT_FORMS = [
    ("multipart-octet-stream", {"data": multipart(("a.dcm", BYTES_A, "application/octet-stream"),
                                                  ("b", BYTES_B, "image/png"))}, 2),
    ("raw-application-dicom", {"data": BYTES_A, "content_type": "application/dicom"}, 1),
    ("json-base64", {"json": {"images": [base64.b64encode(BYTES_A).decode(), base64.b64encode(BYTES_B).decode()]}}, 2),
    ("json-data-url", {"json": {"image": "data:application/dicom;base64," + base64.b64encode(BYTES_A).decode()}}, 1),
]


@pytest.mark.parametrize(("form", "request_arguments", "num_views"), INPUT_FORMS, ids=[form[0] for form in INPUT_FORMS])
def test_dicom_in_every_input_form(client, openapi_spec, form, request_arguments, num_views):
    response = client.post("/predict", **request_arguments)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    validate_against_spec(openapi_spec, "PredictResponse", body)
    assert body["study"]["dicom"] == {"study_instance_uid": STUDY_UID, "body_part_examined": "ELBOW", "modality": "DX"}
    sources = [DICOM_A, DICOM_B][:num_views]
    assert [image["dicom"] for image in body["images"]] == [
        {"sop_instance_uid": dataset.SOPInstanceUID, "series_instance_uid": dataset.SeriesInstanceUID,
         "view_position": "PA", "laterality": "L", "frame": 1} for dataset in sources]


def test_monochrome1_view_scores_like_its_monochrome2_twin(client):
    body = client.post("/predict", data=multipart(("a", BYTES_A, "x/y"), ("b", BYTES_B, "x/y"))).get_json()
    first, second = body["images"]
    assert first["body_part_scores"] == second["body_part_scores"] and first["abnormality"] == second["abnormality"]


def test_png_answer_has_no_dicom_fields(client):
    body = client.post("/predict", data=PNG, content_type="image/png").get_json()
    assert "dicom" not in body["study"] and "dicom" not in body["images"][0]


def test_header_body_part_disagreeing_with_the_result_is_a_study_warning(client):
    wrist = to_bytes(make_dataset(PIXELS, body_part="WRIST"))
    body = client.post("/predict", data=wrist, content_type="application/dicom",
                       query_string={"body_part": "XR_SHOULDER"}).get_json()
    assert any("names XR_WRIST but the study was read as XR_SHOULDER" in warning
               for warning in body["study"]["warnings"])
    agreeing = client.post("/predict", data=wrist, content_type="application/dicom",
                           query_string={"body_part": "wrist"}).get_json()
    assert not any("DICOM header" in warning for warning in agreeing["study"]["warnings"])


def study_group_references(report: pydicom.Dataset) -> list[str]:
    """The SOP Instance UIDs of the IMAGE items of the TID 1500 report's first (study) measurement group."""
    [measurements] = [item for item in report.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"]
    study_group = measurements.ContentSequence[0]
    return [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for item in study_group.ContentSequence if item.ValueType == "IMAGE"]


def test_accept_dicom_answers_a_structured_report(client):
    response = client.post("/predict", data=multipart(("a.dcm", BYTES_A, "application/dicom"),
                                                       ("b.dcm", BYTES_B, "application/dicom")),
                           headers={"Accept": "application/dicom"})
    assert response.status_code == 200 and response.mimetype == "application/dicom"
    assert "attachment" in response.headers["Content-Disposition"]
    report = pydicom.dcmread(io.BytesIO(response.data))
    assert report.SOPClassUID == Comprehensive3DSRStorage and report.StudyInstanceUID == STUDY_UID
    assert report.PatientID == DICOM_A.PatientID
    assert study_group_references(report) == [DICOM_A.SOPInstanceUID, DICOM_B.SOPInstanceUID]
    json_body = client.post("/predict", data=BYTES_A, content_type="application/dicom",
                            headers={"Accept": "application/json, application/dicom"}).get_json()
    assert json_body["study"]["dicom"]["study_instance_uid"] == STUDY_UID


def test_accept_dicom_for_a_png_study_is_406(client, openapi_spec):
    response = client.post("/predict", data=PNG, content_type="image/png", headers={"Accept": "application/dicom"})
    assert response.status_code == 406
    body = response.get_json()
    validate_against_spec(openapi_spec, "Error", body)
    assert body["error"]["code"] == "not_acceptable" and "needs DICOM input" in body["error"]["message"]


def truncated() -> bytes:
    return BYTES_A[: len(BYTES_A) // 3]


def ct() -> bytes:
    return to_bytes(make_dataset(PIXELS, modality="CT"))


def report_without_pixels() -> bytes:
    return open(get_testdata_file("test-SR.dcm"), "rb").read()


def mpeg2() -> bytes:
    dataset = jpeg_baseline(make_dataset(PIXELS))
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    return to_bytes(dataset)


def too_many_pixels() -> bytes:
    dataset = make_dataset(PIXELS)
    dataset.Rows, dataset.Columns = 1000, 1000
    return to_bytes(dataset)


REFUSALS = [
    ("truncated", truncated, 400, "malformed_dicom", "bad.dcm: the pixel data holds"),
    ("ct", ct, 422, "unsupported_modality", "bad.dcm: the Modality is not a projection radiograph"),
    ("sr", report_without_pixels, 422, "no_pixel_data", "bad.dcm: this DICOM object holds no image"),
    ("mpeg2", mpeg2, 415, "unsupported_transfer_syntax", "bad.dcm: the transfer syntax (file meta Transfer Syntax"),
    ("pixels", too_many_pixels, 413, "image_too_large", "bad.dcm: 1000x1000 x 1 frames is 1,000,000 pixels"),
]


@pytest.mark.parametrize(("case", "make", "status", "code", "message"), REFUSALS, ids=[row[0] for row in REFUSALS])
def test_bad_dicom_views_are_clear_errors(client, openapi_spec, case, make, status, code, message):
    response = client.post("/predict", data=multipart(("good.dcm", BYTES_A, "application/dicom"),
                                                       ("bad.dcm", make(), "application/dicom")))
    assert response.status_code == status
    body = response.get_json()
    validate_against_spec(openapi_spec, "Error", body)
    assert body["error"]["code"] == code and body["error"]["message"].startswith(message)


LYING_CASES = [("jpeg-baseline-huge", 413, "image_too_large"), ("jpeg-lossless-huge", 413, "image_too_large"),
               ("jpeg-ls-huge", 413, "image_too_large"), ("jpeg2000-huge", 413, "image_too_large"),
               ("jpeg-baseline-larger", 400, "malformed_dicom"), ("jpeg-ls-larger", 400, "malformed_dicom"),
               ("jpeg2000-larger", 400, "malformed_dicom"), ("rle-segments", 400, "malformed_dicom")]


@pytest.fixture(scope="module")
def lying_files() -> dict[str, bytes]:
    from fuzz.crafted import lying_datasets

    return {case: to_bytes(dataset) for case, dataset in lying_datasets(PIXELS).items()}


@pytest.mark.parametrize("accept", ["application/json", "application/dicom",
                                    'multipart/related; type="application/dicom"'])
@pytest.mark.parametrize(("case", "status", "code"), LYING_CASES, ids=[row[0] for row in LYING_CASES])
def test_a_codestream_disagreeing_with_its_dataset_is_refused_before_decoding(client, openapi_spec, lying_files,
                                                                              decode_calls, case, status, code,
                                                                              accept):
    response = client.post("/predict", data=multipart(("lie.dcm", lying_files[case], "application/dicom")),
                           headers={"Accept": accept})
    assert response.status_code == status
    body = response.get_json()
    validate_against_spec(openapi_spec, "Error", body)
    assert body["error"]["code"] == code and body["error"]["message"].startswith("lie.dcm: the ")
    assert decode_calls == []
    assert client.post("/predict", data=BYTES_A, content_type="application/dicom").status_code == 200


def monochrome_with_three_samples(planar: int) -> bytes:
    dataset = make_dataset(np.repeat(PIXELS[..., None], 3, axis=2), photometric="RGB")
    dataset.PhotometricInterpretation, dataset.PlanarConfiguration = "MONOCHROME2", planar
    return to_bytes(dataset)


HEADER_CONTRADICTIONS = [
    ("interleaved", lambda: monochrome_with_three_samples(0), "Photometric Interpretation MONOCHROME2 needs Samples"),
    ("planar", lambda: monochrome_with_three_samples(1), "Photometric Interpretation MONOCHROME2 needs Samples"),
    ("slope-nan", lambda: to_bytes(make_dataset(PIXELS, extra={"RescaleSlope": "NaN", "RescaleIntercept": 0})),
     "Rescale Slope must be a finite number"),
    ("slope-1e308", lambda: to_bytes(make_dataset(PIXELS, extra={"RescaleSlope": "1e308", "RescaleIntercept": 0})),
     "Rescale Slope must be a finite number"),
    ("window-inf", lambda: to_bytes(make_dataset(PIXELS, extra={"WindowCenter": "inf", "WindowWidth": 10})),
     "Window Center must be a finite number"),
    ("width-nan", lambda: to_bytes(make_dataset(PIXELS, extra={"WindowCenter": 100, "WindowWidth": "NaN"})),
     "Window Width must be a finite number"),
]


@pytest.mark.parametrize("accept", ["application/json", "application/dicom"])
@pytest.mark.parametrize(("case", "make", "message"), HEADER_CONTRADICTIONS, ids=[r[0] for r in HEADER_CONTRADICTIONS])
def test_contradictory_or_degenerate_headers_are_400_naming_the_attribute(client, case, make, message, accept):
    response = client.post("/predict", data=make(), content_type="application/dicom", headers={"Accept": accept})
    assert response.status_code == 400, response.data[:300]
    error = response.get_json()["error"]
    assert error["code"] == "malformed_dicom" and error["message"].startswith(f"image1: {message}")


def test_refusals_never_quote_the_header_values(client):
    marker = "ECHO-7731"
    unknown_modality = to_bytes(make_dataset(PIXELS, modality=marker))
    colour = make_dataset(np.repeat(PIXELS[..., None], 3, axis=2), photometric="RGB", modality="OT")
    colour.PhotometricInterpretation = marker
    # pydicom writes known transfer syntaxes only: swap the UID for one of the same length after writing.
    unknown_syntax = mpeg2().replace(b"1.2.840.10008.1.2.4.100\x00", b"1.2.840.99.7731.4.100.11")
    for data, status in ((unknown_modality, 422), (to_bytes(colour), 422), (unknown_syntax, 415)):
        response = client.post("/predict", data=data, content_type="application/dicom")
        assert response.status_code == status
        assert "7731" not in response.get_data(as_text=True)


def test_views_of_two_studies_are_refused(client):
    other = to_bytes(make_dataset(PIXELS))
    response = client.post("/predict", data=multipart(("mine.dcm", BYTES_A, "a/b"), ("theirs.dcm", other, "a/b")))
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "mixed_studies" and "mine.dcm" in error["message"] and "theirs.dcm" in error["message"]


def test_no_patient_attribute_leaves_in_answers_logs_metrics_or_errors(client, caplog, capfd):
    """Every path a DICOM full of patient attributes can take, then grep everything that left the service."""
    caplog.set_level(logging.DEBUG)
    bodies = []
    # A value pydicom's reading validation would quote in a warning and a log line ("Invalid value for VR UI").
    invalid = make_dataset(PIXELS, study_uid=STUDY_UID, extra={"FrameOfReferenceUID": "1.2.3.Leakmore"})
    for data in (BYTES_A, to_bytes(invalid), truncated(), ct(), report_without_pixels(), mpeg2(), too_many_pixels(),
                 to_bytes(make_dataset(PIXELS))):
        bodies.append(client.post("/predict", data=multipart(("a.dcm", BYTES_A, "x/y"), ("v.dcm", data, "x/y"))).data)
    bodies.append(client.post("/predict", data=PNG, content_type="image/png",
                              headers={"Accept": "application/dicom"}).data)
    bodies.append(client.get("/metrics").data)
    captured = capfd.readouterr()
    outputs = [body.decode("utf-8", "replace") for body in bodies] + [caplog.text, captured.out, captured.err]
    for output in outputs:
        for marker in LEAK_MARKERS:
            assert marker not in output


def test_header_body_part_disagreeing_with_the_router_is_a_study_warning(client):
    routed = client.post("/predict", data=PNG, content_type="image/png").get_json()["study"]["body_part"]
    other = "FINGER" if routed != "XR_FINGER" else "ELBOW"
    body = client.post("/predict", data=to_bytes(make_dataset(PIXELS, body_part=other)),
                       content_type="application/dicom").get_json()
    assert body["study"]["body_part"] == routed
    assert f"names XR_{other} but the study was read as {routed}" in " ".join(body["study"]["warnings"])
    same = routed.removeprefix("XR_")
    agreeing = client.post("/predict", data=to_bytes(make_dataset(PIXELS, body_part=same)),
                           content_type="application/dicom").get_json()
    assert "DICOM header" not in " ".join(agreeing["study"]["warnings"])


def test_audit_line_of_a_dicom_study_holds_its_keyed_uid_hash(tiny_repository, tmp_path):
    from app import create_app
    from web.audit import hash_study_uid

    audit_log = tmp_path / "audit.log"
    flask_app = create_app({"TESTING": True, "MODELS_DIR": str(tiny_repository), "AUDIT_LOG": str(audit_log),
                            "AUDIT_SECRET": "audit key", "WARMUP": False})
    try:
        client = flask_app.test_client()
        assert client.post("/predict", data=BYTES_A, content_type="application/dicom").status_code == 200
        assert client.post("/predict", data=PNG, content_type="image/png").status_code == 200
    finally:
        flask_app.extensions["pipeline_loader"].close()
    dicom_line, png_line = (json.loads(line.removeprefix("audit ")) for line in audit_log.read_text().splitlines())
    assert dicom_line["study_uid_hash"] == hash_study_uid(STUDY_UID, b"audit key")
    assert png_line["study_uid_hash"] is None
    assert STUDY_UID not in audit_log.read_text() and "Leakmore" not in audit_log.read_text()


def test_explain_gives_a_heatmap_per_frame_of_a_multi_frame_file(client):
    cine = to_bytes(make_dataset(np.stack([PIXELS, PIXELS[::-1]]), study_uid=STUDY_UID))
    body = client.post("/predict", data=cine, content_type="application/dicom",
                       query_string={"explain": "true"}).get_json()
    assert [image["dicom"]["frame"] for image in body["images"]] == [1, 2]
    assert all(image["explanation"]["heatmap"].startswith("data:image/png;base64,") for image in body["images"])


def _multipart_instances(response) -> list[pydicom.Dataset]:
    """The DICOM instances of a multipart/related answer, in order."""
    boundary = response.headers["Content-Type"].split('boundary="', 1)[1].rstrip('"')
    parts = response.data.split(f"--{boundary}".encode())[1:-1]
    assert all(part.startswith(b"\r\nContent-Type: application/dicom\r\n\r\n") for part in parts)
    return [pydicom.dcmread(io.BytesIO(part.split(b"\r\n\r\n", 1)[1][:-2])) for part in parts]


def test_multipart_dicom_answer_holds_the_sr_a_heatmap_capture_and_a_presentation_state_per_view(client):
    views = multipart(("a.dcm", to_bytes(DICOM_A), "application/octet-stream"),
                      ("b.dcm", to_bytes(DICOM_B), "application/octet-stream"))
    response = client.post("/predict", data=views, query_string={"explain": "true"},
                           headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith('multipart/related; type="application/dicom"; boundary=')
    report, *captures, state_a, state_b = _multipart_instances(response)
    assert report.SOPClassUID == Comprehensive3DSRStorage and len(captures) == 2
    for capture, source in zip(captures, (DICOM_A, DICOM_B), strict=True):
        assert capture.StudyInstanceUID == STUDY_UID and capture.SeriesInstanceUID != source.SeriesInstanceUID
        assert capture.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and capture.PhotometricInterpretation == "RGB"
        assert (capture.Rows, capture.Columns) == PIXELS.shape  # the overlay at the view's size
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert captures[0].SeriesInstanceUID == captures[1].SeriesInstanceUID  # one new series
    for state, source in ((state_a, DICOM_A), (state_b, DICOM_B)):
        assert state.SOPClassUID == GrayscaleSoftcopyPresentationStateStorage and state.StudyInstanceUID == STUDY_UID
        reference = state.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert state_b.PresentationLUTShape == "INVERSE" and state_a.PresentationLUTShape == "IDENTITY"  # B: MONOCHROME1
    without_explain = client.post("/predict", data=to_bytes(DICOM_A), content_type="application/dicom",
                                  headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert len(_multipart_instances(without_explain)) == 1  # the SR only: no heatmap was asked for
