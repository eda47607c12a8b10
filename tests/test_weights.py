"""Keras 3 .weights.h5 read straight into the layers: the same weights as Keras' load_weights, or Keras decides."""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from classifiers.backends import keras_weights as weights


def _random_weights(model: keras.Model, seed: int) -> None:
    """Give every variable (moving statistics included) distinct random values."""
    generator = np.random.default_rng(seed)
    model.set_weights([generator.normal(0, 1, w.shape).astype(w.dtype) for w in model.get_weights()])


def _flat_model() -> keras.Model:
    """Conv, depthwise conv, batch norm, concatenate and dense layers, several of each class."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.Concatenate()([x, y])
    x = keras.layers.Conv2D(2, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5, activation="relu")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def _nested_model() -> keras.Model:
    """A backbone model used as one layer of the served model, as MURA-style heads on DenseNet often are."""
    backbone = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(3, 3), keras.layers.BatchNormalization(),
                                 keras.layers.GlobalAveragePooling2D()])
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Dense(1, activation="sigmoid")(backbone(inputs))
    return keras.Model(inputs, outputs)


def _with_wrapped_layers() -> keras.Model:
    """A Bidirectional layer saves its inner layers in groups of their own: left to Keras."""
    inputs = keras.Input((5, 8))
    outputs = keras.layers.Dense(1)(keras.layers.Bidirectional(keras.layers.LSTM(3))(inputs))
    return keras.Model(inputs, outputs)


def _saved(model: keras.Model, folder: Path) -> tuple[keras.Model, Path]:
    """Save random weights; return a fresh model of the same architecture (other weights) and the file."""
    _random_weights(model, seed=3)
    path = folder / "model.weights.h5"
    model.save_weights(str(path))
    fresh = keras.models.model_from_json(model.to_json())
    _random_weights(fresh, seed=4)
    return fresh, path


@pytest.mark.parametrize("build", [_flat_model, _nested_model])
def test_direct_read_equals_keras_load_weights(build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = build()
    fresh, path = _saved(original, tmp_path)
    reference = keras.models.model_from_json(original.to_json())
    reference.load_weights(str(path))
    monkeypatch.setattr(type(fresh), "load_weights", lambda *_: pytest.fail("fell back to Keras"))
    weights.load_weights(fresh, path)
    for loaded, expected, saved in zip(fresh.get_weights(), reference.get_weights(), original.get_weights(),
                                       strict=True):
        np.testing.assert_array_equal(loaded, expected)
        np.testing.assert_array_equal(loaded, saved)


def test_a_model_with_other_saveables_is_left_to_keras(tmp_path: Path) -> None:
    original = _with_wrapped_layers()
    fresh, path = _saved(original, tmp_path)
    assert not weights._read_directly(fresh, path)
    weights.load_weights(fresh, path)
    for loaded, saved in zip(fresh.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(loaded, saved)


def test_a_file_that_does_not_match_is_left_to_keras_which_explains(tmp_path: Path) -> None:
    fresh, path = _saved(_flat_model(), tmp_path)
    with h5py.File(path, "a") as file:
        del file["layers/dense_1"]  # the last layer's weights are missing
    assert not weights._read_directly(keras.models.model_from_json(fresh.to_json()), path)
    with pytest.raises(ValueError):
        weights.load_weights(fresh, path)


def test_names_follow_keras_numbering() -> None:
    used: dict[str, int] = {}
    names = [weights._unique_name(weights._snake_case(name), used)
             for name in ("BatchNormalization", "Conv2D", "BatchNormalization", "ReLU", "DepthwiseConv2D")]
    assert names == ["batch_normalization", "conv2d", "batch_normalization_1", "re_lu", "depthwise_conv2d"]
