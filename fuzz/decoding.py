"""Fuzz the decoding entry point: any bytes in, a decoded view or one of the typed errors out.

    python -m fuzz.decoding [CORPUS_DIR] [-max_total_time=SECONDS] [libFuzzer flags]

The corpus starts from small PNG (8 and 16-bit), JPEG, TIFF, BMP and DICOM (native, RLE) images this module
writes into CORPUS_DIR (default: a temporary folder). Any other exception is a bug: libFuzzer stops, prints
the traceback and writes the input that raised it (crash-*) to the working directory.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np
from PIL import Image

from fuzz import INSTRUMENTED_PACKAGES, NOT_INSTRUMENTED

with atheris.instrument_imports(include=INSTRUMENTED_PACKAGES, exclude=NOT_INSTRUMENTED):
    from classifiers.decoding import decode_probed, probe_view
    from classifiers.decoding.imaging import ImageLimits
    from classifiers.errors import ClassifierError
    from classifiers.results import ViewInput

LIMITS = ImageLimits(max_pixels=4_000_000, min_side=8)


def test_one_input(data: bytes) -> None:
    """Probe and decode one view; typed errors are the expected answers to bad bytes."""
    view = ViewInput("fuzz-input", data)
    try:
        for decoded in decode_probed(probe_view(view, LIMITS)):
            if decoded.image.mode not in ("L", "RGB") or min(decoded.image.size) < LIMITS.min_side:
                raise AssertionError(f"decoded view is {decoded.image.mode} {decoded.image.size}")
    except ClassifierError:
        return


def write_seed_corpus(folder: Path) -> None:
    """Small valid images of every format the service reads."""
    pixels = (np.add.outer(np.arange(24), np.arange(20)) * 5 % 256).astype(np.uint8)
    for name, image, image_format in (
        ("gray.png", Image.fromarray(pixels), "PNG"),
        ("gray16.png", Image.fromarray(pixels.astype(np.uint16) * 256), "PNG"),
        ("rgb.jpg", Image.fromarray(pixels).convert("RGB"), "JPEG"),
        ("gray.tif", Image.fromarray(pixels), "TIFF"),
        ("rgb.bmp", Image.fromarray(pixels).convert("RGB"), "BMP"),
    ):
        buffer = io.BytesIO()
        image.save(buffer, format=image_format)
        (folder / name).write_bytes(buffer.getvalue())
    (folder / "native.dcm").write_bytes(_dicom(pixels, compress=False))
    (folder / "rle.dcm").write_bytes(_dicom(pixels, compress=True))


def _dicom(pixels: np.ndarray, compress: bool) -> bytes:
    """A minimal DX instance of `pixels` (8-bit MONOCHROME2), RLE-compressed when asked."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, RLELossless, generate_uid

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.SOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.Modality = "DX"
    dataset.set_pixel_data(pixels, "MONOCHROME2", 8)
    if compress:
        dataset.compress(RLELossless)
    else:
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    """Seed the corpus folder (given or temporary) and fuzz until libFuzzer's limits stop it."""
    arguments = list(sys.argv if argv is None else argv)
    folders = [argument for argument in arguments[1:] if not argument.startswith("-")]
    corpus = Path(folders[0]) if folders else Path(tempfile.mkdtemp(prefix="fuzz-corpus-"))
    corpus.mkdir(parents=True, exist_ok=True)
    write_seed_corpus(corpus)
    if not folders:
        arguments.append(str(corpus))
    atheris.Setup(arguments, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
