"""The worker's own SRs in an Orthanc study: how they are recognised and what they say."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from classifiers.dicom_output.structured_report import BODY_PART_CODES, LABEL_CODES, MANUFACTURER, SERIES_DESCRIPTION
from pacs.archive import StudyArchive


@dataclass(frozen=True)
class WorkerReport:
    """One SR this service wrote into the study: its Orthanc id, its dataset, the instances it scored."""

    orthanc_id: str
    dataset: Dataset
    referenced_instances: frozenset[str]  # SOP instance UIDs of its Source image items


@dataclass(frozen=True)
class ReportSummary:
    """The body part, probability and label an SR states."""

    body_part: str
    abnormality: float
    label: str


def is_worker_series(series_tags: dict[str, str]) -> bool:
    """True for an SR series written by this service (Modality SR, its Manufacturer and SeriesDescription)."""
    return (series_tags.get("Modality") == "SR" and series_tags.get("Manufacturer") == MANUFACTURER
            and series_tags.get("SeriesDescription") == SERIES_DESCRIPTION)


def fetch_worker_report(client: StudyArchive, instance_id: str) -> WorkerReport:
    """Download one of the worker's SRs and read the instances it references."""
    dataset = pydicom.dcmread(io.BytesIO(client.fetch_instance(instance_id)))
    referenced = frozenset(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                           for item in dataset.get("ContentSequence", []) if item.get("ValueType") == "IMAGE")
    return WorkerReport(instance_id, dataset, referenced)


def summarise_report(dataset: Dataset) -> ReportSummary:
    """The body part, probability and label of a worker SR (see classifiers.dicom_output.structured_report)."""
    parts = {code.value: part for part, code in BODY_PART_CODES.items()}
    labels = {code.value: label for label, code in LABEL_CODES.items()}
    body_part, abnormality, label = "", float("nan"), ""
    for item in dataset.get("ContentSequence", []):
        concept = item.ConceptNameCodeSequence[0].CodeValue
        if concept == codes.SCT.FindingSite.value:
            body_part = parts.get(item.ConceptCodeSequence[0].CodeValue, "")
        elif concept == codes.DCM.Probability.value:
            abnormality = float(item.MeasuredValueSequence[0].NumericValue)
        elif concept == codes.DCM.Finding.value:
            label = labels.get(item.ConceptCodeSequence[0].CodeValue, "")
    return ReportSummary(body_part, abnormality, label)
