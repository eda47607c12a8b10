"""FHIR R4 DiagnosticReport + Observations of a DICOM study (fhir.resources), and Accept: application/fhir+json."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydicom.uid import generate_uid

from classifiers.outputs.fhir_report import FHIR_JSON, build_fhir_report
from classifiers.results import ViewInput
from tests.support.dicom_factory import (
    LEAK_MARKERS,
    PATIENT_ATTRIBUTES,
    make_dataset,
    png_bytes,
    synthetic_radiograph,
    to_bytes,
)

PIXELS = np.round(synthetic_radiograph("XR_FOREARM", seed=9) * 255).astype(np.uint8)
STUDY_UID = generate_uid()
FILES = [to_bytes(make_dataset(PIXELS, study_uid=STUDY_UID)), to_bytes(make_dataset(PIXELS[::-1], study_uid=STUDY_UID))]
# The identifiers the report may carry; every other patient attribute must stay out.
IDENTIFIERS = ("PID-7731-SECRET", "ACC-99311")


def contained(report: dict) -> dict[str, dict]:
    """The contained resources by id."""
    return {resource["id"]: resource for resource in report["contained"]}


@pytest.fixture(scope="module")
def result(tiny_pipeline):
    return tiny_pipeline.predict_study([ViewInput(f"{index}.dcm", data) for index, data in enumerate(FILES)])


def test_report_maps_the_result_and_validates(result) -> None:
    report = json.loads(build_fhir_report(result, backend="onnx").model_dump_json(exclude_none=True))
    DiagnosticReport.model_validate(report)  # what we send validates again
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "preliminary"
    assert {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "126000",
            "display": "Imaging Measurement Report"} in report["code"]["coding"]
    assert report["imagingStudy"][0]["identifier"] == {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"}
    assert report["subject"]["identifier"]["value"] == PATIENT_ATTRIBUTES["PatientID"]
    assert report["basedOn"][0]["identifier"]["value"] == PATIENT_ATTRIBUTES["AccessionNumber"]
    resources = contained(report)
    assert resources["study"]["code"]["coding"][0]["code"] == "125007"
    assert [member["reference"] for member in resources["study"]["hasMember"]] == [
        "#body-part", "#abnormality", "#threshold", "#label"]
    assert resources["abnormality"]["valueQuantity"] == {"value": round(result.abnormality, 6), "unit": "1",
                                                         "system": "http://unitsofmeasure.org", "code": "1"}
    assert resources["threshold"]["valueQuantity"]["value"] == result.threshold
    label = resources["label"]["valueCodeableConcept"]["coding"][0]
    assert label["code"] == {"abnormal": "263654008", "normal": "17621005"}[result.label]
    part = resources["body-part"]["valueCodeableConcept"]["coding"][0]
    assert (part["system"], part["code"]) == ("http://snomed.info/sct",
                                               {"XR_ELBOW": "16953009", "XR_FINGER": "7569003",
                                                "XR_FOREARM": "14975008", "XR_HAND": "85562004",
                                                "XR_HUMERUS": "85050009", "XR_SHOULDER": "16982005",
                                                "XR_WRIST": "74670003"}[result.body_part])
    versions = [version["value"] for version in resources["algorithm"]["version"]]
    assert versions == [result.models["router"], result.models["expert"], "onnx"]
    assert all(resource.get("device") == {"reference": "#algorithm"} for resource in report["contained"]
               if resource["resourceType"] == "Observation")


def test_report_holds_no_patient_data_but_the_identifiers(result) -> None:
    text = build_fhir_report(result).model_dump_json(exclude_none=True)
    for marker in LEAK_MARKERS:
        assert marker not in text or any(marker in identifier for identifier in IDENTIFIERS), marker
    assert "19310203" not in text and "Leakmore" not in text and '"gender"' not in text


@pytest.mark.parametrize("accept", [FHIR_JSON, f"{FHIR_JSON}; fhirVersion=4.0"])
def test_accept_fhir_json_answers_the_report(client, accept) -> None:
    views = {"image": [(io.BytesIO(data), f"{index}.dcm") for index, data in enumerate(FILES)]}
    response = client.post("/predict", data=views, headers={"Accept": accept},
                           query_string={"explain": "true"})
    assert response.status_code == 200 and response.mimetype == FHIR_JSON
    report = DiagnosticReport.model_validate_json(response.data)
    assert report.imagingStudy[0].identifier.value == f"urn:oid:{STUDY_UID}"
    json_answer = client.post("/predict", data={"image": [(io.BytesIO(data), f"{index}.dcm")
                                                          for index, data in enumerate(FILES)]}).get_json()
    probability = next(resource for resource in report.contained if resource.id == "abnormality")
    assert float(probability.valueQuantity.value) == pytest.approx(json_answer["study"]["abnormality"], abs=1e-6)


def test_accept_fhir_json_for_a_png_study_is_406(client) -> None:
    response = client.post("/predict", data=png_bytes(PIXELS), content_type="image/png",
                           headers={"Accept": FHIR_JSON})
    assert response.status_code == 406 and response.get_json()["error"]["code"] == "not_acceptable"


@pytest.mark.parametrize(("rule_out", "rule_in", "category"), [(0.0, 0.0, "flagged"), (0.0, 1.0, "indeterminate"),
                                                               (1.0, 1.0, "low")])
def test_report_carries_the_triage_category_and_operating_points(tiny_repository, tmp_path, rule_out, rule_in,
                                                                 category) -> None:
    from classifiers import Pipeline, PipelineSettings
    from tests.support.triage_repository import triaged_copy

    folder = triaged_copy(tiny_repository, tmp_path / "repository", rule_out, rule_in)
    pipeline = Pipeline.load(folder, PipelineSettings(warmup=False))
    try:
        triaged = pipeline.predict_study([ViewInput(f"{index}.dcm", data) for index, data in enumerate(FILES)])
    finally:
        pipeline.close()
    assert triaged.triage == category
    report = json.loads(build_fhir_report(triaged).model_dump_json(exclude_none=True))
    DiagnosticReport.model_validate(report)
    resources = contained(report)
    assert [member["reference"] for member in resources["study"]["hasMember"]] == [
        "#body-part", "#abnormality", "#threshold", "#label", "#triage", "#rule-out", "#rule-in"]
    coding = resources["triage"]["valueCodeableConcept"]["coding"][0]
    assert (coding["system"], coding["code"]) == ("urn:x-radiograph-triage:99RADTRIAGE", category)
    assert resources["triage"]["code"]["coding"][0]["code"] == "triage"
    assert resources["rule-out"]["valueQuantity"]["value"] == rule_out
    assert resources["rule-in"]["valueQuantity"]["value"] == rule_in
    assert report["conclusion"].endswith(f"; triage {category}")


def test_report_without_operating_points_has_no_triage_members(result) -> None:
    resources = contained(json.loads(build_fhir_report(result).model_dump_json(exclude_none=True)))
    assert result.triage is None and not {"triage", "rule-out", "rule-in"} & set(resources)
