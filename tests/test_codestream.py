"""The codestream header reader on real encoded streams (sizes read back), crafted headers and damaged bytes."""

from __future__ import annotations

import io
import struct
import zlib

import imagecodecs
import numpy as np
import pytest
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGLSLossless, JPEGLSNearLossless, RLELossless

from classifiers.decoding.codestream import (
    CodestreamError,
    CodestreamHeader,
    inflated_size,
    read_codestream_header,
    read_j2k_header,
    read_jpeg_header,
    read_rle_header,
)
from fuzz.crafted import set_j2k_size, set_jpeg_size, small_dataset

ROWS, COLUMNS = 40, 36
PIXELS = (np.add.outer(np.arange(ROWS), np.arange(COLUMNS)) * 3 % 256).astype(np.uint8)
PIXELS12 = PIXELS.astype(np.uint16) * 16


def pillow_jpeg(mode: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(PIXELS).convert(mode).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def pydicom_frame(pixels: np.ndarray, syntax, bits_stored: int = 8, **options) -> bytes:
    """The one encapsulated frame of a dataset compressed by pydicom's encoder for `syntax`."""
    dataset = small_dataset(pixels, bits_stored, "RGB" if pixels.ndim == 3 else "MONOCHROME2")
    dataset.compress(syntax, **options)
    return next(generate_frames(dataset.PixelData, number_of_frames=1))


RGB = np.stack([PIXELS, 255 - PIXELS, PIXELS // 2], axis=-1)
REAL_STREAMS = [
    # (id, reader, bytes, expected header)
    ("pillow-baseline-gray", read_jpeg_header, lambda: pillow_jpeg("L"),
     CodestreamHeader("jpeg", "SOF0", ROWS, COLUMNS, 1, 8, scans=1)),
    ("pillow-baseline-rgb", read_jpeg_header, lambda: pillow_jpeg("RGB"),
     CodestreamHeader("jpeg", "SOF0", ROWS, COLUMNS, 3, 8, scans=1)),
    ("pillow-progressive", read_jpeg_header, lambda: pillow_jpeg("RGB", progressive=True),
     CodestreamHeader("jpeg", "SOF2", ROWS, COLUMNS, 3, 8, scans=10)),
    ("imagecodecs-lossless-12", read_jpeg_header,
     lambda: bytes(imagecodecs.jpeg8_encode(PIXELS12, lossless=True, predictor=1, bitspersample=12)),
     CodestreamHeader("jpeg", "SOF3", ROWS, COLUMNS, 1, 12, scans=1)),
    ("imagecodecs-jpegls", read_jpeg_header, lambda: bytes(imagecodecs.jpegls_encode(PIXELS)),
     CodestreamHeader("jpeg-ls", "SOF55", ROWS, COLUMNS, 1, 8, scans=1)),
    ("pyjpegls-12", read_jpeg_header, lambda: pydicom_frame(PIXELS12, JPEGLSLossless, bits_stored=12),
     CodestreamHeader("jpeg-ls", "SOF55", ROWS, COLUMNS, 1, 12, scans=1)),
    ("pyjpegls-near-lossless", read_jpeg_header, lambda: pydicom_frame(PIXELS, JPEGLSNearLossless, jls_error=2),
     CodestreamHeader("jpeg-ls", "SOF55", ROWS, COLUMNS, 1, 8, scans=1)),
    ("openjpeg-lossless-12", read_j2k_header, lambda: pydicom_frame(PIXELS12, JPEG2000Lossless, bits_stored=12),
     CodestreamHeader("jpeg2000", "SIZ", ROWS, COLUMNS, 1, 12)),
    ("openjpeg-lossy-rgb", read_j2k_header, lambda: pydicom_frame(RGB, JPEG2000, j2k_cr=[20]),
     CodestreamHeader("jpeg2000", "SIZ", ROWS, COLUMNS, 3, 8)),
    ("imagecodecs-jp2", read_j2k_header, lambda: bytes(imagecodecs.jpeg2k_encode(PIXELS, codecformat="jp2")),
     CodestreamHeader("jpeg2000", "SIZ", ROWS, COLUMNS, 1, 8)),
    ("imagecodecs-htj2k", read_j2k_header, lambda: bytes(imagecodecs.htj2k_encode(PIXELS12)),
     CodestreamHeader("jpeg2000", "SIZ", ROWS, COLUMNS, 1, 16)),
    ("rle-8", read_rle_header, lambda: pydicom_frame(PIXELS, RLELossless),
     CodestreamHeader("rle", "RLE", None, None, None, None, segments=1)),
    ("rle-16", read_rle_header, lambda: pydicom_frame(PIXELS12, RLELossless, bits_stored=12),
     CodestreamHeader("rle", "RLE", None, None, None, None, segments=2)),
    ("rle-rgb", read_rle_header, lambda: pydicom_frame(RGB, RLELossless),
     CodestreamHeader("rle", "RLE", None, None, None, None, segments=3)),
]


@pytest.mark.parametrize(("reader", "make", "expected"), [row[1:] for row in REAL_STREAMS],
                         ids=[row[0] for row in REAL_STREAMS])
def test_real_streams_give_their_true_size(reader, make, expected: CodestreamHeader) -> None:
    assert reader(make()) == expected


def test_signed_j2k_components_are_flagged() -> None:
    signed = (PIXELS.astype(np.int16) - 128).astype(np.int16)
    header = read_j2k_header(bytes(imagecodecs.jpeg2k_encode(signed, codecformat="j2k")))
    assert header.signed and header.precision == 16


@pytest.mark.parametrize(("syntax", "expected_kind"), [
    ("1.2.840.10008.1.2.4.50", "jpeg"), ("1.2.840.10008.1.2.4.80", "jpeg-ls"), ("1.2.840.10008.1.2.4.90", "jpeg2000"),
    ("1.2.840.10008.1.2.4.201", "jpeg2000"), ("1.2.840.10008.1.2.5", "rle"),
])
def test_reader_chosen_by_transfer_syntax(syntax: str, expected_kind: str) -> None:
    streams = {"jpeg": pillow_jpeg("L"), "jpeg-ls": bytes(imagecodecs.jpegls_encode(PIXELS)),
               "jpeg2000": bytes(imagecodecs.jpeg2k_encode(PIXELS, codecformat="j2k")),
               "rle": pydicom_frame(PIXELS, RLELossless)}
    assert read_codestream_header(streams[expected_kind], syntax).kind == expected_kind
    with pytest.raises(KeyError):
        read_codestream_header(streams["jpeg"], "1.2.840.10008.1.2.4.100")  # MPEG2: no reader


@pytest.mark.parametrize(("make", "resize", "reader"), [
    (lambda: pillow_jpeg("L"), set_jpeg_size, read_jpeg_header),
    (lambda: bytes(imagecodecs.jpeg8_encode(PIXELS, lossless=True, predictor=1)), set_jpeg_size, read_jpeg_header),
    (lambda: bytes(imagecodecs.jpegls_encode(PIXELS)), set_jpeg_size, read_jpeg_header),
    (lambda: pydicom_frame(PIXELS, JPEG2000Lossless), set_j2k_size, read_j2k_header),
], ids=["sof0", "sof3", "sof55", "siz"])
def test_a_lying_header_is_read_as_it_lies(make, resize, reader) -> None:
    header = reader(resize(make(), 60000, 60000))
    assert (header.rows, header.columns, header.pixels) == (60000, 60000, 3_600_000_000)


def insert_after_frame_header(stream: bytes, segment: bytes) -> bytes:
    """`segment` placed right after the first SOF/SOF55 segment."""
    position = 2
    while stream[position + 1] not in (0xC0, 0xC3, 0xF7):
        position += 2 + struct.unpack(">H", stream[position + 2:position + 4])[0]
    end = position + 2 + struct.unpack(">H", stream[position + 2:position + 4])[0]
    return stream[:end] + segment + stream[end:]


def test_zero_lines_take_the_dnl_segment() -> None:
    stream = set_jpeg_size(pillow_jpeg("L"), 0, COLUMNS)
    with pytest.raises(CodestreamError, match="does not state the image size"):
        read_jpeg_header(stream)
    with_dnl = stream[:-2] + b"\xff\xdc\x00\x04" + struct.pack(">H", 50000) + stream[-2:]
    assert read_jpeg_header(with_dnl).rows == 50000
    contradicting = pillow_jpeg("L")[:-2] + b"\xff\xdc\x00\x04" + struct.pack(">H", 50000) + b"\xff\xd9"
    with pytest.raises(CodestreamError, match="DNL segment contradicts"):
        read_jpeg_header(contradicting)


def test_jpeg_ls_oversize_dimensions_are_read() -> None:
    stream = set_jpeg_size(bytes(imagecodecs.jpegls_encode(PIXELS)), 0, 0)
    lse = b"\xff\xf8\x00\x0c\x04\x04" + struct.pack(">II", 70000, 80000)  # LSE ID 4, 4-byte dimensions
    header = read_jpeg_header(insert_after_frame_header(stream, lse))
    assert (header.rows, header.columns) == (70000, 80000)


def test_hierarchical_stream_is_bounded_by_its_dhp() -> None:
    stream = pillow_jpeg("L")
    dhp = b"\xff\xde\x00\x0b" + struct.pack(">BHHB", 8, 50000, 50000, 1) + b"\x01\x11\x00"
    header = read_jpeg_header(stream[:2] + dhp + stream[2:])
    assert (header.marker, header.rows, header.columns) == ("DHP", 50000, 50000)
    small_dhp = b"\xff\xde\x00\x0b" + struct.pack(">BHHB", 8, 10, 10, 1) + b"\x01\x11\x00"
    with pytest.raises(CodestreamError, match="larger than the image its DHP declares"):
        read_jpeg_header(stream[:2] + small_dhp + stream[2:])


def test_a_second_frame_header_is_refused() -> None:
    stream = pillow_jpeg("L")
    second = set_jpeg_size(stream, 60000, 60000)[2:]  # another whole image, its SOF saying 60000x60000
    with pytest.raises(CodestreamError, match="more than one frame header"):
        read_jpeg_header(stream[:-2] + second)


def test_jp2_with_an_extended_box_length() -> None:
    codestream = bytes(imagecodecs.jpeg2k_encode(PIXELS, codecformat="j2k"))
    jp2 = (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">I4s", 20, b"ftyp") + b"jp2 \x00\x00\x00\x00jp2 "
           + struct.pack(">I4sQ", 1, b"jp2c", 16 + len(codestream)) + codestream)
    assert read_j2k_header(jp2).rows == ROWS


@pytest.mark.parametrize(("reader", "data", "message"), [
    (read_jpeg_header, b"\x89PNG\r\n\x1a\n", "does not start with a JPEG SOI"),
    (read_jpeg_header, b"\xff\xd8\xff\xd9", "no frame header"),
    (read_jpeg_header, b"\xff\xd8\xff\xe0\x10\x00", "longer than the stream"),
    (read_jpeg_header, b"\xff\xd8\xff\xc0\x00\x0b\x08\x00\x10\x00\x10\x00\x01\x11\x00", "component list is empty"),
    (read_j2k_header, b"\xff\xd8\xff\xc0", "not a JPEG 2000 codestream"),
    (read_j2k_header, b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x08free", "no codestream box"),
    (read_rle_header, bytes(63), "shorter than its 64-byte header"),
    (read_rle_header, struct.pack("<16I", 16, *([64] * 15)) + bytes(100), "segment count is not 1 to 15"),
    (read_rle_header, struct.pack("<16I", 0, *([0] * 15)) + bytes(100), "segment count is not 1 to 15"),
    (read_rle_header, struct.pack("<16I", 2, 64, 64, *([0] * 13)) + bytes(100), "out of order"),
    (read_rle_header, struct.pack("<16I", 1, 500, *([0] * 14)) + bytes(100), "out of order or past the end"),
], ids=["png", "no-sof", "long-segment", "no-components", "j2k-not", "jp2-empty", "rle-short", "rle-16",
        "rle-0", "rle-order", "rle-past-end"])
def test_unreadable_headers_are_codestream_errors(reader, data: bytes, message: str) -> None:
    with pytest.raises(CodestreamError, match=message):
        reader(data)


def test_j2k_siz_constraints() -> None:
    stream = bytearray(pydicom_frame(PIXELS, JPEG2000Lossless))
    siz = stream.index(b"\xff\x51") + 2
    empty = bytearray(stream)
    empty[siz + 12:siz + 16] = struct.pack(">I", COLUMNS)  # XOsiz = Xsiz: no columns
    with pytest.raises(CodestreamError, match="empty image area"):
        read_j2k_header(bytes(empty))
    tiny_tiles = set_j2k_size(bytes(stream), 60000, 60000)
    tiny_tiles = tiny_tiles[:siz + 20] + struct.pack(">II", 16, 16) + tiny_tiles[siz + 28:]
    with pytest.raises(CodestreamError, match="more tiles than a codestream can hold"):
        read_j2k_header(tiny_tiles)


@pytest.mark.parametrize("row", REAL_STREAMS, ids=[row[0] for row in REAL_STREAMS])
def test_every_prefix_is_a_header_or_a_codestream_error(row) -> None:
    _, reader, make, expected = row
    stream = make()
    for length in range(0, min(len(stream), 400)):
        try:
            header = reader(stream[:length])
        except CodestreamError:
            continue
        assert (header.rows, header.columns) == (expected.rows, expected.columns)


def test_inflated_size_counts_without_keeping_the_output() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    payload = bytes(range(256)) * 1000
    assert inflated_size(compressor.compress(payload) + compressor.flush(), 10**9) == len(payload)
    bomb_compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = bomb_compressor.compress(bytes(200_000_000)) + bomb_compressor.flush()  # ~200 KB inflating to 200 MB
    assert len(bomb) < 300_000
    assert 1_000_000 < inflated_size(bomb, 1_000_000) <= 1_000_000 + (1 << 20)
    with pytest.raises(CodestreamError, match="not valid deflate data"):
        inflated_size(b"\xff" * 100, 10**6)
