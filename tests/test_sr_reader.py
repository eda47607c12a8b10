"""Reading back the service's SRs, TID 1500 and the earlier release's flat format alike."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from classifiers.decoding import decode_views
from classifiers.outputs.dicom_outputs import build_dicom_outputs
from classifiers.outputs.sr_reader import is_service_series, referenced_instances, summarise_report
from classifiers.outputs.structured_report import structured_report_bytes
from classifiers.results import ViewInput
from tests.support.dicom_factory import make_dataset, synthetic_radiograph, to_bytes
from tests.support.legacy_report import build_legacy_report

PIXELS = np.round(synthetic_radiograph("XR_SHOULDER", seed=3) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def scored(tiny_pipeline):
    """A two-view study, decoded and scored, and the SOP Instance UIDs of its views."""
    study_uid = generate_uid()
    files = [to_bytes(make_dataset(PIXELS, study_uid=study_uid)), to_bytes(make_dataset(PIXELS.T, study_uid=study_uid))]
    inputs = [ViewInput(f"{index}.dcm", data) for index, data in enumerate(files)]
    views = decode_views(inputs, tiny_pipeline.settings.image_limits)  # the test's own reading of the headers
    return tiny_pipeline.predict_study(inputs), {view.header.SOPInstanceUID for view in views}, views


def both_formats(result, views) -> dict[str, pydicom.Dataset]:
    """The SR of the result in the current format and in the earlier release's, as files read back."""
    current = build_dicom_outputs(result).report
    legacy = build_legacy_report([view.header for view in views], result)
    return {name: pydicom.dcmread(io.BytesIO(structured_report_bytes(report)))
            for name, report in (("tid1500", current), ("legacy", legacy))}


@pytest.mark.parametrize("form", ["tid1500", "legacy"])
def test_both_formats_read_back_the_same_study(scored, form) -> None:
    result, instances, views = scored
    report = both_formats(result, views)[form]
    summary = summarise_report(report)
    assert (summary.body_part, summary.label) == (result.body_part, result.label)
    assert summary.abnormality == pytest.approx(result.abnormality, abs=1e-6)
    assert summary.triage is None  # no operating points in the tiny repository, none in the earlier format
    assert referenced_instances(report) == instances
    assert is_service_series({"Modality": report.Modality, "Manufacturer": report.Manufacturer,
                              "SeriesDescription": report.SeriesDescription})


def test_other_series_are_not_the_services() -> None:
    assert not is_service_series({"Modality": "SR", "Manufacturer": "another vendor",
                                  "SeriesDescription": "AI triage result"})
    assert not is_service_series({"Modality": "PR", "Manufacturer": "radiograph triage service",
                                  "SeriesDescription": "AI triage result"})


@pytest.mark.parametrize("category", ["flagged", "indeterminate", "low"])
def test_the_triage_category_of_an_sr_is_read_back(scored, category) -> None:
    result, _, views = scored
    triaged = dataclasses.replace(result, triage=category, operating_points={"rule_out": 0.2, "rule_in": 0.8})
    report = pydicom.dcmread(io.BytesIO(structured_report_bytes(build_dicom_outputs(triaged).report)))
    summary = summarise_report(report)
    assert (summary.triage, summary.label, summary.body_part) == (category, result.label, result.body_part)
