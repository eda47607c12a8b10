"""Shared pytest fixtures: tiny real model repositories and synthetic images."""

from __future__ import annotations

import io
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from tests.model_factory import write_tiny_repository  # noqa: E402


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of tiny random Keras 3 models (32x32 input), shared by the whole session."""
    return write_tiny_repository(tmp_path_factory.mktemp("tiny_repository"))


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_repository: Path):
    """A loaded Pipeline over `tiny_repository`, shared by the session."""
    from classifiers import Pipeline

    pipeline = Pipeline.load(tiny_repository)
    yield pipeline
    pipeline.close()


def encode_image(pixels: np.ndarray, image_format: str = "PNG", mode: str | None = None) -> bytes:
    """Encode a numpy array as image bytes in memory."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture
def radiograph_png() -> bytes:
    """A 128x96 grayscale PNG with a bright bar on a dark background."""
    pixels = np.full((128, 96), 20, dtype=np.uint8)
    pixels[20:110, 40:56] = 200
    return encode_image(pixels)
