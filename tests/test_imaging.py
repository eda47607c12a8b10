"""Decoding, limits and the shared resize of classifiers.decoding.imaging."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from classifiers import (
    ImageLimits,
    ImageTooLarge,
    ImageTooSmall,
    TruncatedImage,
    UnreadableImage,
    decode_image,
    resize_image,
)
from tests.support.helpers import encode_image

GRADIENT = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (96, 1))  # (96, 128), columns 0..254


def _save(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


LOSSLESS_CASES = [
    (image_format, mode)
    for image_format in ("PNG", "BMP", "TIFF")
    for mode in ("L", "LA", "RGB", "RGBA", "P")
    if (image_format, mode) != ("BMP", "LA")  # BMP cannot store gray + alpha
]


@pytest.mark.parametrize(("image_format", "mode"), LOSSLESS_CASES)
def test_decode_lossless_formats_and_modes_give_the_gray_values(image_format: str, mode: str) -> None:
    image = Image.fromarray(GRADIENT, mode="L").convert(mode)
    decoded = decode_image(_save(image, image_format))
    pixels = np.asarray(decoded.convert("RGB"))
    assert decoded.mode in ("L", "RGB") and pixels.shape == (96, 128, 3)
    assert decoded.mode == "L" or mode not in ("L", "LA")  # gray stays one channel
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])
    assert np.abs(pixels[..., 0].astype(int) - GRADIENT).max() <= 1


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_decode_jpeg_modes(mode: str) -> None:
    image = Image.fromarray(GRADIENT, mode="L").convert(mode)
    decoded = decode_image(_save(image, "JPEG", quality=95))
    pixels = np.asarray(decoded.convert("RGB"))
    assert decoded.mode == ("L" if mode == "L" else "RGB") and pixels.shape == (96, 128, 3)
    assert np.abs(pixels[..., 1].astype(int) - GRADIENT).mean() < 4


@pytest.mark.parametrize(
    ("peak", "expected_peak"),
    [(65535, 255), (4095, 255), (2047, 128)],  # full 16-bit, 12-bit data, 12-bit data using half the range
)
def test_decode_16_bit_grayscale_scales_to_8_bit(peak: int, expected_peak: int) -> None:
    values = np.linspace(0, peak, 128).round().astype(np.uint16)
    data = _save(Image.fromarray(np.tile(values, (64, 1))), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    decoded = decode_image(data)
    pixels = np.asarray(decoded)
    assert decoded.mode == "L" and pixels[0, 0] == 0
    assert abs(int(pixels[0, -1]) - expected_peak) <= 1


def test_decode_applies_exif_orientation() -> None:
    pixels = np.zeros((60, 100), dtype=np.uint8)
    pixels[:, :10] = 255  # bright band on the left edge of the stored image
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = np.asarray(decode_image(_save(image, "JPEG", quality=95, exif=exif)))
    assert decoded.shape == (100, 60)
    assert decoded[:10].mean() > 200 and decoded[-10:].mean() < 50


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", UnreadableImage),
        (b"this is a text file, not a radiograph\n" * 10, UnreadableImage),
        (b"%PDF-1.4\n%binary", UnreadableImage),
    ],
)
def test_decode_rejects_non_images(data: bytes, error: type) -> None:
    with pytest.raises(error, match="scan.png"):
        decode_image(data, name="scan.png")


def test_decode_rejects_formats_outside_the_supported_list_unparsed(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import GifImagePlugin

    parsed: list[bytes] = []
    original = GifImagePlugin.GifImageFile._open
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_open", lambda self: parsed.append(b"") or original(self))
    gif = _save(Image.fromarray(GRADIENT), "GIF")
    assert Image.open(io.BytesIO(gif)).format == "GIF" and parsed  # the spy sees Pillow's own open
    parsed.clear()
    with pytest.raises(UnreadableImage, match="not an image we can read; send a PNG, JPEG, BMP, TIFF or DICOM"):
        decode_image(gif)
    assert parsed == []  # only the plugins of the supported formats read the header


def jpeg_with_scans(count: int) -> bytes:
    """A progressive JPEG with `count` scans: its last scan repeated (each a valid refinement to libjpeg)."""
    from classifiers.decoding.codestream import read_jpeg_header

    data = _save(Image.fromarray(GRADIENT), "JPEG", progressive=True)
    last_scan = data.rindex(b"\xff\xda")
    repeats = count - read_jpeg_header(data).scans + 1
    return data[:last_scan] + data[last_scan:-2] * repeats + data[-2:]


def test_a_jpeg_scan_bomb_is_refused_before_decoding() -> None:
    from classifiers.decoding.codestream import MAX_JPEG_SCANS, read_jpeg_header

    bomb = jpeg_with_scans(MAX_JPEG_SCANS + 1)
    assert read_jpeg_header(bomb).scans == MAX_JPEG_SCANS + 1
    with pytest.raises(TruncatedImage, match=f"more than {MAX_JPEG_SCANS} scans"):
        decode_image(bomb, ImageLimits(min_side=8))
    assert decode_image(_save(Image.fromarray(GRADIENT), "JPEG", progressive=True), ImageLimits(min_side=8))


def test_a_jpeg_whose_frame_headers_disagree_is_refused() -> None:
    from fuzz.crafted import set_jpeg_size

    data = _save(Image.fromarray(GRADIENT), "JPEG")
    second = set_jpeg_size(data, 60000, 60000)[2:]  # a second image whose SOF says 60000x60000
    with pytest.raises(TruncatedImage, match="more than one frame header"):
        decode_image(data[:-2] + second, ImageLimits(min_side=8))


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_decode_rejects_truncated_images(image_format: str) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)
    data = encode_image(noise, image_format)
    with pytest.raises(TruncatedImage, match="truncated"):
        decode_image(data[: len(data) // 2], name="cut.png")


def test_pixel_limit_is_checked_before_decoding() -> None:
    # The header claims 5000x5000 but the pixel data is cut off: only a pre-decode check can say "too large".
    data = encode_image(np.zeros((5000, 5000), dtype=np.uint8))[:4000]
    with pytest.raises(ImageTooLarge, match="25,000,000 pixels"):
        decode_image(data, ImageLimits(max_pixels=1_000_000))


def test_pillow_decompression_bomb_becomes_image_too_large() -> None:
    data = encode_image(np.zeros((15000, 15000), dtype=np.uint8))[:5000]  # 225 Mpx > Pillow's own 2x limit
    with pytest.raises(ImageTooLarge):
        decode_image(data, ImageLimits(max_pixels=10**12))


def test_too_small_image_is_rejected() -> None:
    with pytest.raises(ImageTooSmall, match="shorter side"):
        decode_image(encode_image(np.zeros((20, 400), dtype=np.uint8)), ImageLimits(min_side=32))


def test_resize_image_shape_dtype_and_values() -> None:
    image = decode_image(encode_image(np.full((300, 500), 77, dtype=np.uint8)))
    resized = resize_image(image, (64, 32))
    assert resized.shape == (64, 32, 3) and resized.dtype == np.uint8
    assert np.all(resized == 77)


def test_resize_image_is_pillow_bilinear() -> None:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (90, 70, 3), dtype=np.uint8))
    expected = np.asarray(image.resize((40, 50), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resize_image(image, (50, 40)), expected)


def test_gray_views_resize_to_the_numbers_of_their_rgb_copy() -> None:
    gray = decode_image(encode_image(np.random.default_rng(2).integers(0, 255, (400, 512), dtype=np.uint8)))
    assert gray.mode == "L"  # kept one channel: a third of the resizing work
    for size in ((224, 224), (64, 64), (400, 512)):
        np.testing.assert_array_equal(resize_image(gray, size), resize_image(gray.convert("RGB"), size))


def test_png_text_chunks_cannot_inflate_megabytes() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for index in range(5):
        info.add_text(f"note{index}", "x" * 1_000_000, zip=True)  # 5 MB of text in ~5 KB of zTXt
    data = _save(Image.fromarray(GRADIENT), "PNG", pnginfo=info)
    assert len(data) < 50_000
    with pytest.raises(UnreadableImage):
        decode_image(data, ImageLimits(min_side=8))
    small = PngImagePlugin.PngInfo()
    small.add_text("note", "x" * 100_000, zip=True)
    assert decode_image(_save(Image.fromarray(GRADIENT), "PNG", pnginfo=small), ImageLimits(min_side=8))
