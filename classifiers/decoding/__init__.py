"""Decoder seam: each view's bytes go to the first decoder whose detector recognises them (by content).

Every view is sniffed and its header parsed once (`probe_view`); admission counts its frames and pixels
from that, and `ProbedView.decode()` decodes from the parsed header.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from classifiers.decoding.dicom import is_dicom, probe_dicom
from classifiers.decoding.dicom_header import summarise_study
from classifiers.decoding.imaging import ImageLimits, probe_picture
from classifiers.errors import ImageError, MixedStudies, TruncatedImage, UnreadableImage
from classifiers.names import printable_name
from classifiers.results import DecodedView, ProbedView, StudyResult, ViewInput

logger = logging.getLogger(__name__)

Detector = Callable[[bytes], bool]
Prober = Callable[[bytes, ImageLimits, str], ProbedView]  # parses and checks the header; nothing decoded

# Checked in order; the last entry takes everything else and names the formats it reads when it fails.
DECODERS: dict[str, tuple[Detector, Prober]] = {
    "dicom": (is_dicom, probe_dicom),
    "picture": (lambda data: True, probe_picture),
}
CANNOT_DECODE = "the image cannot be decoded (corrupt, or inconsistent with its header); send the original file"


def probe_view(view: ViewInput, limits: ImageLimits) -> ProbedView:
    """Sniff one view's format, parse and check its header (limits included); nothing is decoded.

    Raises:
        ImageError: the header is unreadable or over the limits (the subclass says why; the message names the view).
    """
    prober = next(prober for detector, prober in DECODERS.values() if detector(view.data))
    return _as_image_error(view.name, lambda: prober(view.data, limits, view.name))


def decode_probed(view: ProbedView) -> list[DecodedView]:
    """Decode a probed view into one view per frame; any failure is that view's ImageError, never another type."""
    return _as_image_error(view.name, view.decode)


def _as_image_error(name: str, work: Callable):
    """Run `work`; an exception that is not a typed ImageError becomes a TruncatedImage naming the view.

    Codecs and LUT code raise many types on hostile input and their texts may quote header values, so the
    text is dropped: only its type is logged, at debug level.
    """
    try:
        return work()
    except ImageError:
        raise
    except Exception as error:  # noqa: BLE001 - any codec or header failure on one view is that view's error
        logger.debug("view decoding failed with %s", type(error).__name__)
        raise TruncatedImage(name, CANNOT_DECODE) from None


def decode_views(views: Sequence[ViewInput], limits: ImageLimits) -> list[DecodedView]:
    """Probe and decode the views of one study in order (tools and tests; the service goes through admission).

    Raises:
        MixedStudies: DICOM views of more than one StudyInstanceUID.
        ImageError: a view cannot be decoded (its subclass says why; the message names the view).
    """
    decoded = [frame for view in views for frame in decode_probed(probe_view(view, limits))]
    check_single_study(decoded)
    return decoded


def load_view_file(path: str | Path, limits: ImageLimits) -> list[DecodedView]:
    """Read and decode one regular file of any format (tools: gate fitting, benchmarks); a FIFO is refused unread."""
    path = Path(path)
    name = printable_name(path.name)
    if not path.is_file():
        raise UnreadableImage(name, "not a regular file (a folder, FIFO or device); list image files only")
    return decode_views([ViewInput(name, path.read_bytes())], limits)


def check_single_study(views: Sequence[DecodedView]) -> None:
    """Raise MixedStudies naming the views of each StudyInstanceUID when there is more than one."""
    views_by_study: dict[str, list[str]] = {}
    for view in views:
        if view.dicom is not None:
            views_by_study.setdefault(view.dicom.study_instance_uid, []).append(view.name)
    if len(views_by_study) > 1:
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
