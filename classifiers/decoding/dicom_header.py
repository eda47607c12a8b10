"""What a DICOM header says about a view: its identifiers, body part, view and whether we may read it.

Parsed once at the edge into `DicomViewInfo`; nothing here holds or returns a patient attribute.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from classifiers.errors import UnsupportedModality

RADIOGRAPH_MODALITIES = ("CR", "DX", "RG")
# Other-modality images and secondary captures are read only when they are grayscale.
SECONDARY_CAPTURE_MODALITIES = ("OT",)
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")

# Body Part Examined defined terms (PS3.16 CID 4031) and words of study or series descriptions.
BODY_PART_TERMS: dict[str, str] = {
    "HAND": "XR_HAND", "HANDS": "XR_HAND",
    "WRIST": "XR_WRIST", "WRISTS": "XR_WRIST", "CARPUS": "XR_WRIST", "SCAPHOID": "XR_WRIST",
    "ELBOW": "XR_ELBOW", "ELBOWS": "XR_ELBOW",
    "SHOULDER": "XR_SHOULDER", "SHOULDERS": "XR_SHOULDER",
    "FINGER": "XR_FINGER", "FINGERS": "XR_FINGER", "THUMB": "XR_FINGER", "DIGIT": "XR_FINGER",
    "FOREARM": "XR_FOREARM", "LOWERARM": "XR_FOREARM", "LOWER ARM": "XR_FOREARM",
    "HUMERUS": "XR_HUMERUS", "UPPERARM": "XR_HUMERUS", "UPPER ARM": "XR_HUMERUS", "ARM": "XR_HUMERUS",
}
_WORD_SPLIT = re.compile(r"[^A-Z]+")


@dataclass(frozen=True)
class DicomViewInfo:
    """The identifiers and acquisition facts of one DICOM view (one frame of one instance)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    body_part_examined: str | None
    mapped_body_part: str | None  # XR_<PART> from BodyPartExamined or the descriptions, when they say
    view_position: str | None
    laterality: str | None
    frame: int  # 1-based frame number within the instance

    def to_dict(self) -> dict[str, Any]:
        """The `images[].dicom` object of the API."""
        return {"sop_instance_uid": self.sop_instance_uid, "series_instance_uid": self.series_instance_uid,
                "view_position": self.view_position, "laterality": self.laterality, "frame": self.frame}


@dataclass(frozen=True)
class DicomStudyInfo:
    """What the DICOM headers of a study's views say about the study."""

    study_instance_uid: str
    body_part_examined: str | None
    modality: str
    mapped_body_part: str | None

    def to_dict(self) -> dict[str, Any]:
        """The `study.dicom` object of the API."""
        return {"study_instance_uid": self.study_instance_uid, "body_part_examined": self.body_part_examined,
                "modality": self.modality}


def summarise_study(views: Sequence[DicomViewInfo]) -> DicomStudyInfo:
    """The study facts of its views: the first body part and modality given, the one mapped part if they agree."""
    mapped = {view.mapped_body_part for view in views if view.mapped_body_part}
    return DicomStudyInfo(
        study_instance_uid=views[0].study_instance_uid,
        body_part_examined=next((view.body_part_examined for view in views if view.body_part_examined), None),
        modality=next((view.modality for view in views if view.modality), ""),
        mapped_body_part=mapped.pop() if len(mapped) == 1 else None,
    )


def read_view_info(dataset: Dataset, frame: int = 1) -> DicomViewInfo:
    """Read the identifiers, body part, view position and laterality of a DICOM dataset."""
    return DicomViewInfo(
        study_instance_uid=_text(dataset, "StudyInstanceUID") or "",
        series_instance_uid=_text(dataset, "SeriesInstanceUID") or "",
        sop_instance_uid=_text(dataset, "SOPInstanceUID") or "",
        sop_class_uid=_text(dataset, "SOPClassUID") or "",
        modality=(_text(dataset, "Modality") or "").upper(),
        body_part_examined=_text(dataset, "BodyPartExamined"),
        mapped_body_part=map_body_part(dataset),
        view_position=_text(dataset, "ViewPosition"),
        laterality=_text(dataset, "ImageLaterality") or _text(dataset, "Laterality"),
        frame=frame,
    )


def map_body_part(dataset: Dataset) -> str | None:
    """XR_<PART> named by BodyPartExamined, else by the series or study description; None if unclear."""
    for keyword in ("BodyPartExamined", "SeriesDescription", "StudyDescription"):
        part = body_part_from_text(_text(dataset, keyword) or "")
        if part is not None:
            return part
    return None


def body_part_from_text(text: str) -> str | None:
    """The one body part a term or description names ("XR WRIST LT", "UPPER ARM"); None for none or several."""
    words = [word for word in _WORD_SPLIT.split(text.upper()) if word]
    phrases = set(words) | {f"{first} {second}" for first, second in zip(words, words[1:], strict=False)}
    found = {BODY_PART_TERMS[phrase] for phrase in phrases if phrase in BODY_PART_TERMS}
    bare_arm = "ARM" in words and "UPPER ARM" not in phrases
    if "LOWER ARM" in phrases or (bare_arm and len(found) > 1):
        found.discard("XR_HUMERUS")  # "lower arm" or "hand and arm": the word "arm" is not the humerus here
    return found.pop() if len(found) == 1 else None


def check_radiograph(dataset: Dataset, view_name: str) -> None:
    """Refuse views that are not grayscale projection radiographs (422 unsupported_modality).

    Raises:
        UnsupportedModality: the modality is not CR, DX, RG or OT, or the image is not MONOCHROME1/2.
    """
    # Modality and Photometric Interpretation are the sender's text: messages name them, never quote them.
    modality = (_text(dataset, "Modality") or "").upper()
    accepted = ", ".join(RADIOGRAPH_MODALITIES + SECONDARY_CAPTURE_MODALITIES)
    if modality not in RADIOGRAPH_MODALITIES + SECONDARY_CAPTURE_MODALITIES:
        raise UnsupportedModality(
            view_name, f"the Modality is not a projection radiograph ({accepted}); send {accepted} images of the"
                       " upper limb")
    photometric = (_text(dataset, "PhotometricInterpretation") or "").upper()
    if photometric not in MONOCHROME:
        raise UnsupportedModality(
            view_name, f"the Photometric Interpretation is not MONOCHROME1 or MONOCHROME2 (colour images are not"
                       f" radiographs); send MONOCHROME1 or MONOCHROME2 {accepted} images")


def _text(dataset: Dataset, keyword: str) -> str | None:
    """A top-level attribute as stripped text, or None when absent or empty."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    text = str(value).strip()
    return text or None
