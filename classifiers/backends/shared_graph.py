"""Keras models that share an architecture share one traced function: each keeps only its own weights.

Building a DenseNet169 from its JSON takes about 2 s and tracing its tf.function about 3 s; the seven
experts of a repository usually have one architecture, so both are done once and each expert adds only
its weights (docs/PERFORMANCE.md, start-up). Keras 3's `stateless_call` runs the one model with any set of
weights of its shapes; the traced function takes them as inputs.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.backends.base import ImageModel
from classifiers.backends.keras_files import (
    LEGACY_KERAS_MAJOR,
    check_model_shape,
    keras_major_version_of_json,
    model_input_shape,
    unreadable_model_error,
    without_training_config,
)
from classifiers.backends.keras_weights import load_weights
from classifiers.errors import ModelRepositoryError
from classifiers.repository.entries import ModelEntry


class SharedArchitecture:
    """One Keras 3 model of an architecture and its function, traced once with the weights as inputs."""

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model

        def run(trainable: list, non_trainable: list, images: Any) -> Any:
            return model.stateless_call(trainable, non_trainable, images, training=False)[0]

        self._function = tf.function(run, autograph=False)
        self._concrete: Any = None
        self._lock = threading.Lock()

    def take_weights(self) -> tuple[list, list]:
        """Copies of the weights loaded into the model now, as variables of their own."""
        import tensorflow as tf

        return ([tf.Variable(variable.value, trainable=False) for variable in self.model.trainable_variables],
                [tf.Variable(variable.value, trainable=False) for variable in self.model.non_trainable_variables])

    def call(self, weights: tuple[list, list], batch: np.ndarray) -> Any:
        """Run the model with `weights` on a preprocessed (N, H, W, C) float32 batch; traced on first use."""
        import tensorflow as tf

        with self._lock:
            if self._concrete is None:
                spec = tf.TensorSpec((None, *batch.shape[1:]), tf.float32, name="images")
                self._concrete = self._function.get_concrete_function(*weights, spec)
        return self._concrete(*weights, tf.constant(batch))


class SharedGraphModel(ImageModel):
    """An entry served by its architecture's shared function with its own weights."""

    library = "keras"

    def __init__(self, name: str, architecture: SharedArchitecture, input_size: tuple[int, int], preprocessing: str,
                 channels: int, file_name: str) -> None:
        self.name = name
        self.file_name = file_name
        self.architecture = architecture
        self.weights = architecture.take_weights()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.preprocessing = preprocessing
        self.channels = channels

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the shared function with this entry's weights."""
        return np.asarray(self.architecture.call(self.weights, batch), dtype=np.float32)


def load_shared(repository: Path, entry: ModelEntry,
                architectures: dict[str, Any]) -> tuple[SharedGraphModel, ModelEntry] | None:
    """Load a `.json` + weights entry onto the shared model of its architecture; None when it cannot share.

    Full-model files and Keras 2 (tf_keras) models, which have no stateless_call, load on their own.
    """
    files = entry.files
    if "architecture" not in files:
        return None
    text = without_training_config((repository / files["architecture"]).read_text())
    if keras_major_version_of_json(text) == LEGACY_KERAS_MAJOR:
        return None
    weights_path = repository / files["weights"]
    try:
        if text not in architectures:
            import keras

            architectures[text] = SharedArchitecture(keras.models.model_from_json(text))
        architecture = architectures[text]
        load_weights(architecture.model, weights_path)
    except ModelRepositoryError:
        raise
    except Exception as error:  # Keras raises many unrelated types for a bad file.
        raise unreadable_model_error(weights_path, entry.role, error) from None
    entry = check_model_shape(architecture.model, entry, weights_path)
    channels = model_input_shape(architecture.model)[2]
    model = SharedGraphModel(entry.role, architecture, entry.input_size, entry.preprocessing, channels,
                             entry.keras_file)
    return model, entry
