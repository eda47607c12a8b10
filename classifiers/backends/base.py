"""What every backend's model shares: uint8 images in, the entry's preprocessing, a forward pass, warm-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.errors import ModelRepositoryError
from classifiers.preprocessing import preprocess_batch


@dataclass(frozen=True)
class BackendOptions:
    """Speed settings a backend may use (docs/PERFORMANCE.md); 0 threads lets the library choose."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    jit_compile: bool = False  # XLA, tensorflow backend only
    # One repository load's Keras models by architecture, shared by the entries that have it (tensorflow).
    architectures: dict[str, Any] = field(default_factory=dict, compare=False)


def padded_batch_size(batch_size: int) -> int:
    """The power of two at or above `batch_size`: XLA compiles one program per distinct shape."""
    return 1 << max(0, batch_size - 1).bit_length()


def check_output_width(num_outputs: int, classes: tuple[str, ...], role: str, path: Path, remedy: str) -> None:
    """ModelRepositoryError unless the model file at `path` has one output per class of its entry."""
    if num_outputs != len(classes):
        raise ModelRepositoryError(
            f"{path}: {num_outputs} outputs but the manifest lists {len(classes)} classes for {role}; {remedy}")


class ImageModel:
    """What a backend's model shares: uint8 images in, through the entry's preprocessing, to `forward`.

    Subclasses set the attributes below and define forward().
    """

    name: str  # the role it plays: "router" or a body part
    file_name: str  # the repository file it runs
    library: str  # what runs it: keras, tf_keras, onnxruntime, openvino
    backend: str = ""  # the registry name that loaded it (tensorflow, onnx, int8), set by the pipeline
    input_size: tuple[int, int]
    preprocessing: str
    channels: int
    jit_compile: bool = False  # XLA programs are per batch shape: warm-up then covers every padded size

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Run the model on (N, H, W, 3) uint8 RGB images; return (N, K) float32 outputs."""
        return self.forward(self.prepare(images))

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB images -> the (N, H, W, C) float32 batch `forward` takes."""
        batch = preprocess_batch(images, self.preprocessing)
        return batch[..., :1] if self.channels == 1 else batch

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on an already preprocessed (N, H, W, C) float32 batch."""
        raise NotImplementedError

    def warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        """Run once per batch size so the first request pays for no tracing or memory planning."""
        for batch_size in batch_sizes:
            self.predict(np.zeros((batch_size, *self.input_size, 3), dtype=np.uint8))
