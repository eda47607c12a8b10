"""Compressed DICOM frames whose own header lies about their size: the seeds of `fuzz.codestreams` and its tests.

Each frame is first encoded for real (Pillow, imagecodecs, pydicom's encoders), then the size fields of its
header (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ) or the RLE segment count are overwritten in place.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import imagecodecs
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xF7}  # SOF0-3 and SOF55: the frames the seeds hold
HUGE = 60000


def set_jpeg_size(frame: bytes, rows: int, columns: int) -> bytes:
    """A JPEG or JPEG-LS frame with its first frame header (SOF0-3, SOF55) saying `rows` x `columns`."""
    data = bytearray(frame)
    position = 2
    while data[position + 1] not in FRAME_MARKERS:
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        position += 2 + length
    data[position + 5:position + 9] = struct.pack(">HH", rows, columns)
    return bytes(data)


def set_j2k_size(frame: bytes, rows: int, columns: int) -> bytes:
    """A J2K codestream whose SIZ says `rows` x `columns` (image and tile offsets left as they are)."""
    data = bytearray(frame)
    start = data.index(b"\xff\x4f\xff\x51") + 4
    x_offset, y_offset = struct.unpack(">II", data[start + 12:start + 20])
    data[start + 4:start + 12] = struct.pack(">II", columns + x_offset, rows + y_offset)
    data[start + 20:start + 28] = struct.pack(">II", columns + x_offset, rows + y_offset)  # one tile
    return bytes(data)


def set_rle_segments(frame: bytes, segments: int) -> bytes:
    """An RLE frame whose header claims `segments` segments, their offsets spread evenly over its data."""
    step = (len(frame) - 64) // segments
    offsets = [64 + index * step for index in range(segments)] + [0] * (15 - segments)
    return struct.pack("<16I", segments, *offsets) + frame[64:]


def small_dataset(pixels: np.ndarray, bits_stored: int = 8, photometric: str = "MONOCHROME2") -> Dataset:
    """A DX instance of `pixels` ((rows, columns), or (rows, columns, 3) for RGB), native; no patient data."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.SOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.Modality = "DX"
    dataset.set_pixel_data(pixels, photometric, bits_stored)
    return dataset


def _replace_frames(dataset: Dataset, frames: list[bytes], syntax: UID) -> Dataset:
    dataset.PixelData = encapsulate(frames)
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = syntax
    return dataset


def jpeg_baseline_dataset(pixels: np.ndarray) -> Dataset:
    """8-bit pixels as JPEG baseline (SOF0, Pillow)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buffer, format="JPEG", quality=90)
    return _replace_frames(small_dataset(pixels), [buffer.getvalue()], JPEGBaseline8Bit)


def jpeg_lossless_dataset(pixels: np.ndarray) -> Dataset:
    """8-bit pixels as JPEG lossless, first-order prediction (SOF3, imagecodecs)."""
    frame = bytes(imagecodecs.jpeg8_encode(pixels, lossless=True, predictor=1, bitspersample=8))
    return _replace_frames(small_dataset(pixels), [frame], JPEGLosslessSV1)


def pydicom_compressed_dataset(pixels: np.ndarray, syntax: UID, bits_stored: int = 8) -> Dataset:
    """Pixels compressed by pydicom's own encoders (JPEG-LS: pyjpegls, JPEG 2000: openjpeg, RLE)."""
    dataset = small_dataset(pixels, bits_stored)
    dataset.compress(syntax)
    return dataset


def patch_frames(dataset: Dataset, patch: Callable[[bytes], bytes]) -> Dataset:
    """The dataset with `patch` applied to each of its encapsulated frames."""
    frames = [patch(frame) for frame in generate_frames(dataset.PixelData, number_of_frames=1)]
    return _replace_frames(dataset, frames, dataset.file_meta.TransferSyntaxUID)


def lying_datasets(pixels: np.ndarray) -> dict[str, Dataset]:
    """Small datasets whose compressed frame's own header disagrees with them, by case name.

    `*-huge` frames claim 60000x60000 (over any limit: 413); `*-larger` frames claim one row and column more
    than the dataset (400); `rle-segments` claims 3 segments for an 8-bit gray frame (400).
    """
    rows, columns = pixels.shape
    makers = {
        "jpeg-baseline": (lambda: jpeg_baseline_dataset(pixels), set_jpeg_size),
        "jpeg-lossless": (lambda: jpeg_lossless_dataset(pixels), set_jpeg_size),
        "jpeg-ls": (lambda: pydicom_compressed_dataset(pixels, JPEGLSLossless), set_jpeg_size),
        "jpeg2000": (lambda: pydicom_compressed_dataset(pixels, JPEG2000Lossless), set_j2k_size),
    }
    cases: dict[str, Dataset] = {}
    for name, (make, resize) in makers.items():
        cases[f"{name}-huge"] = patch_frames(make(), lambda frame, resize=resize: resize(frame, HUGE, HUGE))
        cases[f"{name}-larger"] = patch_frames(
            make(), lambda frame, resize=resize: resize(frame, rows + 1, columns + 1))
    cases["rle-segments"] = patch_frames(pydicom_compressed_dataset(pixels, RLELossless),
                                         lambda frame: set_rle_segments(frame, 3))
    return cases
