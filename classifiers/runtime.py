"""Compiled inference for one model: fixed input signature, warmed up at load, device set-up."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from classifiers.preprocessing import preprocess_batch

_devices_configured = threading.Lock()
_device_description: str | None = None


def configure_devices() -> str:
    """Turn on GPU memory growth (so several models share a GPU) and describe the device used."""
    global _device_description
    with _devices_configured:
        if _device_description is None:
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            for gpu in gpus:
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                except RuntimeError:  # Already initialised by another model in this process.
                    pass
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                _device_description = f"GPU:0 ({details.get('device_name', 'unknown')}), {len(gpus)} visible"
            else:
                _device_description = f"CPU ({os.cpu_count()} cores)"
    return _device_description


class CompiledModel:
    """A Keras model wrapped in a tf.function with a fixed (None, H, W, C) float32 signature."""

    def __init__(self, name: str, model: Any, input_size: tuple[int, int], preprocessing: str, channels: int) -> None:
        import tensorflow as tf

        self.name = name
        self.model = model
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.preprocessing = preprocessing
        self.channels = channels
        signature = tf.TensorSpec((None, *self.input_size, channels), tf.float32, name="images")
        self._forward = tf.function(lambda images: model(images, training=False), input_signature=[signature])

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Run the model on (N, H, W, 3) uint8 RGB images; return (N, K) float32 outputs."""
        batch = preprocess_batch(images, self.preprocessing)
        if self.channels == 1:
            batch = batch[..., :1]
        return np.asarray(self._forward(batch), dtype=np.float32)

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        """Trace and run the function once per batch size so the first request is not slow."""
        for batch_size in batch_sizes:
            self.predict(np.zeros((batch_size, *self.input_size, 3), dtype=np.uint8))
