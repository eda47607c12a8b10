"""Compiled inference for one model: fixed input signature, warmed up at load, device set-up."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from classifiers.preprocessing import preprocess_batch

_devices_configured = threading.Lock()
_device_description: str | None = None


def configure_devices(intra_op_threads: int = 0, inter_op_threads: int = 0) -> str:
    """Turn on GPU memory growth (so several models share a GPU), set CPU thread pools, describe the device.

    Thread counts of 0 keep TensorFlow's default (one per core). They only take effect before TensorFlow
    runs its first operation in this process; later calls keep the pools already made.
    """
    global _device_description
    with _devices_configured:
        if _device_description is None:
            import tensorflow as tf

            _set_thread_pools(tf, intra_op_threads, inter_op_threads)
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


def _set_thread_pools(tf: Any, intra_op_threads: int, inter_op_threads: int) -> None:
    """Size TensorFlow's intra-op and inter-op pools; ignored once the runtime is initialised."""
    try:
        if intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:  # TensorFlow already ran an operation: its pools are fixed for this process.
        pass


def padded_batch_size(batch_size: int) -> int:
    """The power of two at or above `batch_size`: XLA compiles one program per distinct shape."""
    return 1 << max(0, batch_size - 1).bit_length()


class ImageModel:
    """What a backend's model shares: uint8 images in, through the entry's preprocessing, to `forward`.

    Subclasses set name, input_size, preprocessing, channels and backend, and define forward().
    """

    name: str
    input_size: tuple[int, int]
    preprocessing: str
    channels: int
    backend: str
    jit_compile: bool = False  # XLA programs are per batch shape: warm-up then covers every padded size

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Run the model on (N, H, W, 3) uint8 RGB images; return (N, K) float32 outputs."""
        batch = preprocess_batch(images, self.preprocessing)
        if self.channels == 1:
            batch = batch[..., :1]
        return self.forward(batch)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on an already preprocessed (N, H, W, C) float32 batch."""
        raise NotImplementedError

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        """Run once per batch size so the first request pays for no tracing or memory planning."""
        for batch_size in batch_sizes:
            self.predict(np.zeros((batch_size, *self.input_size, 3), dtype=np.uint8))


class CompiledModel(ImageModel):
    """A Keras model wrapped in a tf.function with a fixed (None, H, W, C) float32 signature.

    With `jit_compile` the function is compiled by XLA; batches are zero-padded to a power of two so
    that at most log2(max batch) + 1 programs are compiled, each once.
    """

    def __init__(self, name: str, model: Any, input_size: tuple[int, int], preprocessing: str, channels: int,
                 jit_compile: bool = False) -> None:
        import tensorflow as tf

        self.name = name
        self.model = model
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.preprocessing = preprocessing
        self.channels = channels
        self.jit_compile = jit_compile
        self.backend = type(model).__module__.split(".")[0]  # keras or tf_keras
        signature = tf.TensorSpec((None, *self.input_size, channels), tf.float32, name="images")
        self._forward = tf.function(lambda images: model(images, training=False), input_signature=[signature],
                                    jit_compile=jit_compile)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the compiled function on an already preprocessed (N, H, W, C) float32 batch."""
        num_views = len(batch)
        if self.jit_compile and padded_batch_size(num_views) != num_views:
            padding = np.zeros((padded_batch_size(num_views) - num_views, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, padding])
        return np.asarray(self._forward(batch), dtype=np.float32)[:num_views]
