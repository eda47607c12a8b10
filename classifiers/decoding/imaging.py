"""Decode radiographs from bytes and resize them: the one path shared by serving, training and scoring."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from classifiers.decoding.codestream import MAX_JPEG_SCANS, CodestreamError, read_jpeg_header
from classifiers.errors import ImageTooLarge, ImageTooSmall, TruncatedImage, UnreadableImage
from classifiers.names import printable_name
from classifiers.results import DecodedView, ProbedView

SUPPORTED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF")
OPENING_PLUGINS = ("PNG", "JPEG", "BMP", "TIFF")  # Pillow opens MPO files through its JPEG plugin
# PNG text and ICC chunks are inflated at open, up to Pillow's MAX_TEXT_MEMORY (64 MB) per image; radiographs
# need none of it, so a few kilobytes of zTXt cannot cost megabytes (Pillow's own limit, made smaller).
PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, 4 * 1024 * 1024)
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
TWELVE_BIT_MAX = 4095
SIXTEEN_BIT_MAX = 65535


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every view before its pixels are decoded."""

    max_pixels: int = 40_000_000
    min_side: int = 32


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), name: str = "image") -> Image.Image:
    """Decode image bytes into an 8-bit Pillow image with EXIF orientation applied: L when gray, else RGB.

    Grayscale (8- or 16-bit) stays one channel (8-bit L): resizing it costs a third of an RGB copy's, and
    `resize_image` replicates it to three channels after, with the same numbers. Alpha is dropped.

    Raises:
        UnreadableImage: not a PNG, JPEG, BMP or TIFF.
        ImageTooLarge: more than `limits.max_pixels` pixels (checked from the header, before decoding).
        ImageTooSmall: shorter side under `limits.min_side`.
        TruncatedImage: the pixel data is cut short or corrupt.
    """
    return load_opened(_open_checked(data, limits, name), name)


def load_opened(image: Image.Image, name: str) -> Image.Image:
    """Decode an image `_open_checked` opened into 8-bit L or RGB with EXIF orientation (see `decode_image`)."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise TruncatedImage(name, f"the image data is truncated or corrupt ({error}); send the whole file") from None
    image = ImageOps.exif_transpose(image) or image
    return _to_eight_bit(image)


def probe_picture(data: bytes, limits: ImageLimits, name: str) -> ProbedView:
    """Open a picture's header once and check it (see `decode_image`); decoding reuses the opened image."""
    image = _open_checked(data, limits, name)
    width, height = image.size
    return ProbedView(name, 1, width * height, lambda: [DecodedView(name, load_opened(image, name))])


def load_image_file(path: str | Path, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Read and decode one regular image file (see `decode_image`); a FIFO or device is refused unread."""
    path = Path(path)
    name = printable_name(path.name)
    if not path.is_file():
        raise UnreadableImage(name, "not a regular file (a folder, FIFO or device); list image files only")
    return decode_image(path.read_bytes(), limits, name=name)


def resize_image(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Resize an 8-bit L or RGB image to `size` = (height, width) with antialiased bilinear filtering, as RGB.

    A gray image is resized on its one channel, then replicated: the same numbers as resizing its RGB copy.

    Returns:
        (height, width, 3) uint8 array in [0, 255].
    """
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _open_checked(data: bytes, limits: ImageLimits, name: str) -> Image.Image:
    """Open the image header and apply the format and size limits without decoding pixels."""
    if not data:
        raise UnreadableImage(name, "the file is empty; send a PNG, JPEG, BMP, TIFF or DICOM image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the plugins of the formats we read parse the header: no other parser sees hostile bytes.
            image = Image.open(io.BytesIO(data), formats=OPENING_PLUGINS)
    except Image.DecompressionBombError:
        raise ImageTooLarge(name, f"the image has more than {limits.max_pixels:,} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UnreadableImage(name, "not an image we can read; send a PNG, JPEG, BMP, TIFF or DICOM image") from None
    if image.format not in SUPPORTED_FORMATS:
        raise UnreadableImage(name, f"format {image.format} is not supported; send a PNG, JPEG, BMP, TIFF or DICOM"
                                    " image")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            name, f"{width}x{height} is {width * height:,} pixels, over the limit of {limits.max_pixels:,}"
        )
    if min(width, height) < limits.min_side:
        raise ImageTooSmall(
            name, f"{width}x{height} is too small for a radiograph; the shorter side must be >= {limits.min_side} px"
        )
    if image.format in ("JPEG", "MPO"):
        _check_jpeg_stream(data, (width, height), name)
    return image


def _check_jpeg_stream(data: bytes, size: tuple[int, int], name: str) -> None:
    """Every frame header of the JPEG the size Pillow read, and no scan bomb; nothing decoded."""
    try:
        header = read_jpeg_header(data)
    except CodestreamError as error:
        raise TruncatedImage(name, f"the JPEG stream is corrupt ({error}); send the whole file") from None
    if (header.columns, header.rows) != size:
        raise TruncatedImage(name, "the JPEG stream's frame headers disagree on the image size; send the original"
                                   " file")
    if header.scans > MAX_JPEG_SCANS:
        raise TruncatedImage(name, f"the JPEG stream has more than {MAX_JPEG_SCANS} scans; send the original file")


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit L (gray modes; 16-bit data scaled to 0..255) or 8-bit RGB (the rest)."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        return _high_bit_depth_to_gray8(image)
    if image.mode in ("1", "LA", "La", "L"):
        return image.convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


def _high_bit_depth_to_gray8(image: Image.Image) -> Image.Image:
    """Scale 16-bit (or 32-bit) grayscale to 8 bits.

    12-bit data stored in 16-bit files (maximum <= 4095) is scaled from 0..4095, other 16-bit data from
    0..65535, and wider data from 0..its maximum.
    """
    pixels = np.asarray(image).astype(np.float64)  # 8 bytes a pixel: the operations below work in place
    peak = float(pixels.max()) if pixels.size else 0.0
    if peak <= TWELVE_BIT_MAX:
        ceiling = TWELVE_BIT_MAX
    elif peak <= SIXTEEN_BIT_MAX:
        ceiling = SIXTEEN_BIT_MAX
    else:
        ceiling = peak
    np.divide(pixels, ceiling, out=pixels)  # same operations, same order as pixels / ceiling * 255 + 0.5
    np.multiply(pixels, 255.0, out=pixels)
    np.add(pixels, 0.5, out=pixels)
    np.clip(pixels, 0, 255, out=pixels)
    return Image.fromarray(pixels.astype(np.uint8), mode="L")
