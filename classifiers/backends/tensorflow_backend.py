"""The tensorflow backend: a repository's Keras files, run by TensorFlow (Keras 3 or tf_keras)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.backends.base import BackendOptions, ImageModel, padded_batch_size
from classifiers.backends.keras_files import load_model, model_input_shape
from classifiers.backends.shared_graph import load_shared
from classifiers.logs import native_output_logged
from classifiers.repository.entries import ModelEntry

logger = logging.getLogger(__name__)
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
            # TensorFlow's C++ start-up notices (CUDA probing on a CPU machine, oneDNN) go to the log at DEBUG.
            with native_output_logged(logger):
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


class CompiledModel(ImageModel):
    """A Keras model wrapped in a tf.function with a fixed (None, H, W, C) float32 signature.

    With `jit_compile` the function is compiled by XLA; batches are zero-padded to a power of two so
    that at most log2(max batch) + 1 programs are compiled, each once.
    """

    def __init__(self, name: str, model: Any, input_size: tuple[int, int], preprocessing: str, channels: int,
                 jit_compile: bool = False, file_name: str = "") -> None:
        import tensorflow as tf

        self.name = name
        self.file_name = file_name
        self.model = model
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.preprocessing = preprocessing
        self.channels = channels
        self.jit_compile = jit_compile
        self.library = type(model).__module__.split(".")[0]  # keras or tf_keras
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


def configure(options: BackendOptions) -> str:
    """Set TensorFlow's devices and thread pools once; return the device description."""
    return configure_devices(options.intra_op_threads, options.inter_op_threads)


def load(folder: Path, entry: ModelEntry, options: BackendOptions) -> tuple[ImageModel, ModelEntry]:
    """Load the entry's Keras files and compile them; return the model and the entry completed from it.

    Entries whose architecture another entry of the same load already built share its model and traced
    function (classifiers.backends.shared_graph); XLA (`jit_compile`) pads batches per model and keeps its own.
    """
    if not options.jit_compile:
        shared = load_shared(folder, entry, options.architectures)
        if shared is not None:
            return shared
    model, entry = load_model(folder, entry)
    channels = model_input_shape(model)[2]
    compiled = CompiledModel(entry.role, model, entry.input_size, entry.preprocessing, channels,
                             jit_compile=options.jit_compile, file_name=entry.keras_file)
    return compiled, entry


def versions() -> dict[str, str]:
    """TensorFlow's and Keras' versions."""
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__}
