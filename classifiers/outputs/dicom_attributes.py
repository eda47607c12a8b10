"""The one policy for what the DICOM writers (SR, Secondary Capture, presentation state) copy from a source header.

A writer copies only what it can write: each attribute is taken as pydicom decoded it (its Specific Character
Set applied, an unknown one falling back as pydicom does), and kept only in a form valid for its VR: a date
written `1927-08-15` becomes `19270815`, a time `10:15:00` becomes `101500`, a code string is upper-cased and
checked; anything else (a sequence where text belongs, bytes, a value too long or of the wrong form) is left
empty, as Type 2 allows, and its keyword is reported. No value is ever put in a message or a log line.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pydicom.config
from pydicom.datadict import dictionary_VM, dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName, validate_value

UTF8 = "ISO_IR 192"
# Patient and study attributes of the source copied into every object the service writes (Type 2 are kept empty
# when absent or unwritable; the others are left out then).
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                       "StudyDate", "StudyTime", "ReferringPhysicianName")
OPTIONAL_PATIENT_STUDY = ("IssuerOfPatientID", "PatientAge", "StudyDescription")
# What the writers read to reference and describe the image (identifiers are checked as UIDs).
IDENTIFIERS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
IMAGE_ATTRIBUTES = ("Modality", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation", "NumberOfFrames", "BodyPartExamined",
                    "ImageLaterality", "Laterality", "PatientOrientation", "ViewPosition",
                    "RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth")
ENUMERATED = {"PatientSex": ("M", "F", "O"), "ImageLaterality": ("R", "L", "U", "B"), "Laterality": ("R", "L")}
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_DATE_FORMS = ("%Y%m%d", "%Y-%m-%d", "%Y.%m.%d", "%Y/%m/%d")
_TIME = re.compile(r"^([01][0-9]|2[0-3]):?([0-5][0-9])?:?([0-5][0-9]|60)?(\.[0-9]{1,6})?$")


@dataclass(frozen=True)
class WritableSource:
    """A source header reduced to what the writers may copy, and the keywords that were left out."""

    dataset: Dataset
    left_out: tuple[str, ...]


class UnwritableIdentifier(ValueError):
    """A source's identifier (a UID the output must repeat) is not a valid UID; the message names the keyword."""


def writable_source(header: Dataset) -> WritableSource:
    """Copy of `header` holding only attributes valid for their VR (Type 2 patient/study ones empty when not).

    Raises:
        UnwritableIdentifier: a SOP Class, SOP Instance, Study or Series Instance UID is missing or invalid.
    """
    source = Dataset()
    source.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in getattr(header, "file_meta", Dataset()):
        source.file_meta.TransferSyntaxUID = header.file_meta.TransferSyntaxUID
    for keyword in IDENTIFIERS:
        value = _read(header, keyword)
        if not isinstance(value, str) or len(value) > 64 or not _UID.match(value):
            raise UnwritableIdentifier(f"the source header's {keyword} is not a valid UID")
        setattr(source, keyword, value)
    left_out: list[str] = []
    for keyword in (*TYPE2_PATIENT_STUDY, *OPTIONAL_PATIENT_STUDY, *IMAGE_ATTRIBUTES):
        present = keyword in header
        value = _conformant(keyword, _read(header, keyword)) if present else None
        if value is not None:
            setattr(source, keyword, value)
            continue
        if present and not _is_empty(header, keyword):
            left_out.append(keyword)
        if keyword in TYPE2_PATIENT_STUDY:
            setattr(source, keyword, "")
    if any(_non_ascii(source.get(keyword)) for keyword in (*TYPE2_PATIENT_STUDY, *OPTIONAL_PATIENT_STUDY)):
        source.SpecificCharacterSet = UTF8  # values are Python text now: written back as UTF-8
    return WritableSource(source, tuple(left_out))


def left_out_warning(keywords: Iterable[str]) -> str | None:
    """The study warning naming the source attributes the DICOM outputs left out (None when none)."""
    names = sorted(set(keywords))
    if not names:
        return None
    return ("DICOM outputs: source attribute(s) not valid for their VR left out or empty: " + ", ".join(names))


def referable_frames(source: Dataset, frames: Sequence[int]) -> list[int] | None:
    """The frame numbers a reference to `source` may carry: None unless its IOD is multi-frame and it has several."""
    from highdicom.utils import is_multiframe_image

    if not frames or int(source.get("NumberOfFrames") or 1) < 2 or not is_multiframe_image(source):
        return None
    return list(frames)


