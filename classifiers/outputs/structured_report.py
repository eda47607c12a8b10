"""A study's result as an IHE AI Results SR: a TID 1500 Measurement Report in a Comprehensive 3D SR (highdicom).

Content tree (root DCM 126000 "Imaging Measurement Report"):
  Language, Observer device (TID 1004: the algorithm, its device UID), Procedure reported SCT 168537006 "Plain
  radiography"; Imaging Measurements holds one Measurement Group (TID 1501) for the study, then one per view:
    Tracking Identifier "study" / "view N" and a Tracking Unique Identifier
    Finding Site = SNOMED CT code of the body part (with the view's laterality, SCT Left/Right, when known)
    Algorithm Name / Version / Parameters (TID 4019): "radiograph triage", the expert's file@sha256 prefix,
      aggregation, backend, router and expert versions
    Probability DCM 122157 (NUM, UCUM "1"): the study's (or the view's) abnormality probability
    Threshold Value DCM 122411 (NUM, UCUM "1"): the expert's operating threshold (study group)
    Normality DCM 121402 = SCT 263654008 Abnormal / SCT 17621005 Normal (CID 222; qualitative evaluation, study
      group)
    With the expert's operating points (study group): 99RADTRIAGE "rule-out" and "rule-in" (NUM, UCUM "1"), the
      two thresholds used, and 99RADTRIAGE "triage" = 99RADTRIAGE "flagged" / "indeterminate" / "low" (qualitative
      evaluation); an algorithm parameter "calibrated=true" when the probabilities went through the expert's
      calibration
    Source image (IMAGE): the instances (and frames) scored
    Comment DCM 121106 (TEXT): each study warning; 99RADTRIAGE "ood" (TEXT): a view's out-of-distribution flag
The private codes (no standard concept exists for an out-of-distribution gate or for a triage category at two
operating points) are of one scheme, declared in the Coding Scheme Identification Sequence. The Contributing
Equipment Sequence names the algorithm as processing equipment, with a Device UID that changes with the model versions.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Sequence

import highdicom
from highdicom import sr
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from classifiers.outputs.dicom_attributes import WritableSource, left_out_warning, referable_frames, writable_source
from classifiers.outputs.writer_errors import typed_writer_errors
from classifiers.results import StudyResult, ViewResult

MANUFACTURER = "radiograph triage service"
ALGORITHM_NAME = "radiograph triage"
SERIES_DESCRIPTION = "AI triage result"  # with MANUFACTURER, how a PACS worker finds its own SRs
SERIES_NUMBER = 9001
SCHEME = "99RADTRIAGE"  # private coding scheme: "99" marks a local designator (PS3.16 section 8)
OUT_OF_DISTRIBUTION = Code("ood", SCHEME, "Out-of-distribution input")
TRIAGE_CATEGORY = Code("triage", SCHEME, "Triage category")
TRIAGE_CODES = {  # one per repository.entries.TRIAGE_CATEGORIES
    "flagged": Code("flagged", SCHEME, "Flagged (at or above the rule-in threshold)"),
    "indeterminate": Code("indeterminate", SCHEME, "Indeterminate (between the rule-out and rule-in thresholds)"),
    "low": Code("low", SCHEME, "Low (below the rule-out threshold)"),
}
OPERATING_POINT_CODES = {"rule_out": Code("rule-out", SCHEME, "Rule-out threshold"),
                         "rule_in": Code("rule-in", SCHEME, "Rule-in threshold")}
PROCEDURE = Code("168537006", "SCT", "Plain radiography")
NO_UNITS = codes.UCUM.NoUnits
BODY_PART_CODES: dict[str, Code] = {
    "XR_ELBOW": codes.SCT.ElbowJoint,
    "XR_FINGER": codes.SCT.Finger,
    "XR_FOREARM": codes.SCT.Forearm,
    "XR_HAND": codes.SCT.Hand,
    "XR_HUMERUS": codes.SCT.Humerus,
    "XR_SHOULDER": codes.SCT.Shoulder,
    "XR_WRIST": codes.SCT.WristJoint,
}
LABEL_CODES = {"abnormal": codes.SCT.Abnormal, "normal": codes.SCT.Normal}
LATERALITY_CODES = {"L": codes.SCT.Left, "R": codes.SCT.Right}
ENGLISH = Code("en", "RFC5646", "English")
LO_MAX = 64


@typed_writer_errors("DICOM SR")
def build_structured_report(source_datasets: Sequence[Dataset], result: StudyResult, *,
                            previous_versions: Sequence[Dataset] = (), series_instance_uid: str | None = None,
                            series_number: int = SERIES_NUMBER, instance_number: int = 1,
                            manufacturer: str = MANUFACTURER, backend: str | None = None) -> Dataset:
    """Build the TID 1500 SR of one study's result.

    Args:
        source_datasets: the headers of the study's views (pixel data not needed), one per view, in order.
        result: the pipeline's result for those views.
        previous_versions: earlier SRs of this result that this one supersedes (PredecessorDocumentsSequence).
        series_instance_uid: the SR series; a new series when None.
        backend: the backend that scored (an algorithm parameter), when known.

    Returns:
        A highdicom Comprehensive3DSR (a pydicom Dataset with file meta), same StudyInstanceUID and patient and
        study attributes as the first source (those valid for their VR, see classifiers.outputs.dicom_attributes).

    Raises:
        ValueError: no source dataset.
        classifiers.outputs.dicom_attributes.UnwritableIdentifier: a source UID is not a valid UID.
    """
    if not source_datasets:
        raise ValueError("an SR needs at least one source DICOM instance; PNG and JPEG studies have none")
    writable = [writable_source(dataset) for dataset in source_datasets]
    sources = _unique_instances([source.dataset for source in writable])
    warnings = _warnings(result, writable)
    device_uid = algorithm_device_uid(result, backend)
    report = highdicom.sr.Comprehensive3DSR(
        evidence=sources,
        content=_content(sources, [source.dataset for source in writable], result, warnings, backend, device_uid),
        series_instance_uid=series_instance_uid or highdicom.UID(),
        series_number=series_number,
        sop_instance_uid=highdicom.UID(),
        instance_number=instance_number,
        manufacturer=manufacturer,
        manufacturer_model_name=ALGORITHM_NAME,
        software_versions=software_versions(result),
        is_complete=True,
        previous_versions=list(previous_versions) or None,
        series_description=SERIES_DESCRIPTION,
        contributing_equipment=[processing_equipment(result, device_uid)],
    )
    report.CodingSchemeIdentificationSequence = [coding_scheme_item()]
    return report


def structured_report_bytes(report: Dataset) -> bytes:
    """Serialise an SR (or any object the service writes) as a DICOM Part 10 file (preamble, file meta, dataset)."""
    buffer = io.BytesIO()
    report.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def software_versions(result: StudyResult) -> list[str]:
    """The router's and expert's `file@sha256-prefix`, each within the 64 characters of an LO value."""
    return [result.models["router"][:LO_MAX], result.models["expert"][:LO_MAX]]


def algorithm_device_uid(result: StudyResult, backend: str | None) -> str:
    """A UID of the algorithm as configured: the same for the same model versions and backend, new when they change."""
    identity = "\n".join([ALGORITHM_NAME, result.models["router"], result.models["expert"], backend or ""])
    digest = hashlib.sha256(identity.encode()).digest()[:16]
    return f"2.25.{uuid.UUID(bytes=digest, version=4).int}"  # a UUID-derived UID (PS3.5 B.2), from the identity


def processing_equipment(result: StudyResult, device_uid: str) -> highdicom.ContributingEquipment:
    """The Contributing Equipment item naming the algorithm as processing equipment, with its Device UID."""
    equipment = highdicom.ContributingEquipment(
        manufacturer=MANUFACTURER, purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=ALGORITHM_NAME, software_versions=software_versions(result),
        contribution_description="abnormality triage of the source radiographs")
    equipment.DeviceUID = device_uid
    return equipment


def coding_scheme_item() -> Dataset:
    """The Coding Scheme Identification item declaring the private scheme (out-of-distribution and triage codes)."""
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = "Radiograph triage service codes"
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    return item


def _warnings(result: StudyResult, writable: Sequence[WritableSource]) -> list[str]:
    """The result's warnings, plus the one naming source attributes left out (when not already there)."""
    warning = left_out_warning(keyword for source in writable for keyword in source.left_out)
    return [*result.warnings, warning] if warning and warning not in result.warnings else list(result.warnings)


