"""The SR format of the earlier release (a flat Comprehensive SR with 99RADTRIAGE codes), rebuilt for tests.

A copy of `classifiers/outputs/structured_report.py` as it was before the TID 1500 report (commit facf60a), so the
tests can put an SR "written by the earlier release" in a study and check it is still recognised.

Content tree (root: LN 18748-4 "Diagnostic imaging report", every child CONTAINS):
  SCT 363698007 Finding Site = the body part (SNOMED CT code of the part)
  DCM 122157 Probability = the study's abnormality probability (UCUM "1")
  DCM 121071 Finding = SCT 263654008 Abnormal or SCT 17621005 Normal
  DCM 122411 Threshold Value = the expert's decision threshold (UCUM "1")
  DCM 111001 Algorithm Name = "radiograph triage", and 99RADTRIAGE codes for the aggregation, the router
  and expert model versions and each study warning
  DCM 121324 Source image = one reference per input instance (its frame numbers when multi-frame)
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import highdicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from classifiers.outputs.writer_errors import typed_writer_errors
from classifiers.results import StudyResult

MANUFACTURER = "radiograph triage service"
ALGORITHM_NAME = "radiograph triage"
SERIES_DESCRIPTION = "AI triage result"  # with MANUFACTURER, how a PACS worker finds its own SRs
SERIES_NUMBER = 9001
SCHEME = "99RADTRIAGE"  # private coding scheme: "99" marks a local designator (PS3.16 section 8)
DOCUMENT_TITLE = Code("18748-4", "LN", "Diagnostic imaging report")
AGGREGATION = Code("aggregation", SCHEME, "View aggregation")
ROUTER_MODEL = Code("router-model", SCHEME, "Router model version")
EXPERT_MODEL = Code("expert-model", SCHEME, "Expert model version")
WARNING = Code("warning", SCHEME, "Warning")
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
# Type 2 attributes highdicom reads from the first source; empty when a source lacks them.
REQUIRED_EMPTY = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                  "StudyDate", "StudyTime", "ReferringPhysicianName")


def build_legacy_report(source_datasets: Sequence[Dataset], result: StudyResult, *,
                            previous_versions: Sequence[Dataset] = (), series_instance_uid: str | None = None,
                            series_number: int = SERIES_NUMBER, instance_number: int = 1,
                            manufacturer: str = MANUFACTURER) -> Dataset:
    """Build the earlier release's Comprehensive SR of one study's result.

    Args:
        source_datasets: the headers of the study's input instances (pixel data not needed), in order.
        result: the pipeline's result for those instances.
        previous_versions: earlier SRs of this result that this one supersedes (PredecessorDocumentsSequence).
        series_instance_uid: the SR series; a new series when None.

    Returns:
        A highdicom ComprehensiveSR (a pydicom Dataset with file meta), same StudyInstanceUID and patient
        and study modules as the first source, in a new series.

    Raises:
        ValueError: no source dataset.
        ReportNotWritable: highdicom or pydicom refuse the sources' values (the attributes are named).
    """
    if not source_datasets:
        raise ValueError("an SR needs at least one source DICOM instance; PNG and JPEG studies have none")
    sources = _unique_instances(source_datasets)
    report = highdicom.sr.ComprehensiveSR(
        evidence=[_with_type2_attributes(sources[0]), *sources[1:]],
        content=_content(sources, result),
        series_instance_uid=series_instance_uid or highdicom.UID(),
        series_number=series_number,
        sop_instance_uid=highdicom.UID(),
        instance_number=instance_number,
        manufacturer=manufacturer,
        is_complete=True,
        previous_versions=list(previous_versions) or None,
        series_description=SERIES_DESCRIPTION,
    )
    report.copy_patient_and_study_information(sources[0])
    return report


@typed_writer_errors("DICOM output")
def structured_report_bytes(report: Dataset) -> bytes:
    """Serialise an SR as a DICOM Part 10 file (preamble, file meta, dataset)."""
    buffer = io.BytesIO()
    report.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _content(sources: Sequence[Dataset], result: StudyResult) -> highdicom.sr.ContainerContentItem:
    """The content tree of the module docstring."""
    contains = highdicom.sr.RelationshipTypeValues.CONTAINS
    sr = highdicom.sr
    items = [
        sr.CodeContentItem(codes.SCT.FindingSite, BODY_PART_CODES[result.body_part], contains),
        sr.NumContentItem(codes.DCM.Probability, round(result.abnormality, 6), NO_UNITS, relationship_type=contains),
        sr.CodeContentItem(codes.DCM.Finding, LABEL_CODES[result.label], contains),
        sr.NumContentItem(codes.DCM.ThresholdValue, result.threshold, NO_UNITS, relationship_type=contains),
        sr.TextContentItem(codes.DCM.AlgorithmName, ALGORITHM_NAME, contains),
        sr.TextContentItem(AGGREGATION, result.aggregation, contains),
        sr.TextContentItem(ROUTER_MODEL, result.models["router"], contains),
        sr.TextContentItem(EXPERT_MODEL, result.models["expert"], contains),
        *(sr.TextContentItem(WARNING, warning, contains) for warning in result.warnings),
        *(_source_reference(source, _frames_of(source, result)) for source in sources),
    ]
    root = sr.ContainerContentItem(DOCUMENT_TITLE)
    root.ContentSequence = items
    return root


def _source_reference(source: Dataset, frames: list[int]) -> highdicom.sr.ImageContentItem:
    """An IMAGE item pointing at one input instance (and its frames when it has several)."""
    multi_frame = int(source.get("NumberOfFrames") or 1) > 1
    return highdicom.sr.ImageContentItem(
        codes.DCM.SourceImage, source.SOPClassUID, source.SOPInstanceUID,
        referenced_frame_numbers=frames if multi_frame and frames else None,
        relationship_type=highdicom.sr.RelationshipTypeValues.CONTAINS,
    )


def _frames_of(source: Dataset, result: StudyResult) -> list[int]:
    """The frame numbers of `source` that the result's views came from."""
    return [view.dicom.frame for view in result.images
            if view.dicom is not None and view.dicom.sop_instance_uid == source.SOPInstanceUID]


def _unique_instances(source_datasets: Sequence[Dataset]) -> list[Dataset]:
    """One dataset per SOPInstanceUID, in first-seen order (a multi-frame instance gives several views)."""
    unique: dict[str, Dataset] = {}
    for dataset in source_datasets:
        unique.setdefault(str(dataset.SOPInstanceUID), dataset)
    return list(unique.values())


def _with_type2_attributes(dataset: Dataset) -> Dataset:
    """A shallow copy holding every attribute highdicom reads from the first source, empty where absent."""
    completed = Dataset({tag: dataset[tag] for tag in dataset.keys()})
    completed.file_meta = dataset.file_meta
    for keyword in REQUIRED_EMPTY:
        if keyword not in completed:
            setattr(completed, keyword, None)
    return completed