def _read(header: Dataset, keyword: str) -> object:
    """The value as pydicom decodes it, or None when reading it fails (the failure's text is not kept)."""
    try:
        element = header[keyword]
    except (KeyError, ValueError, TypeError, LookupError, OverflowError):
        return None
    try:
        return element.value
    except (ValueError, TypeError, LookupError, OverflowError):
        return None


def _is_empty(header: Dataset, keyword: str) -> bool:
    """True when the attribute is present with an empty value (nothing is lost by leaving it empty)."""
    value = _read(header, keyword)
    return value is None or value == "" or (isinstance(value, MultiValue | list) and len(value) == 0)


def _conformant(keyword: str, value: object) -> object:
    """The value in a form valid for the keyword's VR, or None when it has none."""
    vr = dictionary_VR(keyword)
    if value is None or value == "":
        return None
    if dictionary_VM(keyword) == "1" and isinstance(value, MultiValue | list):
        return None  # several values where one belongs (a backslash in the text)
    try:
        if vr == "DA":
            return _date(value)
        if vr == "TM":
            return _time(value)
        if vr == "PN":
            return _person_name(value)
        if vr in ("US", "IS", "DS") and not isinstance(value, str | bytes | int | float | MultiValue | list):
            return None
        if vr == "DS" and _finite_numbers(value) is None:
            return None
        if vr in ("IS", "DS", "US"):
            return value if _numbers_valid(vr, value) else None
        if isinstance(value, bytes) or hasattr(value, "is_undefined_length"):  # bytes or a Sequence
            return None
        if vr == "CS":
            value = _code_string(keyword, value)
            if value is None:
                return None
        if isinstance(value, str | int):
            validate_value(vr, value, pydicom.config.RAISE)
        elif isinstance(value, MultiValue | list):
            for item in value:
                if isinstance(item, bytes) or hasattr(item, "is_undefined_length"):
                    return None
                validate_value(vr, item, pydicom.config.RAISE)
        else:
            return None
    except (ValueError, TypeError, OverflowError):
        return None
    return value


def _date(value: object) -> str | None:
    """A DA value as YYYYMMDD, from YYYYMMDD or the ISO and dotted forms real systems send; None otherwise."""
    text = str(value).strip()
    for form in _DATE_FORMS:
        try:
            return datetime.datetime.strptime(text, form).strftime("%Y%m%d")
        except ValueError:
            continue
    return None


def _time(value: object) -> str | None:
    """A TM value as HHMMSS[.ffffff] (colons dropped, as ACR-NEMA wrote them); None when not a time."""
    text = str(value).strip()
    match = _TIME.match(text)
    if match is None or len(text) < 2:
        return None
    return "".join(part for part in match.groups() if part)


def _person_name(value: object) -> str | None:
    """A PN value as text (each component group at most 64 characters, no control characters); None otherwise."""
    if not isinstance(value, str | PersonName):
        return None
    text = str(value)
    if any(len(group) > 64 for group in text.split("=")) or any(ord(char) < 32 for char in text) or "\\" in text:
        return None
    return text


def _code_string(keyword: str, value: object) -> object:
    """A CS value upper-cased and stripped, checked against the enumerated values where the keyword has them."""
    if isinstance(value, str):
        value = value.strip().upper()
        allowed = ENUMERATED.get(keyword)
        return value if allowed is None or value in allowed else None
    if isinstance(value, MultiValue | list) and all(isinstance(item, str) for item in value):
        return [item.strip().upper() for item in value]
    return None


def _finite_numbers(value: object) -> object:
    """A DS value (or values) whose numbers are all finite; None otherwise."""
    items = list(value) if isinstance(value, MultiValue | list) else [value]
    try:
        numbers = [float(item) for item in items]
    except (TypeError, ValueError):
        return None
    if not numbers or not all(abs(number) < 1e15 for number in numbers):  # also refuses NaN and inf
        return None
    return value


def _numbers_valid(vr: str, value: object) -> bool:
    """True when every number of an IS, DS or US value is valid for the VR (IS and DS checked as written)."""
    items = list(value) if isinstance(value, MultiValue | list) else [value]
    for item in items:
        if vr == "US":
            if not isinstance(item, int) or not 0 <= item < 65536:
                return False
        else:
            validate_value(vr, str(item), pydicom.config.RAISE)
    return bool(items)


def _non_ascii(value: object) -> bool:
    """True for a text with a character outside ASCII."""
    return isinstance(value, str | PersonName) and any(ord(char) > 127 for char in str(value))
