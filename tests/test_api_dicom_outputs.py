"""POST /predict DICOM and FHIR answers for headers real systems send: 200, bad values left out, named, never logged."""

from __future__ import annotations

import io
import logging

import pydicom
import pytest

from tests.support.dicom_validation import dciodvfy_errors
from tests.support.hostile_headers import BAD_VALUE_MARKERS, HOSTILE_FILES, invalid_study_uid

DICOM = "application/dicom"
MULTIPART = 'multipart/related; type="application/dicom"'
FHIR = "application/fhir+json"


def instances_of(response) -> list[bytes]:
    """The DICOM files of a single or multipart DICOM answer."""
    if response.mimetype == DICOM:
        return [response.data]
    boundary = response.headers["Content-Type"].split('boundary="', 1)[1].rstrip('"')
    return [part.split(b"\r\n\r\n", 1)[1][:-2] for part in response.data.split(f"--{boundary}".encode())[1:-1]]


@pytest.mark.parametrize("accept", [DICOM, MULTIPART, FHIR])
@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_hostile_headers_get_200_and_their_values_stay_out_of_logs(client, caplog, capfd, tmp_path, case, accept):
    caplog.set_level(logging.DEBUG)
    response = client.post("/predict", data=HOSTILE_FILES[case](), content_type=DICOM,
                           headers={"Accept": accept}, query_string={"explain": "true"})
    assert response.status_code == 200, response.data[:300]
    captured = capfd.readouterr()
    for marker in BAD_VALUE_MARKERS:
        assert marker not in caplog.text + captured.out + captured.err, marker
        assert marker.encode() not in response.data, marker
    if accept == FHIR:
        assert response.get_json()["resourceType"] == "DiagnosticReport"
        return
    instances = instances_of(response)
    assert len(instances) == (3 if accept == MULTIPART else 1)  # the SR, and the view's capture and GSPS
    for index, data in enumerate(instances):
        assert dciodvfy_errors(data, tmp_path, f"{index}") == []
    report = pydicom.dcmread(io.BytesIO(instances[0]))
    if case == "non-conformant-values":
        assert report.PatientBirthDate == "19270815" and report.StudyDate == ""
        assert any("PatientSex" in item.TextValue for item in _walk(report) if item.get("ValueType") == "TEXT")


def test_a_study_uid_that_is_not_a_uid_is_a_400_naming_the_attribute(client, caplog):
    response = client.post("/predict", data=invalid_study_uid(), content_type=DICOM, headers={"Accept": DICOM})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "malformed_dicom" and "StudyInstanceUID" in error["message"]
    assert "UIDMARKER" not in error["message"] and "UIDMARKER" not in caplog.text


@pytest.mark.parametrize(("accept", "explained"), [(DICOM, False), (FHIR, False), (MULTIPART, True),
                                                   ("application/json", True)])
def test_heatmaps_are_computed_only_for_answers_that_carry_them(app, client, monkeypatch, accept, explained):
    pipeline = app.extensions["pipeline_loader"].pipeline
    asked: list[bool] = []
    run = pipeline.run

    def recording(request):
        asked.append(request.explain)
        return run(request)

    monkeypatch.setattr(pipeline, "run", recording)
    response = client.post("/predict", data=HOSTILE_FILES["unknown-character-set"](), content_type=DICOM,
                           headers={"Accept": accept}, query_string={"explain": "true"})
    assert response.status_code == 200 and asked == [explained]


def _walk(item: pydicom.Dataset):
    for child in item.get("ContentSequence", []):
        yield child
        yield from _walk(child)
