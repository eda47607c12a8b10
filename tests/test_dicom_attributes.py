"""The one copying policy of the DICOM writers: only values valid for their VR, the rest empty and named."""

from __future__ import annotations

import io

import pydicom
import pytest

from classifiers.outputs.dicom_attributes import UTF8, UnwritableIdentifier, left_out_warning, writable_source
from tests.support.dicom_factory import PATIENT_ATTRIBUTES
from tests.support.hostile_headers import (
    BAD_VALUE_MARKERS,
    invalid_study_uid,
    non_conformant_values,
    patient_name_as_sequence,
    read,
    unknown_character_set,
)


def test_conformant_header_is_copied_whole_and_nothing_is_reported() -> None:
    source = writable_source(read(non_conformant_values()))
    clean = writable_source(source.dataset)
    assert clean.left_out == () and clean.dataset.PatientID == PATIENT_ATTRIBUTES["PatientID"]
    assert str(clean.dataset.PatientName) == PATIENT_ATTRIBUTES["PatientName"]
    assert "SpecificCharacterSet" not in clean.dataset


@pytest.mark.parametrize(("keyword", "written", "expected"), [
    ("PatientBirthDate", "1927-08-15", "19270815"),
    ("PatientBirthDate", "1927.08.15", "19270815"),
    ("PatientBirthDate", "19270815", "19270815"),
    ("PatientBirthDate", "1927-02-30", ""),
    ("StudyDate", "yesterday", ""),
    ("StudyTime", "10:15:00", "101500"),
    ("StudyTime", "101500.25", "101500.25"),
    ("StudyTime", "25:00", ""),
    ("PatientSex", "f", "F"),
    ("PatientSex", "female", ""),
    ("StudyID", "S" * 17, ""),  # SH holds 16 characters
    ("AccessionNumber", "ACC\\2", ""),  # a backslash would make two values
])
def test_values_are_rewritten_in_their_vr_form_or_left_empty(keyword, written, expected) -> None:
    header = read(non_conformant_values())
    header[keyword].value = written
    source = writable_source(header)
    assert source.dataset[keyword].value == expected
    assert (keyword in source.left_out) == (expected == "")


def test_non_conformant_values_are_named_never_quoted() -> None:
    source = writable_source(read(non_conformant_values()))
    assert source.dataset.PatientBirthDate == "19270815"
    assert (source.dataset.StudyDate, source.dataset.StudyTime, source.dataset.PatientSex) == ("", "", "")
    assert "PatientAge" not in source.dataset  # not Type 2: left out, not emptied
    assert set(source.left_out) == {"StudyDate", "StudyTime", "PatientSex", "PatientAge"}
    warning = left_out_warning(source.left_out)
    assert warning is not None and "PatientSex" in warning
    assert not any(marker in warning for marker in BAD_VALUE_MARKERS)


def test_patient_name_held_in_a_sequence_is_left_empty() -> None:
    source = writable_source(read(patient_name_as_sequence()))
    assert source.dataset.PatientName == "" and source.left_out == ("PatientName",)


def test_unknown_character_set_is_decoded_as_pydicom_does_and_written_as_utf8() -> None:
    with pytest.warns(UserWarning):  # pydicom's "unknown encoding": it falls back to its default
        header = read(unknown_character_set())
        name = str(header.PatientName)
    source = writable_source(header)
    assert str(source.dataset.PatientName) == name and "ü" in name
    assert source.dataset.SpecificCharacterSet == UTF8
    buffer = io.BytesIO()
    source.dataset.save_as(buffer, implicit_vr=False, little_endian=True)
    assert str(pydicom.dcmread(io.BytesIO(buffer.getvalue()), force=True).PatientName) == name


def test_invalid_uid_is_a_typed_error_naming_the_attribute_only() -> None:
    with pytest.raises(UnwritableIdentifier) as raised:
        writable_source(read(invalid_study_uid()))
    assert "StudyInstanceUID" in str(raised.value) and "UIDMARKER" not in str(raised.value)
