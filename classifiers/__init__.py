"""Inference package of the radiograph triage service: model repository, decoding, two-stage pipeline."""

from __future__ import annotations

from classifiers.body_parts import BODY_PARTS, normalize_body_part
from classifiers.decoding.imaging import ImageLimits, decode_image, load_image_file, resize_image
from classifiers.errors import (
    ClassifierError,
    ImageError,
    ImageTooLarge,
    ImageTooSmall,
    InvalidOption,
    MalformedDicom,
    MixedStudies,
    ModelRepositoryError,
    NoPixelData,
    Overloaded,
    TruncatedImage,
    UnreadableImage,
    UnsupportedModality,
    UnsupportedTransferSyntax,
)
from classifiers.results import DecodedView, StudyResult, ViewInput, ViewResult
from classifiers.study_policy import AGGREGATIONS
from classifiers.study_request import StudyRequest

__all__ = [
    "AGGREGATIONS",
    "BODY_PARTS",
    "ClassifierError",
    "DecodedView",
    "ImageError",
    "ImageLimits",
    "ImageTooLarge",
    "ImageTooSmall",
    "InvalidOption",
    "MalformedDicom",
    "MixedStudies",
    "ModelRepositoryError",
    "NoPixelData",
    "Overloaded",
    "Pipeline",
    "PipelineSettings",
    "StudyRequest",
    "StudyResult",
    "TruncatedImage",
    "UnreadableImage",
    "UnsupportedModality",
    "UnsupportedTransferSyntax",
    "ViewInput",
    "ViewResult",
    "decode_image",
    "normalize_body_part",
    "load_image_file",
    "resize_image",
]


def __getattr__(name: str) -> object:
    """Pipeline and PipelineSettings on first use: importing a submodule (errors, decoding) loads no runtime."""
    if name in ("Pipeline", "PipelineSettings"):
        from classifiers import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'classifiers' has no attribute {name!r}")
