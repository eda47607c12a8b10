"""The DICOM SR of a result: built with highdicom, read back with pydicom and highdicom field by field."""

from __future__ import annotations

import io

import highdicom
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import ComprehensiveSRStorage, generate_uid

from classifiers.decoding import decode_views
from classifiers.dicom_output.structured_report import BODY_PART_CODES, build_structured_report, structured_report_bytes
from classifiers.results import ViewInput
from tests.support.dicom_factory import PATIENT_ATTRIBUTES, make_dataset, synthetic_radiograph, to_bytes


@pytest.fixture(scope="module")
def study(tiny_pipeline):
    """A two-instance DICOM study (one of them 2-frame), decoded and scored by the tiny pipeline."""
    pixels = np.round(synthetic_radiograph("XR_HAND", seed=5) * 255).astype(np.uint8)
    study_uid = generate_uid()
    datasets = [make_dataset(pixels, study_uid=study_uid),
                make_dataset(np.stack([pixels, pixels]), study_uid=study_uid)]
    views = [ViewInput(f"view{index}.dcm", to_bytes(dataset)) for index, dataset in enumerate(datasets)]
    decoded = decode_views(views, tiny_pipeline.settings.image_limits)
    result = tiny_pipeline.predict_study(views)
    return datasets, decoded, result


def items_by_meaning(report: pydicom.Dataset) -> dict[str, list[pydicom.Dataset]]:
    """Content items of the root container grouped by concept name meaning."""
    grouped: dict[str, list[pydicom.Dataset]] = {}
    for item in report.ContentSequence:
        grouped.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item)
    return grouped


def test_sr_read_back_field_by_field(study) -> None:
    datasets, decoded, result = study
    data = structured_report_bytes(build_structured_report([view.header for view in decoded], result))
    report = pydicom.dcmread(io.BytesIO(data))
    assert report.SOPClassUID == ComprehensiveSRStorage and report.Modality == "SR"
    assert report.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert report.SeriesInstanceUID not in {dataset.SeriesInstanceUID for dataset in datasets}
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID"):
        assert str(report[keyword].value) == PATIENT_ATTRIBUTES[keyword]
    assert report.CompletionFlag == "COMPLETE" and report.VerificationFlag == "UNVERIFIED"
    assert report.ConceptNameCodeSequence[0].CodeValue == "18748-4"

    items = items_by_meaning(report)
    site = items["Finding Site"][0].ConceptCodeSequence[0]
    assert (site.CodeValue, site.CodingSchemeDesignator) == (BODY_PART_CODES[result.body_part].value, "SCT")
    probability = items["Probability"][0].MeasuredValueSequence[0]
    assert float(probability.NumericValue) == pytest.approx(result.abnormality, abs=1e-6)
    assert probability.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    finding = items["Finding"][0].ConceptCodeSequence[0]
    assert finding.CodeValue == {"abnormal": "263654008", "normal": "17621005"}[result.label]
    assert float(items["Threshold Value"][0].MeasuredValueSequence[0].NumericValue) == result.threshold
    assert items["Router model version"][0].TextValue == result.models["router"]
    assert items["Expert model version"][0].TextValue == result.models["expert"]
    assert items["View aggregation"][0].TextValue == "mean"
    references = [item.ReferencedSOPSequence[0] for item in items["Source image"]]
    assert [reference.ReferencedSOPInstanceUID for reference in references] == [d.SOPInstanceUID for d in datasets]
    assert all(reference.ReferencedSOPClassUID == datasets[0].SOPClassUID for reference in references)
    assert "ReferencedFrameNumber" not in references[0] and list(references[1].ReferencedFrameNumber) == [1, 2]
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert {series.SeriesInstanceUID for series in evidence.ReferencedSeriesSequence} == {
        dataset.SeriesInstanceUID for dataset in datasets}


def test_sr_parses_as_highdicom_comprehensive_sr(study) -> None:
    _, decoded, result = study
    data = structured_report_bytes(build_structured_report([view.header for view in decoded], result))
    parsed = highdicom.sr.ComprehensiveSR.from_dataset(pydicom.dcmread(io.BytesIO(data)))
    sources = highdicom.sr.utils.find_content_items(parsed, name=codes.DCM.SourceImage)
    assert [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in sources] == [
        view.header.SOPInstanceUID for view in decoded[:2]]
    probability = highdicom.sr.NumContentItem.from_dataset(
        highdicom.sr.utils.find_content_items(parsed, name=codes.DCM.Probability)[0])
    assert probability.value == pytest.approx(result.abnormality, abs=1e-6)


def test_previous_versions_become_predecessor_documents(study) -> None:
    _, decoded, result = study
    headers = [view.header for view in decoded]
    first = build_structured_report(headers, result)
    second = build_structured_report(headers, result, previous_versions=[first],
                                     series_instance_uid=first.SeriesInstanceUID, instance_number=2)
    predecessor = second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert second.SeriesInstanceUID == first.SeriesInstanceUID and second.InstanceNumber == 2
    assert second.SOPInstanceUID != first.SOPInstanceUID


def test_sources_without_patient_attributes(study) -> None:
    _, decoded, result = study
    header = decoded[0].header
    bare = pydicom.Dataset({tag: header[tag] for tag in header.keys()
                            if header[tag].keyword not in ("PatientID", "PatientName", "AccessionNumber")})
    bare.file_meta = header.file_meta
    report = build_structured_report([bare], result)
    assert report.PatientID in ("", None) and report.StudyInstanceUID == header.StudyInstanceUID


def test_sr_needs_a_dicom_source(study) -> None:
    with pytest.raises(ValueError, match="PNG and JPEG studies have none"):
        build_structured_report([], study[2])
