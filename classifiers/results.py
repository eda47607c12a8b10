"""Plain result dataclasses of the two-stage pipeline; the API and the batch scorer serialize them."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image
    from pydicom.dataset import Dataset

    from classifiers.decoding.dicom_header import DicomStudyInfo, DicomViewInfo

ROUND_DIGITS = 6


@dataclass(frozen=True)
class ViewInput:
    """One view of a study as the caller sent it: a display name and the encoded image bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class DecodedView:
    """One decoded view: display name, 8-bit image (L when gray, else RGB) and, for DICOM, its metadata and header.

    `header` is the instance's DICOM header without pixel data (patient data included), for writers of
    DICOM objects in the same study (the SR, overlays); it is never serialised to JSON.
    """

    name: str
    image: Image.Image
    dicom: DicomViewInfo | None = None
    header: Dataset | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Explanation:
    """Where the expert looked in one view: method, peak (x, y) in the view's pixels, overlay PNG."""

    method: str
    peak: tuple[int, int]
    heatmap_png: bytes
    view_size: tuple[int, int] = (0, 0)  # (width, height) of the view the peak is in; not part of the API answer
    model: str = ""  # `file@sha256-prefix` of the Keras file whose weights made the map

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form of the API: the overlay as a PNG data URL."""
        data_url = "data:image/png;base64," + base64.b64encode(self.heatmap_png).decode("ascii")
        return {"method": self.method, "peak": list(self.peak), "heatmap": data_url, "model": self.model}


@dataclass(frozen=True)
class ProbedView:
    """One uploaded view after its header was parsed and checked once: frames, pixels, and how to decode it.

    `decode()` decodes the pixels from the parsed header (no second parse): one DecodedView per frame.
    """

    name: str
    num_frames: int
    num_pixels: int  # all frames
    decode: Callable[[], list[DecodedView]] = field(repr=False, compare=False)


@dataclass(frozen=True)
class UnreadableView:
    """A view left out of a study (doors that skip unreadable views): its name, error type and message."""

    name: str
    error: str  # the typed error's class name, e.g. "MalformedDicom"
    message: str  # names the view, never a header value


@dataclass
class ViewResult:
    """Router and expert output for one view."""

    name: str
    body_part: str
    body_part_confidence: float
    body_part_scores: dict[str, float]
    abnormality: float
    explanation: Explanation | None = None  # only when asked (explain=true)
    dicom: DicomViewInfo | None = None  # only for DICOM input
    # The out-of-domain gate's verdict and score (None when the repository has no gate statistics).
    out_of_distribution: bool | None = None
    ood_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form used by the HTTP API."""
        view = {
            "name": self.name,
            "body_part": self.body_part,
            "body_part_confidence": round(self.body_part_confidence, ROUND_DIGITS),
            "body_part_scores": {part: round(score, ROUND_DIGITS) for part, score in self.body_part_scores.items()},
            "abnormality": round(self.abnormality, ROUND_DIGITS),
        }
        if self.out_of_distribution is not None:
            view |= {"out_of_distribution": self.out_of_distribution, "ood_score": round(self.ood_score, 3)}
        if self.explanation is not None:
            view["explanation"] = self.explanation.to_dict()
        if self.dicom is not None:
            view["dicom"] = self.dicom.to_dict()
        return view


@dataclass
class StudyResult:
    """The study's body part, abnormality and label, with per-view results and timings."""

    body_part: str
    body_part_confidence: float
    abnormality: float
    label: str
    threshold: float
    aggregation: str
    n_images: int
    warnings: list[str]
    images: list[ViewResult]
    models: dict[str, str]
    timing_ms: dict[str, float] = field(default_factory=dict)
    threshold_source: str = "manifest"
    dicom: DicomStudyInfo | None = None  # only for DICOM input
    # The DICOM headers (no pixel data, patient data included) of the views, for the SR and other writers of
    # DICOM objects in the study; never serialised.
    source_headers: list[Dataset] = field(default_factory=list, repr=False, compare=False)
    # Views left out because they could not be read (only when the request skips unreadable views).
    unreadable: list[UnreadableView] = field(default_factory=list)
    # "flagged", "indeterminate" or "low" at the expert's operating points; None when its manifest entry has none.
    triage: str | None = None
    operating_points: dict[str, float] | None = None  # {"rule_out": x, "rule_in": y} when `triage` is set
    calibrated: bool = False  # the abnormality scores went through the expert's calibration

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready /predict response body of DESIGN.md."""
        answer = {
            "study": {
                "body_part": self.body_part,
                "body_part_confidence": round(self.body_part_confidence, ROUND_DIGITS),
                "abnormality": round(self.abnormality, ROUND_DIGITS),
                "label": self.label,
                "threshold": self.threshold,
                "threshold_source": self.threshold_source,
                "aggregation": self.aggregation,
                "n_images": self.n_images,
                "warnings": list(self.warnings),
                "triage": self.triage,
                "operating_points": None if self.operating_points is None else dict(self.operating_points),
                "calibrated": self.calibrated,
            },
            "images": [view.to_dict() for view in self.images],
            "models": dict(self.models),
            "timing_ms": {stage: round(value, 2) for stage, value in self.timing_ms.items()},
        }
        if self.dicom is not None:
            answer["study"]["dicom"] = self.dicom.to_dict()
        return answer
