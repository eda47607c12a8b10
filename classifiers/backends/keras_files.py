"""Load one Keras model from a manifest entry, in any supported file format, with Keras 3 or tf_keras."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import h5py

from classifiers.backends.keras_weights import load_weights
from classifiers.errors import ModelRepositoryError
from classifiers.repository.entries import ModelEntry

# Files written by tf.keras 2.x (TensorFlow <= 2.15) carry a keras_version of "2.x"; Keras 3 refuses many
# of them, so they are loaded with the tf_keras package, which is that same Keras 2 code.
LEGACY_KERAS_MAJOR = "2"


def load_model(folder: Path, entry: ModelEntry) -> tuple[Any, ModelEntry]:
    """Load the Keras model of one entry, check its shapes; return it with the entry completed from it.

    Raises:
        ModelRepositoryError: the file cannot be read or the model has the wrong shape for its role.
    """
    files = entry.files
    main_file = folder / entry.keras_file
    try:
        if "model" in files:
            model = _load_full_model(main_file)
        else:
            model = load_architecture_and_weights(folder / files["architecture"], main_file)
    except ModelRepositoryError:
        raise
    except Exception as error:  # Keras raises many unrelated types for a bad file.
        raise unreadable_model_error(main_file, entry.role, error) from None
    return model, check_model_shape(model, entry, main_file)


def unreadable_model_error(path: Path, role: str, error: Exception) -> ModelRepositoryError:
    """The error for a model file Keras could not read: the file, Keras' reason, the formats that load."""
    message = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    return ModelRepositoryError(
        f"{path}: cannot load the {role} model ({type(error).__name__}: {message}); check that the"
        " file is a Keras model saved as .json + .h5 weights, a full .h5 or a .keras file, and not truncated")


def keras_major_version_of_json(architecture_text: str) -> str:
    """Return the Keras major version recorded in a model.to_json() text ("" when absent)."""
    return str(json.loads(architecture_text).get("keras_version", "")).split(".")[0]


def keras_major_version_of_h5(path: Path) -> str:
    """Return the Keras major version recorded in a full-model .h5 file ("" when absent)."""
    with h5py.File(path, "r") as handle:
        version = handle.attrs.get("keras_version", "")
    if isinstance(version, bytes):
        version = version.decode()
    return str(version).split(".")[0]


def without_training_config(architecture_text: str) -> str:
    """Drop the optimizer and loss a Keras 3 `to_json()` records: serving needs neither, and a custom loss
    class would otherwise have to be importable for the model to load."""
    architecture = json.loads(architecture_text)
    if not isinstance(architecture, dict) or "compile_config" not in architecture:
        return architecture_text
    architecture.pop("compile_config")
    return json.dumps(architecture)


def load_architecture_and_weights(architecture_path: Path, weights_path: Path) -> Any:
    """Load a `.json` architecture and its `.h5` / `.weights.h5` weights."""
    architecture_text = without_training_config(architecture_path.read_text())
    if keras_major_version_of_json(architecture_text) == LEGACY_KERAS_MAJOR:
        import tf_keras

        model = tf_keras.models.model_from_json(architecture_text)
        model.load_weights(str(weights_path))
        return model
    import keras

    model = keras.models.model_from_json(architecture_text)
    load_weights(model, weights_path)
    return model


def _load_full_model(path: Path) -> Any:
    """Load a full model from a `.keras` or `.h5` file."""
    if path.suffix == ".h5" and keras_major_version_of_h5(path) == LEGACY_KERAS_MAJOR:
        import tf_keras

        return tf_keras.models.load_model(str(path), compile=False)
    import keras

    return keras.models.load_model(str(path), compile=False)


def model_input_shape(model: Any) -> tuple[int | None, int | None, int]:
    """Return (height, width, channels) of a single-input image model."""
    shape = model.inputs[0].shape
    if len(shape) != 4:
        raise ValueError(f"expected an image input (batch, height, width, channels); got {tuple(shape)}")
    return (shape[1], shape[2], int(shape[3]))


def final_activation_name(model: Any) -> str | None:
    """Return the name of the last layer's activation, if the model exposes one."""
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def check_model_shape(model: Any, entry: ModelEntry, path: Path) -> ModelEntry:
    """Check input channels/size and the output layout against the entry; return the entry, completed
    from the model (input size, expert classes) when it was built from conventional names."""
    try:
        height, width, channels = model_input_shape(model)
    except ValueError as error:
        raise ModelRepositoryError(f"{path}: {error}") from None
    if channels not in (1, 3):
        raise ModelRepositoryError(f"{path}: the model takes {channels} channels; only 1 or 3 are supported")
    units = int(model.outputs[0].shape[-1])
    if entry.conventional:
        input_size = (int(height), int(width)) if height and width else entry.input_size
        classes = entry.classes if entry.is_router else (("abnormal",) if units == 1 else ("negative", "positive"))
        entry = dataclasses.replace(entry, input_size=input_size, classes=classes)
    if height and width and (int(height), int(width)) != entry.input_size:
        raise ModelRepositoryError(
            f"{path}: the model's input is {height}x{width} but manifest.json says {list(entry.input_size)};"
            " fix input_size"
        )
    activation = final_activation_name(model)
    if entry.is_router:
        if units != len(entry.classes) or activation not in (None, "softmax"):
            raise ModelRepositoryError(
                f"{path}: the router must end in a 7-way softmax; it has {units} output(s) ({activation})"
            )
        return entry
    expected = {1: "sigmoid", 2: "softmax"}.get(units)
    if expected is None or units != len(entry.classes) or activation not in (None, expected):
        raise ModelRepositoryError(
            f"{path}: the {entry.role} expert must end in a 1-unit sigmoid or a 2-way softmax [negative, positive]"
            f" matching its manifest classes {list(entry.classes)}; it has {units} output(s) ({activation})"
        )
    return entry
