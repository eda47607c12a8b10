"""Reading the service's SR in tests, independently of classifiers.outputs.sr_reader: its result items."""

from __future__ import annotations

import pydicom

MEASUREMENT_REPORT = "126000"  # TID 1500 Imaging Measurement Report (DCM)
IMAGING_MEASUREMENTS = "126010"


def study_items(report: pydicom.Dataset) -> list[pydicom.Dataset]:
    """The items stating the study's result: the first measurement group's (TID 1500) or the root's (earlier)."""
    if report.ConceptNameCodeSequence[0].CodeValue != MEASUREMENT_REPORT:
        return list(report.ContentSequence)
    [measurements] = [item for item in report.ContentSequence
                      if item.ConceptNameCodeSequence[0].CodeValue == IMAGING_MEASUREMENTS]
    return list(measurements.ContentSequence[0].ContentSequence)


def content_value(report: pydicom.Dataset, meaning: str):
    """A NUM item's number or a CODE item's meaning, by concept name."""
    for item in study_items(report):
        if item.ConceptNameCodeSequence[0].CodeMeaning == meaning:
            if item.ValueType == "NUM":
                return float(item.MeasuredValueSequence[0].NumericValue)
            return item.ConceptCodeSequence[0].CodeMeaning
    raise KeyError(meaning)


def referenced_instances(report: pydicom.Dataset) -> set[str]:
    """SOP Instance UIDs of the study group's source images."""
    return {str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            for item in study_items(report) if item.ValueType == "IMAGE"}
