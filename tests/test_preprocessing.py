"""Preprocessing modes equal Keras' own imagenet_utils.preprocess_input."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.preprocessing import AFFINE_FORMS, PREPROCESSING_MODES, preprocess_batch


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 8, 6, 3)).astype(np.uint8)


@pytest.mark.parametrize("mode", ["tf", "torch", "caffe"])
def test_modes_match_keras_preprocess_input(images: np.ndarray, mode: str) -> None:
    from keras.applications import imagenet_utils

    expected = imagenet_utils.preprocess_input(images.astype(np.float32), mode=mode)
    actual = preprocess_batch(images, mode)
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, np.asarray(expected), rtol=1e-6, atol=1e-5)


def test_unit_mode_scales_to_zero_one(images: np.ndarray) -> None:
    actual = preprocess_batch(images, "unit")
    np.testing.assert_allclose(actual, images / 255.0, rtol=1e-6)
    assert actual.min() >= 0.0 and actual.max() <= 1.0


def test_tf_mode_range() -> None:
    extremes = np.array([0, 255], dtype=np.uint8).reshape(1, 1, 2, 1).repeat(3, axis=3)
    np.testing.assert_allclose(preprocess_batch(extremes, "tf").ravel(), [-1, -1, -1, 1, 1, 1])


def test_unknown_mode_lists_the_valid_ones(images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="caffe, tf, torch, unit"):
        preprocess_batch(images, "densenet")
    assert set(PREPROCESSING_MODES) == {"tf", "torch", "caffe", "unit"}


def test_uint8_table_gives_exactly_the_float_path() -> None:
    values = np.arange(256, dtype=np.uint8)
    images = np.stack([values, values[::-1], np.roll(values, 100)], axis=-1).reshape(1, 16, 16, 3)  # every value
    images = np.concatenate([images, images[:, ::-1]])  # in every channel, twice over
    table_path = preprocess_batch(images, "torch")
    float_path = preprocess_batch(images.astype(np.float32), "torch")
    assert table_path.dtype == np.float32 and table_path.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(table_path, float_path)


@pytest.mark.parametrize("mode", sorted(PREPROCESSING_MODES))
def test_affine_forms_give_the_modes_numbers(images: np.ndarray, mode: str) -> None:
    # The form a runtime compiles into the model (the int8 backend): flip, then (x - mean) / scale per channel.
    flip, mean, scale = AFFINE_FORMS[mode]
    pixels = images[..., ::-1] if flip else images
    np.testing.assert_allclose((pixels.astype(np.float32) - mean) / scale, preprocess_batch(images, mode),
                               rtol=1e-6, atol=1e-5)
