"""The same radiograph as PNG and as DICOM gives the same answer from the shipped demo models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, generate_uid

from classifiers import Pipeline, ViewInput
from classifiers.body_parts import BODY_PARTS
from tests.support.dicom_factory import make_dataset, png_bytes, synthetic_radiograph, to_bytes

REPOSITORY = Path(__file__).resolve().parent.parent / "h5"
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def demo_pipeline():
    pipeline = Pipeline.load(REPOSITORY)
    yield pipeline
    pipeline.close()


def dicom_variants(brightness: np.ndarray) -> dict[str, tuple[bytes, bytes]]:
    """(PNG, DICOM) pairs of one view: 8-bit MONOCHROME2, inverted MONOCHROME1, 16-bit, JPEG 2000."""
    pixels8 = np.round(brightness * 255).astype(np.uint8)
    pixels16 = np.round(brightness * 65535).astype(np.uint16)
    compressed = make_dataset(pixels16, bits_stored=16)
    compressed.compress(JPEG2000Lossless)
    return {
        "monochrome2": (png_bytes(pixels8), to_bytes(make_dataset(pixels8))),
        "monochrome1": (png_bytes(pixels8), to_bytes(make_dataset(255 - pixels8, photometric="MONOCHROME1"))),
        "16-bit": (png_bytes(pixels16), to_bytes(make_dataset(pixels16, bits_stored=16))),
        "16-bit-jpeg2000": (png_bytes(pixels16), to_bytes(compressed)),
    }


@pytest.mark.parametrize("body_part", BODY_PARTS)
def test_png_and_dicom_give_the_same_part_and_abnormality(demo_pipeline, body_part: str) -> None:
    brightness = synthetic_radiograph(body_part, seed=BODY_PARTS.index(body_part), size=(320, 256))
    for variant, (png, dicom) in dicom_variants(brightness).items():
        from_png = demo_pipeline.predict_study([ViewInput("view.png", png)])
        from_dicom = demo_pipeline.predict_study([ViewInput("view.dcm", dicom)])
        assert from_dicom.body_part == from_png.body_part, variant
        assert abs(from_dicom.abnormality - from_png.abnormality) < TOLERANCE, variant
        assert abs(from_dicom.body_part_confidence - from_png.body_part_confidence) < TOLERANCE, variant
        assert from_dicom.dicom is not None and from_png.dicom is None


def test_multi_frame_study_matches_its_frames_sent_as_pngs(demo_pipeline) -> None:
    frames = [np.round(synthetic_radiograph("XR_HAND", seed=seed, size=(320, 256)) * 255).astype(np.uint8)
              for seed in (11, 12)]
    study_uid = generate_uid()
    dicom = demo_pipeline.predict_study([ViewInput("hand.dcm", to_bytes(make_dataset(np.stack(frames),
                                                                                      study_uid=study_uid)))])
    pngs = demo_pipeline.predict_study([ViewInput(f"{index}.png", png_bytes(frame)) for index, frame in
                                        enumerate(frames)])
    assert dicom.n_images == 2 and [view.dicom.frame for view in dicom.images] == [1, 2]
    assert dicom.body_part == pngs.body_part and abs(dicom.abnormality - pngs.abnormality) < TOLERANCE
