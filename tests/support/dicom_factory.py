"""Test DICOM files made with pydicom from the synthetic generator's radiographs (nothing downloaded)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import imagecodecs
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    generate_uid,
)

from training.phantoms import LAYOUTS
from training.synthetic import render_view

# Every identifying attribute a leak test looks for, each value unique enough to grep for.
PATIENT_ATTRIBUTES: dict[str, str] = {
    "PatientName": "Leakmore^Penelope^Q",
    "PatientID": "PID-7731-SECRET",
    "PatientBirthDate": "19310203",
    "PatientSex": "F",
    "OtherPatientIDs": "OTHERID-5521",
    "PatientAddress": "12 Confidential Lane",
    "PatientTelephoneNumbers": "555-0199-321",
    "AccessionNumber": "ACC-99311",
    "ReferringPhysicianName": "Referrer^Rupert",
    "InstitutionName": "Saint Secretive Hospital",
    "StudyID": "STUDYID-4242",
}
LEAK_MARKERS = ("Leakmore", "Penelope", "PID-7731", "19310203", "OTHERID-5521", "Confidential Lane",
                "555-0199", "ACC-99311", "Referrer", "Rupert", "Secretive", "STUDYID-4242")


def synthetic_radiograph(body_part: str = "XR_WRIST", seed: int = 0, size: tuple[int, int] = (160, 128)) -> np.ndarray:
    """One synthetic view of `body_part`: (height, width) float32 brightness in [0, 1], bone bright."""
    rng = np.random.default_rng(seed)
    from training.phantoms import Phantom

    phantom = Phantom(tuple(LAYOUTS[body_part](rng)))
    return render_view(phantom, size, 1.0, "L", rng)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode 8-bit or 16-bit grayscale pixels as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_dataset(pixels: np.ndarray, *, bits_stored: int = 8, photometric: str = "MONOCHROME2",
                 modality: str = "DX", study_uid: str | None = None, body_part: str | None = "WRIST",
                 extra: Mapping[str, Any] | None = None) -> Dataset:
    """A DX-for-presentation dataset holding `pixels` ((rows, cols) or (frames, rows, cols), native)."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.SOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = study_uid or generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality = modality
    dataset.StudyDate, dataset.StudyTime = "20240102", "101500"
    dataset.ViewPosition, dataset.ImageLaterality = "PA", "L"
    if body_part is not None:
        dataset.BodyPartExamined = body_part
    for keyword, value in PATIENT_ATTRIBUTES.items():
        setattr(dataset, keyword, value)
    dataset.set_pixel_data(pixels, photometric, bits_stored)
    for keyword, value in (extra or {}).items():
        setattr(dataset, keyword, value)
    return dataset


def encapsulate_frames(dataset: Dataset, frames: list[bytes], syntax: UID) -> Dataset:
    """Replace the native pixel data with encoded frames under `syntax`."""
    dataset.PixelData = encapsulate(frames)
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = syntax
    return dataset


def jpeg_baseline(dataset: Dataset, quality: int = 95) -> Dataset:
    """Compress an 8-bit single-frame dataset to JPEG baseline with Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(dataset.pixel_array.astype(np.uint8), mode="L").save(buffer, format="JPEG", quality=quality)
    return encapsulate_frames(dataset, [buffer.getvalue()], JPEGBaseline8Bit)


def jpeg_lossless(dataset: Dataset) -> Dataset:
    """Compress a single-frame dataset to JPEG lossless, first-order prediction (imagecodecs, libjpeg-turbo)."""
    stored = dataset.pixel_array
    encoded = imagecodecs.jpeg8_encode(stored, lossless=True, predictor=1, bitspersample=int(dataset.BitsStored))
    return encapsulate_frames(dataset, [bytes(encoded)], JPEGLosslessSV1)


def to_bytes(dataset: Dataset, preamble: bool = True) -> bytes:
    """Serialise: a DICOM file (preamble, DICM, file meta), or the bare dataset without preamble."""
    buffer = io.BytesIO()
    if "TransferSyntaxUID" not in dataset.file_meta:
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if preamble:
        dataset.save_as(buffer, enforce_file_format=True)
    else:
        bare = Dataset(dataset)  # no file meta: the encoding is guessed by the reader
        bare.save_as(buffer, implicit_vr=True, little_endian=True)
    return buffer.getvalue()
