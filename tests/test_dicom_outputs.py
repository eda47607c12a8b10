"""The one DICOM-output builder: SR, Secondary Captures and presentation states, checked by dciodvfy and dsrdump."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import MultiFrameGrayscaleByteSecondaryCaptureImageStorage

from classifiers.decoding import decode_views
from classifiers.errors import MalformedDicom
from classifiers.outputs.dicom_outputs import build_dicom_outputs
from classifiers.results import ViewInput
from tests.support.dicom_factory import make_dataset, png_bytes, synthetic_radiograph, to_bytes
from tests.support.dicom_validation import dciodvfy_errors, dsrdump
from tests.support.hostile_headers import BAD_VALUE_MARKERS, HOSTILE_FILES, invalid_study_uid

PIXELS = np.round(synthetic_radiograph("XR_WRIST", seed=11) * 255).astype(np.uint8)
PIXELS_12BIT = np.round(synthetic_radiograph("XR_WRIST", seed=12) * 4095).astype(np.uint16)
REAL_FILES = ("RG1_UNCR.dcm", "RG3_J2KR.dcm", "RG1_J2KR.dcm")  # pydicom-data: MONOCHROME1 CRs, J2K among them


def real_file(name: str) -> bytes:
    """A file of the pydicom-data package (installed with the test requirements; nothing is downloaded)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed; pip install pydicom-data")
    return Path(path).read_bytes()


SYNTHETIC = {
    "dx-8bit": lambda: to_bytes(make_dataset(PIXELS)),
    "dx-12bit-windowed": lambda: to_bytes(make_dataset(PIXELS_12BIT, bits_stored=12, extra={
        "WindowCenter": "2048", "WindowWidth": "4096"})),
    "monochrome1-no-laterality": lambda: to_bytes(make_dataset(255 - PIXELS, photometric="MONOCHROME1",
                                                               extra={"ImageLaterality": None})),
    "multi-frame-secondary-capture": lambda: to_bytes(make_dataset(np.stack([PIXELS, PIXELS[::-1]]), modality="OT",
                                                                   extra={"SOPClassUID": MULTI_FRAME_SC})),
    **{name: make for name, make in HOSTILE_FILES.items()},
}
MULTI_FRAME_SC = MultiFrameGrayscaleByteSecondaryCaptureImageStorage
CASES = [*SYNTHETIC, *REAL_FILES]


def file_of(case: str) -> bytes:
    """The input file of a case."""
    return real_file(case) if case in REAL_FILES else SYNTHETIC[case]()


def explained_outputs(pipeline, data: bytes):
    """The views, the explained result and every DICOM object written for one input file."""
    views = decode_views([ViewInput("view.dcm", data)], pipeline.settings.image_limits)  # the test's own reading
    result = pipeline.predict_study([ViewInput("view.dcm", data)], explain=True)
    return views, result, build_dicom_outputs(result, explained=True, backend="tensorflow")


@pytest.mark.parametrize("case", CASES)
def test_every_object_written_passes_dciodvfy(tiny_pipeline, tmp_path, case) -> None:
    views, _, outputs = explained_outputs(tiny_pipeline, file_of(case))
    assert len(outputs.captures) == len(outputs.presentation_states) == len(views)
    for index, data in enumerate(outputs.instances_bytes()):
        assert dciodvfy_errors(data, tmp_path, f"{case}-{index}") == [], (case, index)


@pytest.mark.parametrize("case", [*HOSTILE_FILES, "invalid-uid"])
def test_bad_header_values_never_reach_an_object(tiny_pipeline, case) -> None:
    if case == "invalid-uid":
        with pytest.raises(MalformedDicom) as raised:
            explained_outputs(tiny_pipeline, invalid_study_uid())
        assert "StudyInstanceUID" in str(raised.value) and "UIDMARKER" not in str(raised.value)
        return
    _, result, outputs = explained_outputs(tiny_pipeline, HOSTILE_FILES[case]())
    written = b"".join(outputs.instances_bytes())
    for marker in BAD_VALUE_MARKERS:
        assert marker.encode() not in written
    left_out = [warning for warning in outputs.warnings if "left out" in warning]
    if case == "unknown-character-set":
        assert left_out == []  # decoded as pydicom does, written back as UTF-8
    else:
        assert len(left_out) == 1 and not any(marker in left_out[0] for marker in BAD_VALUE_MARKERS)
        comments = [item.TextValue for item in _study_group(outputs.report).ContentSequence
                    if item.ConceptNameCodeSequence[0].CodeMeaning == "Comment"]
        assert left_out[0] in comments and left_out[0] not in result.warnings  # the caller's result is unchanged


