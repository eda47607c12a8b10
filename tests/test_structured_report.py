"""The TID 1500 SR of a result: built with highdicom, read back with pydicom and with highdicom field by field."""

from __future__ import annotations

import dataclasses
import io

import highdicom
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage, MultiFrameGrayscaleByteSecondaryCaptureImageStorage, generate_uid

from classifiers.decoding import decode_views
from classifiers.outputs.structured_report import (
    BODY_PART_CODES,
    MANUFACTURER,
    OPERATING_POINT_CODES,
    SCHEME,
    TRIAGE_CATEGORY,
    TRIAGE_CODES,
    algorithm_device_uid,
    build_structured_report,
    structured_report_bytes,
)
from classifiers.results import ViewInput
from tests.support.dicom_factory import PATIENT_ATTRIBUTES, make_dataset, synthetic_radiograph, to_bytes
from tests.support.dicom_validation import dciodvfy_errors

PIXELS = np.round(synthetic_radiograph("XR_HAND", seed=5) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def study(tiny_pipeline):
    """A two-instance DICOM study (the second a 2-frame secondary capture), decoded and scored."""
    study_uid = generate_uid()
    datasets = [make_dataset(PIXELS, study_uid=study_uid),
                make_dataset(np.stack([PIXELS, PIXELS]), study_uid=study_uid, modality="OT",
                             extra={"SOPClassUID": MultiFrameGrayscaleByteSecondaryCaptureImageStorage})]
    views = [ViewInput(f"view{index}.dcm", to_bytes(dataset)) for index, dataset in enumerate(datasets)]
    decoded = decode_views(views, tiny_pipeline.settings.image_limits)
    result = tiny_pipeline.predict_study(views)
    return datasets, decoded, result


def read_back(decoded, result, **options) -> pydicom.Dataset:
    """The SR of `result` as a file, read again by pydicom."""
    report = build_structured_report([view.header for view in decoded], result, **options)
    return pydicom.dcmread(io.BytesIO(structured_report_bytes(report)))


def concept(item: pydicom.Dataset) -> tuple[str, str]:
    """(code value, scheme) of an item's concept name."""
    name = item.ConceptNameCodeSequence[0]
    return name.CodeValue, name.CodingSchemeDesignator


def items_of(container: pydicom.Dataset, code) -> list[pydicom.Dataset]:
    """The children of `container` whose concept name is `code`."""
    return [item for item in container.ContentSequence if concept(item) == (code.value, code.scheme_designator)]


def test_sr_read_back_field_by_field(study) -> None:
    datasets, decoded, result = study
    report = read_back(decoded, result, backend="tensorflow")
    assert report.SOPClassUID == Comprehensive3DSRStorage and report.Modality == "SR"
    assert report.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert report.SeriesInstanceUID not in {dataset.SeriesInstanceUID for dataset in datasets}
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID"):
        assert str(report[keyword].value) == PATIENT_ATTRIBUTES[keyword]
    assert "PatientAddress" not in report and "InstitutionName" not in report  # only what the policy copies
    assert report.CompletionFlag == "COMPLETE" and report.VerificationFlag == "UNVERIFIED"
    assert concept(report) == ("126000", "DCM")
    assert items_of(report, codes.DCM.ProcedureReported)[0].ConceptCodeSequence[0].CodeValue == "168537006"
    [scheme] = report.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == SCHEME
    [equipment] = [item for item in report.ContributingEquipmentSequence if item.Manufacturer == MANUFACTURER]
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"  # Processing Equipment
    assert equipment.ManufacturerModelName == "radiograph triage"
    assert list(equipment.SoftwareVersions) == [result.models["router"], result.models["expert"]]
    assert equipment.DeviceUID == algorithm_device_uid(result, "tensorflow")

    [measurements] = items_of(report, codes.DCM.ImagingMeasurements)
    study_group, *view_groups = measurements.ContentSequence
    assert [items_of(group, codes.DCM.TrackingIdentifier)[0].TextValue for group in measurements.ContentSequence] \
        == ["study", "view 1", "view 2 frame 1", "view 3 frame 2"]
    site = items_of(study_group, codes.SCT.FindingSite)[0]
    assert (site.ConceptCodeSequence[0].CodeValue, site.ConceptCodeSequence[0].CodingSchemeDesignator) == (
        BODY_PART_CODES[result.body_part].value, "SCT")
    assert site.ContentSequence[0].ConceptCodeSequence[0].CodeValue == codes.SCT.Left.value  # ImageLaterality L
    probability = items_of(study_group, codes.DCM.Probability)[0].MeasuredValueSequence[0]
    assert float(probability.NumericValue) == pytest.approx(result.abnormality, abs=1e-6)
    assert probability.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    threshold = items_of(study_group, codes.DCM.ThresholdValue)[0]
    assert float(threshold.MeasuredValueSequence[0].NumericValue) == result.threshold
    finding = items_of(study_group, codes.DCM.Normality)[0].ConceptCodeSequence[0]
    assert finding.CodeValue == {"abnormal": "263654008", "normal": "17621005"}[result.label]
    assert items_of(study_group, codes.DCM.AlgorithmName)[0].TextValue == "radiograph triage"
    assert items_of(study_group, codes.DCM.AlgorithmVersion)[0].TextValue == result.models["expert"]
    parameters = [item.TextValue for item in items_of(study_group, codes.DCM.AlgorithmParameters)]
    assert "aggregation=mean" in parameters and "backend=tensorflow" in parameters
    comments = [item.TextValue for item in items_of(study_group, codes.DCM.Comment)]
    assert comments == result.warnings
    references = [item.ReferencedSOPSequence[0] for item in study_group.ContentSequence if item.ValueType == "IMAGE"]
    assert [reference.ReferencedSOPInstanceUID for reference in references] == [d.SOPInstanceUID for d in datasets]
    assert "ReferencedFrameNumber" not in references[0] and list(references[1].ReferencedFrameNumber) == [1, 2]
    for group, view in zip(view_groups, result.images, strict=True):
        value = items_of(group, codes.DCM.Probability)[0].MeasuredValueSequence[0].NumericValue
        assert float(value) == pytest.approx(view.abnormality, abs=1e-6)
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == datasets[0].StudyInstanceUID


def test_sr_parses_as_highdicom_measurement_report(study) -> None:
    _, decoded, result = study
    parsed = highdicom.sr.Comprehensive3DSR.from_dataset(read_back(decoded, result))
    groups = parsed.content.get_image_measurement_groups()
    assert [group.tracking_identifier for group in groups] == ["study", "view 1", "view 2 frame 1", "view 3 frame 2"]
    study_group = groups[0]
    [probability] = study_group.get_measurements(name=codes.DCM.Probability)
    assert probability.value == pytest.approx(result.abnormality, abs=1e-6)
    assert probability.unit == codes.UCUM.NoUnits
    [evaluation] = study_group.get_qualitative_evaluations(name=codes.DCM.Normality)
    assert evaluation.value.value == {"abnormal": "263654008", "normal": "17621005"}[result.label]
    assert study_group.finding_sites[0].value == BODY_PART_CODES[result.body_part]
    find = highdicom.sr.utils.find_content_items
    assert [item.value for item in find(study_group[0], name=codes.DCM.AlgorithmName)] == ["radiograph triage"]
    assert [item.value for item in find(study_group[0], name=codes.DCM.AlgorithmVersion)] == [result.models["expert"]]
    assert [image.referenced_sop_instance_uid for image in study_group.source_images] == [
        view.header.SOPInstanceUID for view in decoded[:2]]
    [observer] = parsed.content.get_observer_contexts(observer_type=codes.DCM.Device)
    assert observer.observer_identifying_attributes.name == "radiograph triage"


def test_out_of_distribution_flag_is_a_text_item_of_the_view_group(study) -> None:
    _, decoded, result = study
    flagged = dataclasses.replace(result, images=[dataclasses.replace(view, out_of_distribution=index == 0)
                                                  for index, view in enumerate(result.images)])
    report = read_back(decoded, flagged)
    [measurements] = items_of(report, pydicom.sr.codedict.codes.DCM.ImagingMeasurements)
    flags = [[item.TextValue for item in group.ContentSequence if concept(item) == ("ood", SCHEME)]
             for group in measurements.ContentSequence]
    assert flags == [[], ["out of distribution"], ["in distribution"], ["in distribution"]]


def test_device_uid_changes_with_the_model_versions(study) -> None:
    result = study[2]
    changed = dataclasses.replace(result, models={**result.models, "expert": "XR_HAND.h5@0000000000"})
    assert algorithm_device_uid(result, "onnx") == algorithm_device_uid(result, "onnx")
    assert algorithm_device_uid(changed, "onnx") != algorithm_device_uid(result, "onnx")
    assert algorithm_device_uid(result, "int8") != algorithm_device_uid(result, "onnx")


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
    report = build_structured_report([bare], dataclasses.replace(result, images=result.images[:1]))
    assert report.PatientID in ("", None) and report.StudyInstanceUID == header.StudyInstanceUID


def test_sr_needs_a_dicom_source(study) -> None:
    with pytest.raises(ValueError, match="PNG and JPEG studies have none"):
        build_structured_report([], study[2])


TRIAGED = {"triage": "indeterminate", "operating_points": {"rule_out": 0.125, "rule_in": 0.75}, "calibrated": True}


@pytest.mark.parametrize("category", ["flagged", "indeterminate", "low"])
def test_triage_category_and_operating_points_are_items_of_the_study_group(study, category) -> None:
    _, decoded, result = study
    report = read_back(decoded, dataclasses.replace(result, **(TRIAGED | {"triage": category})))
    [measurements] = items_of(report, codes.DCM.ImagingMeasurements)
    study_group, *view_groups = measurements.ContentSequence
    [triage] = [item for item in study_group.ContentSequence if concept(item) == ("triage", SCHEME)]
    value = triage.ConceptCodeSequence[0]
    assert (triage.ValueType, value.CodeValue, value.CodingSchemeDesignator) == ("CODE", category, SCHEME)
    points = {concept(item)[0]: float(item.MeasuredValueSequence[0].NumericValue)
              for item in study_group.ContentSequence if concept(item) in (("rule-out", SCHEME), ("rule-in", SCHEME))}
    assert points == {"rule-out": 0.125, "rule-in": 0.75}
    parameters = [item.TextValue for item in items_of(study_group, codes.DCM.AlgorithmParameters)]
    assert "calibrated=true" in parameters
    assert not any(concept(item)[1] == SCHEME and concept(item)[0] != "ood"
                   for group in view_groups for item in group.ContentSequence)  # the category is the study's


def test_without_operating_points_the_sr_has_no_triage_item(study) -> None:
    _, decoded, result = study
    assert result.triage is None
    report = read_back(decoded, result)
    [measurements] = items_of(report, codes.DCM.ImagingMeasurements)
    study_group = measurements.ContentSequence[0]
    assert [concept(item) for item in study_group.ContentSequence if concept(item)[1] == SCHEME] == []
    assert not any(item.TextValue.startswith("calibrated=") for item in items_of(study_group,
                                                                                 codes.DCM.AlgorithmParameters))


def test_the_triage_category_parses_as_a_highdicom_qualitative_evaluation(study) -> None:
    _, decoded, result = study
    parsed = highdicom.sr.Comprehensive3DSR.from_dataset(read_back(decoded, dataclasses.replace(result, **TRIAGED)))
    study_group = parsed.content.get_image_measurement_groups()[0]
    [evaluation] = study_group.get_qualitative_evaluations(name=TRIAGE_CATEGORY)
    assert evaluation.value == TRIAGE_CODES["indeterminate"]
    [rule_in] = study_group.get_measurements(name=OPERATING_POINT_CODES["rule_in"])
    assert rule_in.value == pytest.approx(0.75) and rule_in.unit == codes.UCUM.NoUnits


@pytest.mark.parametrize("category", ["flagged", "indeterminate", "low"])
def test_an_sr_with_a_triage_category_passes_dciodvfy(study, tmp_path, category) -> None:
    _, decoded, result = study
    triaged = dataclasses.replace(result, **(TRIAGED | {"triage": category}))
    report = build_structured_report([view.header for view in decoded], triaged, backend="tensorflow")
    assert dciodvfy_errors(structured_report_bytes(report), tmp_path, category) == []
