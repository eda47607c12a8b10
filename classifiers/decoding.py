"""Decoder seam: each view's bytes go to the first decoder whose detector recognises them (by content)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from classifiers.dicom import count_dicom_pixels, decode_dicom, is_dicom
from classifiers.dicom_header import summarise_study
from classifiers.errors import MixedStudies, UnreadableImage
from classifiers.imaging import ImageLimits, count_pixels, decode_image
from classifiers.names import printable_name
from classifiers.results import DecodedView, StudyResult, ViewInput

Detector = Callable[[bytes], bool]
PixelCounter = Callable[[bytes, ImageLimits, str], int]  # from the header, after its checks; nothing decoded
Decoder = Callable[[bytes, ImageLimits, str], list[DecodedView]]


def decode_picture(data: bytes, limits: ImageLimits, name: str) -> list[DecodedView]:
    """Decode a PNG, JPEG, BMP or TIFF view with Pillow (see `classifiers.imaging.decode_image`)."""
    return [DecodedView(name, decode_image(data, limits, name))]


# Checked in order; the last entry takes everything else and names the formats it reads when it fails.
DECODERS: dict[str, tuple[Detector, PixelCounter, Decoder]] = {
    "dicom": (is_dicom, count_dicom_pixels, decode_dicom),
    "picture": (lambda data: True, count_pixels, decode_picture),
}


def _entry(data: bytes) -> tuple[Detector, PixelCounter, Decoder]:
    """The first decoder entry whose detector recognises the bytes."""
    return next(entry for entry in DECODERS.values() if entry[0](data))


def count_view_pixels(view: ViewInput, limits: ImageLimits) -> int:
    """Pixels of one uploaded view (all frames) from its header, after the header checks; nothing decoded."""
    return _entry(view.data)[1](view.data, limits, view.name)


def decode_view(view: ViewInput, limits: ImageLimits) -> list[DecodedView]:
    """Decode one uploaded view into one or more views (a multi-frame DICOM gives one per frame)."""
    return _entry(view.data)[2](view.data, limits, view.name)


def load_view_file(path: str | Path, limits: ImageLimits) -> list[DecodedView]:
    """Read and decode one regular file of any format (see `decode_view`); a FIFO or device is refused unread."""
    path = Path(path)
    name = printable_name(path.name)
    if not path.is_file():
        raise UnreadableImage(name, "not a regular file (a folder, FIFO or device); list image files only")
    return decode_view(ViewInput(name, path.read_bytes()), limits)


def decode_views(views: Sequence[ViewInput], limits: ImageLimits) -> list[DecodedView]:
    """Decode the views of one study in order; DICOM views must all belong to one study.

    Raises:
        MixedStudies: DICOM views of more than one StudyInstanceUID.
        ImageError: a view cannot be decoded (its subclass says why; the message names the view).
    """
    decoded = [decoded_view for view in views for decoded_view in decode_view(view, limits)]
    check_single_study(decoded)
    return decoded


def check_single_study(views: Sequence[DecodedView]) -> None:
    """Raise MixedStudies naming the views of each StudyInstanceUID when there is more than one."""
    views_by_study: dict[str, list[str]] = {}
    for view in views:
        if view.dicom is not None:
            views_by_study.setdefault(view.dicom.study_instance_uid, []).append(view.name)
    if len(views_by_study) > 1:
        # Numbered, not quoted: a Study Instance UID is the sender's text and may embed an identifier.
        listing = "; ".join(f"study {number}: {', '.join(names)}"
                            for number, names in enumerate(views_by_study.values(), start=1))
        raise MixedStudies(f"the views belong to {len(views_by_study)} DICOM studies ({listing});"
                           " send one study per request")


def attach_dicom_metadata(result: StudyResult, views: Sequence[DecodedView]) -> None:
    """Copy the views' DICOM metadata into the result; warn when the header's body part is not the result's."""
    dicom_views = [view.dicom for view in views if view.dicom is not None]
    if not dicom_views:
        return
    for view_result, view in zip(result.images, views, strict=True):
        view_result.dicom = view.dicom
    result.dicom = summarise_study(dicom_views)
    result.source_headers = [view.header for view in views if view.header is not None]
    named = result.dicom.mapped_body_part
    if named is not None and named != result.body_part:
        result.warnings.append(
            f"the DICOM header (Body Part Examined or description) names {named} but the study was read"
            f" as {result.body_part}; check the body part or pass body_part")
