"""A DICOM study's result as a FHIR R4 DiagnosticReport with Observations, built and validated with fhir.resources.

Mapped as HL7's "DICOM SR to FHIR Resource Mapping" guide maps a TID 1500 Measurement Report: the report is
the DiagnosticReport (code DCM 126000 "Imaging Measurement Report"), the study's measurement group an
Observation (DCM 125007) whose members are the measurements: body part (SCT 363698007 Finding Site), abnormality
probability (DCM 122157, UCUM "1"), threshold (DCM 122411), label (DCM 121402 Normality = SCT Abnormal/Normal),
and with the expert's operating points the triage category and the rule-out and rule-in thresholds (the SR's
private 99RADTRIAGE codes, system urn:x-radiograph-triage:99RADTRIAGE).
The algorithm is a contained Device (its name, the model versions, the Device UID of the SR's observer). The
study is named by its identifiers only: ImagingStudy by Study Instance UID (urn:dicom:uid), the order by
Accession Number (ACSN), the subject by Patient ID, each only when the input had it; no name, birth date or sex.
The models are fhir.resources' R4B ones (4.3.0), whose DiagnosticReport, Observation and Device are R4's.
"""

from __future__ import annotations

import datetime
from typing import Any

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from classifiers.outputs.dicom_attributes import writable_source
from classifiers.outputs.structured_report import (
    ALGORITHM_NAME,
    BODY_PART_CODES,
    LABEL_CODES,
    MANUFACTURER,
    OPERATING_POINT_CODES,
    SCHEME,
    TRIAGE_CATEGORY,
    TRIAGE_CODES,
    algorithm_device_uid,
)
from classifiers.results import StudyResult

FHIR_JSON = "application/fhir+json"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
# The SR's private scheme (triage category, operating points) as a URI: FHIR codings name their system by one.
TRIAGE_SYSTEM = f"urn:x-radiograph-triage:{SCHEME}"
SCHEMES = {"DCM": DCM, "SCT": SCT, "LN": LOINC, SCHEME: TRIAGE_SYSTEM}
STATUS = "preliminary"  # an unverified algorithm result, as the SR's VerificationFlag UNVERIFIED says


def build_fhir_report(result: StudyResult, backend: str | None = None) -> DiagnosticReport:
    """The validated DiagnosticReport (with contained Device and Observations) of a DICOM study's result.

    Raises:
        ValueError: the result has no DICOM source header (a PNG or JPEG study).
    """
    if not result.source_headers or result.dicom is None:
        raise ValueError("a FHIR report needs DICOM input: it names the DICOM study it belongs to")
    source = writable_source(result.source_headers[0]).dataset
    study = {"type": "ImagingStudy",
             "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{result.dicom.study_instance_uid}"}}
    subject = _subject(str(source.get("PatientID") or ""))
    common = {"status": STATUS, "derivedFrom": [study], "device": {"reference": "#algorithm"}, **subject}
    site = _concept(BODY_PART_CODES[result.body_part])
    members = [
        _observation("body-part", codes.SCT.FindingSite, common, valueCodeableConcept=site),
        _observation("abnormality", codes.DCM.Probability, common, bodySite=site,
                     valueQuantity=_unitless(round(result.abnormality, 6))),
        _observation("threshold", codes.DCM.ThresholdValue, common, bodySite=site,
                     valueQuantity=_unitless(result.threshold)),
        _observation("label", codes.DCM.Normality, common, bodySite=site,
                     valueCodeableConcept=_concept(LABEL_CODES[result.label])),
        *_triage_members(result, common, site),
    ]
    notes = [*result.warnings, *(f"view {number}: out of distribution" for number, view
                                 in enumerate(result.images, start=1) if view.out_of_distribution)]
    group = _observation("study", codes.DCM.MeasurementGroup, common, bodySite=site,
                         hasMember=[{"reference": f"#{member['id']}"} for member in members],
                         note=[{"text": note} for note in notes] or None)
    report = {
        "resourceType": "DiagnosticReport", "status": STATUS,
        "contained": [_device(result, backend), group, *members],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
                                  "display": "Radiology"}]}],
        "code": {"coding": [{"system": DCM, "code": "126000", "display": "Imaging Measurement Report"},
                            {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]},
        "issued": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "imagingStudy": [study], "result": [{"reference": "#study"}],
        "conclusion": f"{result.label} (abnormality probability {result.abnormality:.3f}, threshold"
                      f" {result.threshold:.3f}, {result.body_part})"
                      + (f"; triage {result.triage}" if result.triage else ""),
        "conclusionCode": [_concept(LABEL_CODES[result.label])],
        **subject,
    }
    accession = str(source.get("AccessionNumber") or "")
    if accession:
        report["basedOn"] = [{"type": "ServiceRequest", "identifier": {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "value": accession}}]
    return DiagnosticReport.model_validate(report)


def _triage_members(result: StudyResult, common: dict[str, Any], site: dict[str, Any]) -> list[dict[str, Any]]:
    """The triage category and the two operating points it was read at, as the SR has them; none without them."""
    if result.triage is None or result.operating_points is None:
        return []
    return [
        _observation("triage", TRIAGE_CATEGORY, common, bodySite=site,
                     valueCodeableConcept=_concept(TRIAGE_CODES[result.triage])),
        *(_observation(key.replace("_", "-"), OPERATING_POINT_CODES[key], common, bodySite=site,
                       valueQuantity=_unitless(result.operating_points[key])) for key in ("rule_out", "rule_in")),
    ]


def _device(result: StudyResult, backend: str | None) -> dict[str, Any]:
    """The algorithm as a contained Device: name, manufacturer, Device UID, model versions, backend."""
    versions = [{"type": {"text": "router model"}, "value": result.models["router"]},
                {"type": {"text": "expert model"}, "value": result.models["expert"]}]
    if backend:
        versions.append({"type": {"text": "backend"}, "value": backend})
    return {"resourceType": "Device", "id": "algorithm", "manufacturer": MANUFACTURER,
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{algorithm_device_uid(result, backend)}"}],
            "deviceName": [{"name": ALGORITHM_NAME, "type": "model-name"}], "version": versions}


def _observation(identifier: str, code: Code, common: dict[str, Any], **values: Any) -> dict[str, Any]:
    """A contained Observation with the report's status, study, device and subject."""
    observation = {"resourceType": "Observation", "id": identifier, "code": _concept(code), **common}
    observation.update({key: value for key, value in values.items() if value is not None})
    return observation


def _concept(code: Code) -> dict[str, Any]:
    """A CodeableConcept of one coding from a pydicom Code."""
    return {"coding": [{"system": SCHEMES[code.scheme_designator], "code": code.value, "display": code.meaning}],
            "text": code.meaning}


def _unitless(value: float) -> dict[str, Any]:
    """A Quantity in UCUM "1" (a probability or a threshold)."""
    return {"value": value, "unit": "1", "system": UCUM, "code": "1"}


def _subject(patient_id: str) -> dict[str, Any]:
    """The subject as a logical Patient reference by the input's Patient ID; nothing when it had none."""
    if not patient_id:
        return {}
    return {"subject": {"type": "Patient", "identifier": {"value": patient_id}}}
