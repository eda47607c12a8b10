"""DICOM decoder: pixels as a radiologist's viewer shows them, one view per frame, header kept beside.

Reading, decompression (pylibjpeg plugins, pyjpegls, Pillow) and the Modality and VOI LUTs are
pydicom's; this module chooses and checks. Messages never quote header values: a malformed file may
put patient data anywhere.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from classifiers.decoding.dicom_frames import check_deflated_size, check_encoded_frames
from classifiers.decoding.dicom_header import check_radiograph, read_view_info
from classifiers.decoding.dicom_luts import check_lut_values
from classifiers.decoding.imaging import ImageLimits
from classifiers.errors import (
    ImageTooLarge,
    ImageTooSmall,
    MalformedDicom,
    NoPixelData,
    UnreadableImage,
    UnsupportedTransferSyntax,
)
from classifiers.logs import quiet_dicom_libraries
from classifiers.results import DecodedView, ProbedView

PREAMBLE_LENGTH = 128
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MAX_BITS_STORED = 16
HEADER_INCONSISTENT = "the DICOM header is inconsistent (Image Pixel module or file meta); send the original file"
# pydicom warns and logs (logger "pydicom") with element values in the text; a value may be patient data.
quiet_dicom_libraries()
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def is_dicom(data: bytes) -> bool:
    """True when the bytes are DICOM: a 128-byte preamble then `DICM`, or a dataset with no preamble."""
    if data[PREAMBLE_LENGTH:PREAMBLE_LENGTH + 4] == b"DICM":
        return True
    if len(data) < 8:
        return False
    group, element = struct.unpack("<HH", data[:4])
    return group in (0x0002, 0x0008) and element < 0x1000


def read_dicom(data: bytes, name: str) -> Dataset:
    """Parse a DICOM file held in memory, with or without preamble and file meta.

    Raises:
        MalformedDicom: the file is truncated or its element lengths are inconsistent.
    """
    quiet_dicom_libraries()
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        # Parse every element now, so a bad length fails here and not half-way through decoding.
        for element in dataset.iterall():
            _ = element.value
    except Exception:  # noqa: BLE001 - pydicom raises many types for bad input; all mean "malformed"
        raise MalformedDicom(name, "the DICOM file is truncated or malformed; send the complete file") from None
    if not isinstance(getattr(dataset, "file_meta", None), FileMetaDataset):
        dataset.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in dataset.file_meta:
        # No file meta: pydicom guessed the encoding of the dataset; native pixels follow it.
        implicit_vr = dataset.original_encoding[0]
        dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
    return dataset


def decode_dicom(data: bytes, limits: ImageLimits, name: str) -> list[DecodedView]:
    """Decode every frame of a DICOM radiograph into 8-bit gray (L) display images (one per frame).

    Raises:
        MalformedDicom: truncated file, missing or contradictory pixel module attributes, degenerate LUT values,
            pixel data too short or corrupt, a compressed frame whose own header disagrees with the dataset.
        NoPixelData: the object holds no image (an SR, a presentation state).
        UnsupportedModality: not a grayscale CR, DX, RG or OT image.
        UnsupportedTransferSyntax: no installed codec decodes its transfer syntax.
        ImageTooLarge, ImageTooSmall: Rows x Columns x Frames (or a compressed frame's own header) over the
            limit, or a side too short.
    """
    return probe_dicom(data, limits, name).decode()


def probe_dicom(data: bytes, limits: ImageLimits, name: str) -> ProbedView:
    """Parse and check a DICOM view once, its compressed frames' own headers included; nothing is decoded.

    Decoding (`ProbedView.decode`) reuses the parsed dataset.
    """
    dataset, num_frames = _checked_dataset(data, limits, name)
    try:
        _pixel_decoder(dataset, name)  # 415 for a syntax no codec reads, before its frames are looked at
        if UID(dataset.file_meta.TransferSyntaxUID).is_encapsulated:
            check_encoded_frames(dataset, num_frames, limits, name)  # before any codec runs
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
        raise MalformedDicom(name, HEADER_INCONSISTENT) from None
    num_pixels = int(dataset.Rows) * int(dataset.Columns) * num_frames
    return ProbedView(name, num_frames, num_pixels, lambda: decode_dicom_dataset(dataset, num_frames, name))


def decode_dicom_dataset(dataset: Dataset, num_frames: int, name: str) -> list[DecodedView]:
    """Decode the frames of a dataset `probe_dicom` passed (see `decode_dicom`)."""
    try:
        decoder = _pixel_decoder(dataset, name)
        header = _header_without_pixels(dataset)
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
        raise MalformedDicom(name, HEADER_INCONSISTENT) from None
    frames = []
    for index in range(num_frames):
        view_name = f"{name} [frame {index + 1}]" if num_frames > 1 else name
        try:
            stored, _ = decoder.as_array(dataset, index=index)
            display = display_pixels(stored, dataset)
        except BaseException as error:  # noqa: BLE001 - codec and LUT errors on bad input mean "corrupt pixel data"
            if not _is_codec_failure(error):
                raise
            raise MalformedDicom(view_name, "the pixel data cannot be decoded (corrupt or inconsistent with the"
                                            " header); send the original file") from None
        image = Image.fromarray(display, mode="L")
        frames.append(DecodedView(view_name, image, read_view_info(header, frame=index + 1), header))
    return frames


def _is_codec_failure(error: BaseException) -> bool:
    """Any Exception, and the PanicException (a BaseException) of Rust codecs such as pylibjpeg-rle."""
    return isinstance(error, Exception) or type(error).__name__ == "PanicException"


def _checked_dataset(data: bytes, limits: ImageLimits, name: str) -> tuple[Dataset, int]:
    """Parse and check a DICOM view up to its pixel module; returns the dataset and its number of frames."""
    check_deflated_size(data, limits, name)
    dataset = read_dicom(data, name)
    if not any(keyword in dataset for keyword in PIXEL_DATA_KEYWORDS):
        if "SOPClassUID" not in dataset or "Rows" in dataset:
            # An image header without pixels, or no header at all: the file was cut short.
            raise MalformedDicom(name, "the file ends before its pixel data (truncated); send the complete file")
        raise NoPixelData(name, "this DICOM object holds no image (no Pixel Data); send the radiograph instances")
    check_radiograph(dataset, name)
    try:
        return dataset, _check_pixel_module(dataset, limits, name)
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
        # Attributes of the wrong type or form (a damaged header): nothing to decode against.
        raise MalformedDicom(name, HEADER_INCONSISTENT) from None


def display_pixels(stored: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Stored values -> what a viewer shows: Modality LUT, first VOI LUT or window, MONOCHROME1 inverted.

    Args:
        stored: (rows, columns) stored values of one frame, any integer dtype.
        dataset: the instance's header.

    Returns:
        (rows, columns) uint8 in [0, 255], bone bright; the output range of the last LUT maps to 0..255.
    """
    values = apply_modality_lut(stored, dataset)
    low, high = _modality_output_range(dataset)
    if dataset.get("VOILUTSequence"):
        values = apply_voi_lut(values, dataset, index=0, prefer_lut=True)
        low, high = 0.0, float(2 ** int(dataset.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    elif dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None:
        values = apply_voi_lut(values, dataset, index=0)  # the window maps into the same output range
    values = np.asarray(values, dtype=np.float64)
    if str(dataset.PhotometricInterpretation).upper() == "MONOCHROME1":
        values = low + high - values
    scaled = (values - low) / max(high - low, 1e-12) * 255.0 + 0.5
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _modality_output_range(dataset: Dataset) -> tuple[float, float]:
    """The range of values the Modality LUT can output (PS3.3 C.11.1), as pydicom's windowing uses it."""
    if dataset.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(dataset.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits_stored = int(dataset.BitsStored)
    if int(dataset.PixelRepresentation) == 0:
        low, high = 0.0, float(2 ** bits_stored - 1)
    else:
        low, high = float(-(2 ** (bits_stored - 1))), float(2 ** (bits_stored - 1) - 1)
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = sorted((low * float(slope) + float(intercept), high * float(slope) + float(intercept)))
    return low, high


def _check_pixel_module(dataset: Dataset, limits: ImageLimits, name: str) -> int:
    """Check the Image Pixel module and the pixel limit before decoding; return the number of frames."""
    missing = [keyword for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
                                       "PixelRepresentation")
               if dataset.get(keyword) in (None, "")]
    if missing:
        raise MalformedDicom(name, f"the Image Pixel module lacks {', '.join(missing)}; send the original file")
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    num_frames = int(dataset.get("NumberOfFrames") or 1)
    bits_stored = int(dataset.BitsStored)
    if rows < 1 or columns < 1 or num_frames < 1 or not 1 <= bits_stored <= int(dataset.BitsAllocated):
        raise MalformedDicom(name, "the Image Pixel module is inconsistent (Rows, Columns, Number of Frames or"
                                   " Bits Stored); send the original file")
    if bits_stored > MAX_BITS_STORED:
        raise UnreadableImage(name, f"Bits Stored {bits_stored} is not supported; radiographs store 8 to 16 bits")
    samples = int(dataset.SamplesPerPixel)
    if samples != 1:
        photometric = str(dataset.PhotometricInterpretation).strip().upper()  # MONOCHROME1/2: checked before
        raise MalformedDicom(name, f"Photometric Interpretation {photometric} needs Samples per Pixel 1 but it is"
                                   f" {samples}; the header contradicts itself, send the original file")
    check_lut_values(dataset, name)
    total = rows * columns * num_frames
    if total > limits.max_pixels:
        raise ImageTooLarge(name, f"{columns}x{rows} x {num_frames} frames is {total:,} pixels, over the limit"
                                  f" of {limits.max_pixels:,}")
    if min(rows, columns) < limits.min_side:
        raise ImageTooSmall(name, f"{columns}x{rows} is too small for a radiograph; the shorter side must be"
                                  f" >= {limits.min_side} px")
    return num_frames


def _pixel_decoder(dataset: Dataset, name: str):
    """pydicom's decoder for the transfer syntax; 415 naming the syntax when no codec is installed."""
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        decoder = None
    if decoder is None or not decoder.is_available:
        # The UID is the sender's text: the message names the attribute, never its value.
        raise UnsupportedTransferSyntax(
            name, "the transfer syntax (file meta Transfer Syntax UID) cannot be decoded here; send it uncompressed"
                  " or as RLE, JPEG baseline, JPEG lossless, JPEG-LS or JPEG 2000")
    if not syntax.is_encapsulated:
        expected, actual = get_expected_length(dataset), len(dataset.PixelData)
        if actual < expected:
            raise MalformedDicom(name, f"the pixel data holds {actual:,} bytes but Rows x Columns x Frames needs"
                                       f" {expected:,}; send the complete file")
    return decoder


def _header_without_pixels(dataset: Dataset) -> Dataset:
    """A new dataset sharing every element but the pixel data, file meta copied, for SR and overlay writers."""
    pixel_tags = {dataset[keyword].tag for keyword in PIXEL_DATA_KEYWORDS if keyword in dataset}
    header = Dataset({tag: dataset[tag] for tag in dataset.keys() if tag not in pixel_tags})
    header.file_meta = FileMetaDataset(dataset.file_meta)
    return header
