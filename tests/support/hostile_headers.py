"""DICOM files whose patient and study attributes are what real systems send and DICOM forbids (built here)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from tests.support.dicom_factory import make_dataset, synthetic_radiograph, to_bytes

PIXELS = np.round(synthetic_radiograph("XR_WRIST", seed=31) * 255).astype(np.uint8)
# Values no answer, log line or error may carry (the date is legal once rewritten as 19270815).
SEQUENCE_NAME_MARKER = "Seqname^Leakmore"
BAD_VALUE_MARKERS = ("1927-08-15", "XSEXMARK", "2024-99-99", "10h15m", SEQUENCE_NAME_MARKER, "AGE-MARKER-X")


def _quiet(write) -> bytes:
    """Serialise with pydicom's writing checks off: the file must hold exactly the bad values."""
    mode = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        return write()
    finally:
        pydicom.config.settings.writing_validation_mode = mode


def non_conformant_values(study_uid: str | None = None) -> bytes:
    """PatientBirthDate 1927-08-15, and StudyDate, StudyTime, PatientSex and PatientAge invalid for their VR."""
    dataset = make_dataset(PIXELS, study_uid=study_uid)
    dataset.PatientBirthDate = "1927-08-15"
    dataset.StudyDate, dataset.StudyTime = "2024-99-99", "10h15m"
    dataset.PatientSex, dataset.PatientAge = "XSEXMARK", "AGE-MARKER-X"
    return _quiet(lambda: to_bytes(dataset))


def patient_name_as_sequence(study_uid: str | None = None) -> bytes:
    """PatientName (0010,0010) encoded with VR SQ, holding an item with a name."""
    dataset = make_dataset(PIXELS, study_uid=study_uid)
    del dataset.PatientName
    item = Dataset()
    item.PatientName = SEQUENCE_NAME_MARKER
    dataset.add_new(0x00100010, "SQ", [item])
    return _quiet(lambda: to_bytes(dataset))


def unknown_character_set(study_uid: str | None = None) -> bytes:
    """A Latin-1 PatientName under a Specific Character Set no codec knows ("ISO_IR 999")."""
    dataset = make_dataset(PIXELS, study_uid=study_uid)
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.PatientName = "Müller^Leakmore"
    data = to_bytes(dataset)
    assert data.count(b"ISO_IR 100") == 1
    return data.replace(b"ISO_IR 100", b"ISO_IR 999")


def invalid_study_uid() -> bytes:
    """A StudyInstanceUID that is not a UID (letters in it): no object can be written in its study."""
    dataset = make_dataset(PIXELS, study_uid="1.2.UIDMARKER.3")
    return _quiet(lambda: to_bytes(dataset))


HOSTILE_FILES = {
    "non-conformant-values": non_conformant_values,
    "patient-name-as-sequence": patient_name_as_sequence,
    "unknown-character-set": unknown_character_set,
}


def read(data: bytes) -> pydicom.Dataset:
    """Read a file as the decoder does (pixel data kept)."""
    return pydicom.dcmread(io.BytesIO(data), force=True)
