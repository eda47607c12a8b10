"""Degenerate Modality and VOI LUT values refused before decoding: a NaN slope or an inf window is not an image.

Rescale Slope NaN or 1e308, Window Width inf: the LUTs would turn every pixel into NaN, inf or one value
and the models would score a blank. Messages name the attribute and what is expected, never the value.
"""

from __future__ import annotations

import math

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from classifiers.errors import MalformedDicom

# Larger than any real rescale or window (16-bit values times real slopes); 1e308 or 1e20 are not images.
MAX_LUT_MAGNITUDE = 1e12
ATTRIBUTE_NAMES = {"RescaleSlope": "Rescale Slope", "RescaleIntercept": "Rescale Intercept",
                   "WindowCenter": "Window Center", "WindowWidth": "Window Width"}
# VOI LUT Functions whose Window Width may be under 1 (PS3.3 C.11.2.1.3): LINEAR (the default) needs >= 1.
FRACTIONAL_WIDTH_FUNCTIONS = ("LINEAR_EXACT", "SIGMOID")


def check_lut_values(dataset: Dataset, name: str) -> None:
    """Refuse (400) rescale and window values that are not finite, absurdly large, or out of their range.

    Raises:
        MalformedDicom: naming the attribute (Rescale Slope or Intercept, Window Center or Width) and what is
            expected of it.
    """
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        _check_finite(dataset, keyword, name)
    if any(value == 0 for value in _values(dataset, "RescaleSlope", name)):
        raise MalformedDicom(name, "Rescale Slope is 0, which maps every pixel to one value; send the original file")
    if dataset.get("VOILUTSequence") or dataset.get("WindowCenter") is None or dataset.get("WindowWidth") is None:
        return  # the window is not applied (see `classifiers.decoding.dicom.display_pixels`)
    for keyword in ("WindowCenter", "WindowWidth"):
        _check_finite(dataset, keyword, name)
    function = str(dataset.get("VOILUTFunction") or "LINEAR").strip().upper()
    fractional = function in FRACTIONAL_WIDTH_FUNCTIONS
    if any((width <= 0) if fractional else (width < 1) for width in _values(dataset, "WindowWidth", name)):
        expected = "> 0 for a LINEAR_EXACT or SIGMOID window" if fractional else ">= 1 for a LINEAR window"
        raise MalformedDicom(name, f"Window Width must be {expected}; send the original file or one without a"
                                   " window")


def _check_finite(dataset: Dataset, keyword: str, name: str) -> None:
    """Every value of `keyword` finite and within `MAX_LUT_MAGNITUDE`."""
    if any(not math.isfinite(value) or abs(value) > MAX_LUT_MAGNITUDE for value in _values(dataset, keyword, name)):
        raise MalformedDicom(name, f"{ATTRIBUTE_NAMES[keyword]} must be a finite number of magnitude at most"
                                   f" {MAX_LUT_MAGNITUDE:.0e}; send the original file")


def _values(dataset: Dataset, keyword: str, name: str) -> list[float]:
    """The numbers of a (possibly multi-valued) DS attribute; none when absent or empty."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        return [float(item) for item in items]
    except (TypeError, ValueError, OverflowError):
        raise MalformedDicom(name, f"{ATTRIBUTE_NAMES[keyword]} is not a number; send the original file") from None
