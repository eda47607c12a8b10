"""Reading back the service's own SRs: how they are recognised, what they reference and what they say.

Two formats are read: the TID 1500 Measurement Report of `classifiers.outputs.structured_report`, and the flat
Comprehensive SR (root LN 18748-4, every item at the top level) that the earlier release wrote. Both are
series with Modality SR, this service's Manufacturer and SeriesDescription, so an upgrade never scores a study
twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from classifiers.outputs.structured_report import (
    BODY_PART_CODES,
    LABEL_CODES,
    MANUFACTURER,
    SCHEME,
    SERIES_DESCRIPTION,
    TRIAGE_CATEGORY,
    TRIAGE_CODES,
)

MEASUREMENT_REPORT = codes.DCM.ImagingMeasurementReport.value  # root of the TID 1500 format
IMAGING_MEASUREMENTS = codes.DCM.ImagingMeasurements.value
MEASUREMENT_GROUP = codes.DCM.MeasurementGroup.value
# The label's concept: DCM 121402 Normality (TID 1500 format), DCM 121071 Finding (the earlier format).
LABEL_CONCEPTS = (codes.DCM.Normality.value, codes.DCM.Finding.value)


@dataclass(frozen=True)
class ReportSummary:
    """The body part, probability, label and triage category an SR states (category None when it states none)."""

    body_part: str
    abnormality: float
    label: str
    triage: str | None = None


def is_service_series(series_tags: Mapping[str, str]) -> bool:
    """True for an SR series written by this service (Modality SR, its Manufacturer and SeriesDescription)."""
    return (series_tags.get("Modality") == "SR" and series_tags.get("Manufacturer") == MANUFACTURER
            and series_tags.get("SeriesDescription") == SERIES_DESCRIPTION)


def referenced_instances(report: Dataset) -> frozenset[str]:
    """SOP Instance UIDs of every IMAGE item of the SR's tree (the instances it scored), in either format."""
    return frozenset(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                     for item in _walk(report) if item.get("ValueType") == "IMAGE" and "ReferencedSOPSequence" in item)


def summarise_report(report: Dataset) -> ReportSummary:
    """The study's body part, probability, label and triage category as the SR states them (TID 1500 or the earlier
    format, which has no category)."""
    parts = {code.value: part for part, code in BODY_PART_CODES.items()}
    labels = {code.value: label for label, code in LABEL_CODES.items()}
    body_part, abnormality, label, triage = "", float("nan"), "", None
    for item in _study_items(report):
        concept = _concept(item)
        if concept == codes.SCT.FindingSite.value and "ConceptCodeSequence" in item:
            body_part = parts.get(item.ConceptCodeSequence[0].CodeValue, "")
        elif concept == codes.DCM.Probability.value and "MeasuredValueSequence" in item:
            abnormality = float(item.MeasuredValueSequence[0].NumericValue)
        elif concept in LABEL_CONCEPTS and "ConceptCodeSequence" in item:
            label = labels.get(item.ConceptCodeSequence[0].CodeValue, "")
        elif _is_triage_item(item):
            triage = _triage_category(item.ConceptCodeSequence[0])
    return ReportSummary(body_part, abnormality, label, triage)


def _is_triage_item(item: Dataset) -> bool:
    """True for the study group's 99RADTRIAGE "triage" item with a coded value."""
    names = item.get("ConceptNameCodeSequence") or []
    return (bool(names) and names[0].CodeValue == TRIAGE_CATEGORY.value
            and names[0].CodingSchemeDesignator == SCHEME and "ConceptCodeSequence" in item)


def _triage_category(value: Dataset) -> str | None:
    """The category of a coded triage value; None for a code of another scheme or an unknown value."""
    categories = {code.value: category for category, code in TRIAGE_CODES.items()}
    return categories.get(value.CodeValue) if value.CodingSchemeDesignator == SCHEME else None


def _study_items(report: Dataset) -> list[Dataset]:
    """The items that describe the study: the first measurement group's (TID 1500) or the root's (earlier)."""
    if _concept(report) != MEASUREMENT_REPORT:
        return list(report.get("ContentSequence", []))
    for container in report.get("ContentSequence", []):
        if _concept(container) == IMAGING_MEASUREMENTS:
            groups = [group for group in container.get("ContentSequence", []) if _concept(group) == MEASUREMENT_GROUP]
            return list(groups[0].get("ContentSequence", [])) if groups else []
    return []


def _concept(item: Dataset) -> str:
    """The code value of an item's concept name ("" when it has none)."""
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].CodeValue) if names else ""


def _walk(item: Dataset) -> Iterator[Dataset]:
    """Every content item below `item`, depth first."""
    for child in item.get("ContentSequence", []):
        yield child
        yield from _walk(child)
