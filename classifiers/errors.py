"""Typed errors of the inference package; the web layer maps them to HTTP statuses in one place."""

from __future__ import annotations


class ClassifierError(Exception):
    """Base class of every error this package raises on purpose."""


class ImageError(ClassifierError):
    """One view of a study cannot be used; the message names the view."""

    def __init__(self, view_name: str, message: str) -> None:
        super().__init__(f"{view_name}: {message}")
        self.view_name = view_name


class UnreadableImage(ImageError):
    """The bytes are not an image format we decode (PNG, JPEG, BMP, TIFF)."""


class TruncatedImage(ImageError):
    """The image header is readable but its pixel data is cut short or corrupt."""


class ImageTooLarge(ImageError):
    """The image has more pixels than the configured limit (checked before decoding)."""


class ImageTooSmall(ImageError):
    """The image is too small to be a radiograph."""


class StudyTooLarge(ClassifierError):
    """The views of one study have more pixels together than the per-study limit."""


class TooManyViews(ClassifierError):
    """A study has more views than the per-study limit (each frame of a multi-frame image counts)."""


class NoReadableView(ClassifierError):
    """Every view of a study was left out as unreadable; `unreadable` lists them."""

    def __init__(self, message: str, unreadable: list | None = None) -> None:
        super().__init__(message)
        self.unreadable = list(unreadable or [])

class MalformedDicom(TruncatedImage):
    """A DICOM file whose header or pixel data is cut short, inconsistent or unreadable."""


class UnsupportedTransferSyntax(UnreadableImage):
    """A DICOM file compressed with a transfer syntax no installed codec decodes."""


class UnsupportedModality(ImageError):
    """A DICOM view that is not a projection radiograph (CT, MR, US, colour images, ...)."""


class NoPixelData(ImageError):
    """A DICOM object without an image (a structured report, a presentation state, ...)."""


class MixedStudies(ClassifierError):
    """Views of more than one DICOM study were sent as one study."""


class NotARadiograph(ImageError):
    """The out-of-domain gate flags the view and the service is set to refuse such views."""


class ReportNotWritable(ClassifierError):
    """A DICOM output (SR, Secondary Capture) cannot be written from the study's headers; names the attributes."""


class InvalidOption(ClassifierError, ValueError):
    """A caller option (body part, aggregation) is not one of the allowed values."""


# Seconds a refused caller waits before retrying, when nothing better is known (every 503 but "still loading").
DEFAULT_RETRY_AFTER_S = 1


class Overloaded(ClassifierError):
    """The batcher queue is full; the caller should retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: int = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelRepositoryError(ClassifierError):
    """The model repository cannot be loaded; the message names the file and what to do."""


class ExplanationUnavailable(ModelRepositoryError):
    """The repository cannot explain an expert (e.g. `explanation_layers` names no layer of it): a fault that
    waiting does not fix; the message says what to change in manifest.json."""
