"""Optional ONNX Runtime backend: a model exported to `<role>.onnx` run with the same interface as CompiledModel.

Faster than TensorFlow on CPU here and quick to load (no Keras graph to build or trace): see
docs/PERFORMANCE.md. Export a repository with `python -m classifiers.onnx_export FOLDER`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from classifiers.errors import ModelRepositoryError
from classifiers.runtime import ImageModel

ONNX_OPSET = 17
# Largest difference allowed between ONNX Runtime's and TensorFlow's probabilities at export.
ONNX_TOLERANCE = 1e-4


def export_onnx(model: Any, input_size: tuple[int, int], channels: int, path: Path) -> None:
    """Convert a loaded Keras model (Keras 3 or tf_keras) to an ONNX file with a (None, H, W, C) input."""
    import tensorflow as tf
    import tf2onnx

    signature = (tf.TensorSpec((None, *input_size, channels), tf.float32, name="images"),)
    function = tf.function(lambda images: model(images, training=False))
    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=ONNX_OPSET)
    path.write_bytes(proto.SerializeToString())


class OnnxModel(ImageModel):
    """An ONNX Runtime session behind the same interface as CompiledModel."""

    backend = "onnxruntime"

    def __init__(self, name: str, path: Path, input_size: tuple[int, int], preprocessing: str,
                 intra_op_threads: int = 0, inter_op_threads: int = 0) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ModelRepositoryError(
                "the onnx backend needs the onnxruntime package: pip install -r requirements.txt") from None
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        # Eight sessions share the cores: idle pool threads must sleep, not spin, or they starve the busy one.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=_providers(onnxruntime))
        except Exception as error:  # onnxruntime raises its own exception types for a bad file.
            raise ModelRepositoryError(
                f"{path}: cannot load the {name} ONNX model ({type(error).__name__}); re-export it with"
                f" python -m classifiers.onnx_export {path.parent}") from None
        self.name = name
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.preprocessing = preprocessing
        model_input = self.session.get_inputs()[0]
        self._input_name = model_input.name
        self.channels = int(model_input.shape[3])
        self.num_outputs = int(self.session.get_outputs()[0].shape[-1])
        if list(model_input.shape[1:3]) != list(self.input_size):
            raise ModelRepositoryError(
                f"{path}: the ONNX model takes {model_input.shape[1:3]} images but the manifest says"
                f" {list(self.input_size)}; re-export it with python -m classifiers.onnx_export {path.parent}")

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the session on an already preprocessed (N, H, W, C) float32 batch."""
        outputs = self.session.run(None, {self._input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(outputs[0], dtype=np.float32)


def _providers(onnxruntime: Any) -> list[str]:
    """CUDA first when this onnxruntime build has it, then CPU."""
    available = onnxruntime.get_available_providers()
    return [name for name in ("CUDAExecutionProvider", "CPUExecutionProvider") if name in available]