def _content(sources: Sequence[Dataset], view_sources: Sequence[Dataset], result: StudyResult,
             warnings: Sequence[str], backend: str | None, device_uid: str) -> sr.MeasurementReport:
    """The TID 1500 tree of the module docstring."""
    algorithm = _algorithm(result, backend)
    triage_measurements, triage_evaluations = _triage_items(result)
    study_group = _group("study", result.body_part, _study_laterality(view_sources), algorithm,
                         [sr.Measurement(codes.DCM.Probability, round(result.abnormality, 6), NO_UNITS),
                          sr.Measurement(codes.DCM.ThresholdValue, result.threshold, NO_UNITS), *triage_measurements],
                         [_source_image(source, _frames_of(source, result.images)) for source in sources],
                         [sr.QualitativeEvaluation(codes.DCM.Normality, LABEL_CODES[result.label]),
                          *triage_evaluations])
    study_group[0].ContentSequence.extend(
        sr.TextContentItem(codes.DCM.Comment, warning, sr.RelationshipTypeValues.CONTAINS) for warning in warnings)
    groups = [study_group, *(_view_group(number, view, source, algorithm) for number, (view, source)
                             in enumerate(zip(result.images, view_sources, strict=False), start=1))]
    observer = sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid, name=ALGORITHM_NAME, manufacturer_name=MANUFACTURER, model_name=ALGORITHM_NAME))
    return sr.MeasurementReport(
        observation_context=sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE, imaging_measurements=groups,
        language_of_content_item_and_descendants=sr.LanguageOfContentItemAndDescendants(ENGLISH))


