"""No patient or study value in any log line, the audit log, the metrics or a JSON answer, at every door and Accept.

One instance carries a marker in every patient and study attribute, several of them not conformant to their
VR (a birth date written 1927-08-15, dates and times that are not DA/TM, a code string that is not CS, an
unknown Specific Character Set): pydicom and highdicom quote such values in their warnings, log records
and exception texts.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

import score
from tests.conftest import TEST_LIMITS
from tests.support.dicom_factory import make_dataset, synthetic_radiograph, to_bytes

MARKER = "QX7731"
BIRTH_DATE = "1927-08-15"  # a format real systems send; DICOM wants 19270815
MARKED_ATTRIBUTES = {
    "PatientName": f"{MARKER}^Penelope", "PatientID": f"{MARKER}-PID", "PatientBirthDate": BIRTH_DATE,
    "PatientSex": f"{MARKER}-SEX", "OtherPatientIDs": f"{MARKER}-OTHER", "PatientAddress": f"{MARKER} Lane",
    "PatientTelephoneNumbers": f"{MARKER}-TEL", "PatientComments": f"{MARKER} comment",
    "IssuerOfPatientID": f"{MARKER}-ISSUER", "AccessionNumber": f"{MARKER}-ACC", "StudyID": f"{MARKER}-SID",
    "StudyDate": f"{MARKER}-DATE", "StudyTime": f"{MARKER}:TIME", "SeriesDate": "2024-01-02",
    "ReferringPhysicianName": f"{MARKER}^Referrer", "InstitutionName": f"{MARKER} Hospital",
    "OperatorsName": f"{MARKER}^Operator", "PerformingPhysicianName": f"{MARKER}^Performer",
    "SpecificCharacterSet": f"ISO_IR {MARKER}",
}
SECRETS = (MARKER, BIRTH_DATE)
ACCEPTS = ["application/json", "application/dicom", 'multipart/related; type="application/dicom"']


def marked_instance() -> bytes:
    """A wrist view whose every patient and study attribute holds the marker."""
    pixels = np.round(synthetic_radiograph("XR_WRIST", seed=5) * 255).astype(np.uint8)
    return to_bytes(make_dataset(pixels, extra=MARKED_ATTRIBUTES))


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} found in {where}: ...{text[max(0, text.find(secret) - 300):][:600]}"


@pytest.fixture
def audited_app(tiny_repository: Path, tmp_path: Path):
    from app import create_app

    flask_app = create_app({"TESTING": True, "MODELS_DIR": str(tiny_repository), **TEST_LIMITS, "WARMUP": False,
                            "AUDIT_LOG": str(tmp_path / "audit.log"), "AUDIT_SECRET": "k"})
    yield flask_app
    flask_app.extensions["pipeline_loader"].close()


def test_marked_attributes_reach_no_log_metric_or_json_answer(audited_app, tmp_path: Path, tiny_repository: Path,
                                                              caplog: pytest.LogCaptureFixture,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    client, data = audited_app.test_client(), marked_instance()
    with warnings.catch_warnings(record=True) as caught:
        for accept in ACCEPTS:
            response = client.post("/predict", data={"image": (io.BytesIO(data), "view.dcm")},
                                   query_string={"explain": "true"}, headers={"Accept": accept})
            assert response.status_code < 500, (accept, response.get_data(as_text=True)[:300])
            if response.mimetype == "application/json":
                assert_no_secret(response.get_data(as_text=True), f"the answer at {accept}")
        assert_no_secret(client.get("/metrics").get_data(as_text=True), "/metrics")
        study = tmp_path / "tree" / "study1"
        study.mkdir(parents=True)
        (study / "view.dcm").write_bytes(data)
        out = tmp_path / "predictions.csv"
        score.main([str(tmp_path / "tree"), "--out", str(out), "--models", str(tiny_repository), "--sr",
                    str(tmp_path / "sr"), "--no-progress", "--workers", "1"])
    for written in tmp_path.glob("predictions*.csv"):
        assert_no_secret(written.read_text(), written.name)
    assert_no_secret((tmp_path / "audit.log").read_text(), "the audit log")
    assert_no_secret(caplog.text, "the log records")
    captured = capfd.readouterr()
    assert_no_secret(captured.out + captured.err, "stdout/stderr")
    assert_no_secret("\n".join(str(warning.message) for warning in caught), "the warnings")


def test_highdicom_does_not_log_the_source_uids(client, caplog: pytest.LogCaptureFixture) -> None:
    pixels = np.round(synthetic_radiograph("XR_WRIST", seed=6) * 255).astype(np.uint8)
    dataset = make_dataset(pixels)
    caplog.set_level(logging.DEBUG)
    for accept in ACCEPTS[1:]:
        response = client.post("/predict", data=to_bytes(dataset), content_type="application/dicom",
                               query_string={"explain": "true"}, headers={"Accept": accept})
        assert response.status_code == 200
    for uid in (dataset.SOPInstanceUID, dataset.SeriesInstanceUID, dataset.StudyInstanceUID):
        assert uid not in caplog.text