def test_non_conformant_birth_date_is_written_in_its_dicom_form(tiny_pipeline) -> None:
    _, _, outputs = explained_outputs(tiny_pipeline, HOSTILE_FILES["non-conformant-values"]())
    for data in outputs.instances_bytes():
        instance = pydicom.dcmread(io.BytesIO(data))
        assert instance.PatientBirthDate == "19270815" and instance.StudyDate == "" and instance.PatientSex == ""
    assert "PatientSex" in outputs.warnings[0] and "StudyTime" in outputs.warnings[0]


def test_presentation_state_rings_the_peak_over_the_original_image(tiny_pipeline) -> None:
    views, result, outputs = explained_outputs(tiny_pipeline, SYNTHETIC["dx-12bit-windowed"]())
    [state] = outputs.presentation_states
    reference = state.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == views[0].header.SOPInstanceUID
    assert state.ReferencedSeriesSequence[0].SeriesInstanceUID == views[0].header.SeriesInstanceUID
    [annotation] = state.GraphicAnnotationSequence
    [ring] = annotation.GraphicObjectSequence
    x, y = result.images[0].explanation.peak
    assert ring.GraphicType == "CIRCLE" and ring.GraphicAnnotationUnits == "PIXEL"
    assert list(ring.GraphicData[:2]) == [x + 0.5, y + 0.5]
    text = annotation.TextObjectSequence[0].UnformattedTextValue
    assert f"view {result.images[0].abnormality:.2f}" in text and result.label in text
    assert state.GraphicLayerSequence[0].GraphicLayer == annotation.GraphicLayer
    assert float(state.SoftcopyVOILUTSequence[0].WindowCenter) == 2048  # the view shows as it did
    assert state.PresentationLUTShape == "IDENTITY" and state.Laterality == "L"
    capture = outputs.captures[0]
    assert capture.Laterality == "L" and capture.SourceImageSequence[0].ReferencedSOPInstanceUID == \
        reference.ReferencedSOPInstanceUID


def test_monochrome1_gets_the_inverse_presentation_lut_and_empty_laterality(tiny_pipeline) -> None:
    _, _, outputs = explained_outputs(tiny_pipeline, SYNTHETIC["monochrome1-no-laterality"]())
    assert outputs.presentation_states[0].PresentationLUTShape == "INVERSE"
    assert outputs.presentation_states[0].Laterality == "" and outputs.captures[0].Laterality == ""


def test_multi_frame_presentation_states_name_their_frame(tiny_pipeline) -> None:
    _, _, outputs = explained_outputs(tiny_pipeline, SYNTHETIC["multi-frame-secondary-capture"]())
    frames = [int(state.GraphicAnnotationSequence[0].ReferencedImageSequence[0].ReferencedFrameNumber)
              for state in outputs.presentation_states]
    assert frames == [1, 2]
    assert len({state.SeriesInstanceUID for state in outputs.presentation_states}) == 1


def test_dsrdump_shows_the_measurement_report_tree(tiny_pipeline, tmp_path) -> None:
    _, result, outputs = explained_outputs(tiny_pipeline, real_file("RG1_UNCR.dcm"))
    tree = dsrdump(outputs.instances_bytes()[0], tmp_path)
    for text in ('"Imaging Measurement Report"', '"Procedure reported")=(168537006,SCT,"Plain radiography")',
                 '"Tracking Identifier")="study"', '"Algorithm Name")="radiograph triage"',
                 f'"Probability")="{str(round(result.abnormality, 6))[:6]}', '"Normality")=',
                 '"Threshold Value")'):
        assert text in tree, text


def test_without_explain_only_the_sr_is_written(tiny_pipeline) -> None:
    views = [ViewInput("a.dcm", SYNTHETIC["dx-8bit"]())]
    explained = tiny_pipeline.predict_study(views, explain=True)
    assert len(build_dicom_outputs(explained, explained=False).instances()) == 1
    assert len(build_dicom_outputs(tiny_pipeline.predict_study(views), explained=True).instances()) == 1


def test_a_picture_study_has_no_dicom_outputs(tiny_pipeline) -> None:
    views = [ViewInput("a.png", png_bytes(PIXELS))]
    with pytest.raises(ValueError, match="PNG and JPEG studies"):
        build_dicom_outputs(tiny_pipeline.predict_study(views))


def _study_group(report: pydicom.Dataset) -> pydicom.Dataset:
    """The first (study) measurement group of a TID 1500 report."""
    report = pydicom.dcmread(io.BytesIO(_bytes(report)))
    [measurements] = [item for item in report.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"]
    return measurements.ContentSequence[0]


def _bytes(instance: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    instance.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