def _triage_items(result: StudyResult) -> tuple[list[sr.Measurement], list[sr.QualitativeEvaluation]]:
    """The operating points used and the triage category at them; nothing when the expert has no operating points."""
    if result.triage is None or result.operating_points is None:
        return [], []
    measurements = [sr.Measurement(code, result.operating_points[name], NO_UNITS)
                    for name, code in OPERATING_POINT_CODES.items()]
    return measurements, [sr.QualitativeEvaluation(TRIAGE_CATEGORY, TRIAGE_CODES[result.triage])]


def _algorithm(result: StudyResult, backend: str | None) -> sr.AlgorithmIdentification:
    """TID 4019: the algorithm, the expert's version, and what else decided the result."""
    parameters = [f"aggregation={result.aggregation}", f"router={result.models['router']}",
                  f"expert={result.models['expert']}", f"threshold_source={result.threshold_source}"]
    if backend:
        parameters.append(f"backend={backend}")
    if result.calibrated:
        parameters.append("calibrated=true")
    return sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=result.models["expert"], parameters=parameters)


def _group(identifier: str, body_part: str, laterality: str | None, algorithm: sr.AlgorithmIdentification,
           measurements: list[sr.Measurement], source_images: list[sr.SourceImageForMeasurementGroup],
           evaluations: list[sr.QualitativeEvaluation] | None = None) -> sr.MeasurementsAndQualitativeEvaluations:
    """One TID 1501 measurement group."""
    site = sr.FindingSite(BODY_PART_CODES[body_part], laterality=LATERALITY_CODES.get(laterality or ""))
    return sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=sr.TrackingIdentifier(uid=highdicom.UID(), identifier=identifier),
        algorithm_id=algorithm, finding_sites=[site], measurements=measurements, source_images=source_images,
        qualitative_evaluations=evaluations)


def _view_group(number: int, view: ViewResult, source: Dataset,
                algorithm: sr.AlgorithmIdentification) -> sr.MeasurementsAndQualitativeEvaluations:
    """The group of one view: its body part, its probability, its image (and frame), its out-of-domain flag."""
    frames = [view.dicom.frame] if view.dicom is not None else []
    # The frame is named here too: a multi-frame instance of a single-frame IOD cannot reference its frames.
    frame_name = f" frame {frames[0]}" if frames and int(source.get("NumberOfFrames") or 1) > 1 else ""
    group = _group(f"view {number}{frame_name}", view.body_part, _laterality(source), algorithm,
                   [sr.Measurement(codes.DCM.Probability, round(view.abnormality, 6), NO_UNITS)],
                   [_source_image(source, frames)])
    if view.out_of_distribution is not None:
        flag = "out of distribution" if view.out_of_distribution else "in distribution"
        group[0].ContentSequence.append(
            sr.TextContentItem(OUT_OF_DISTRIBUTION, flag, sr.RelationshipTypeValues.CONTAINS))
    return group


def _source_image(source: Dataset, frames: list[int]) -> sr.SourceImageForMeasurementGroup:
    """An IMAGE item pointing at one input instance (and its frames, when its IOD is multi-frame)."""
    return sr.SourceImageForMeasurementGroup(source.SOPClassUID, source.SOPInstanceUID,
                                             referenced_frame_numbers=referable_frames(source, frames))


def _laterality(source: Dataset) -> str | None:
    """R or L from the view's Image Laterality (or the series' Laterality); None otherwise."""
    value = source.get("ImageLaterality") or source.get("Laterality")
    return value if value in LATERALITY_CODES else None


def _study_laterality(view_sources: Sequence[Dataset]) -> str | None:
    """The one laterality of the study's views, None when unknown or mixed."""
    found = {_laterality(source) for source in view_sources}
    return found.pop() if len(found) == 1 else None


def _frames_of(source: Dataset, views: Sequence[ViewResult]) -> list[int]:
    """The frame numbers of `source` that the result's views came from."""
    return [view.dicom.frame for view in views
            if view.dicom is not None and view.dicom.sop_instance_uid == source.SOPInstanceUID]


def _unique_instances(source_datasets: Sequence[Dataset]) -> list[Dataset]:
    """One dataset per SOPInstanceUID, in first-seen order (a multi-frame instance gives several views)."""
    unique: dict[str, Dataset] = {}
    for dataset in source_datasets:
        unique.setdefault(str(dataset.SOPInstanceUID), dataset)
    return list(unique.values())
