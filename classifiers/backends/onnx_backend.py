"""The onnx backend: each entry's ONNX export, run by ONNX Runtime (no TensorFlow in the process).

Faster than TensorFlow on CPU here and quick to load (no Keras graph to build or trace): see
docs/PERFORMANCE.md. Export a repository with `python -m training.export_onnx FOLDER`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.backends.base import BackendOptions, ImageModel, check_output_width
from classifiers.errors import ModelRepositoryError
from classifiers.repository.entries import ONNX_FILE_KEY, ModelEntry

EXPORT_COMMAND = "python -m training.optimize"


def default_intra_op_threads() -> int:
    """Half the cores per session: under load a router batch and an expert batch then run side by side.

    Measured on 2 cores (docs/benchmarks/HISTORY.md): one thread per session served more views/s over HTTP than
    ONNX Runtime's default of one thread per core, and a batch of one was no slower."""
    return max(1, (os.cpu_count() or 2) // 2)


class OnnxModel(ImageModel):
    """An ONNX Runtime session behind the same interface as the tensorflow backend's CompiledModel."""

    library = "onnxruntime"

    def __init__(self, name: str, path: Path, input_size: tuple[int, int], preprocessing: str,
                 intra_op_threads: int = 0, inter_op_threads: int = 0) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ModelRepositoryError(
                "the onnx backend needs the onnxruntime package: pip install -r requirements.txt") from None
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads or default_intra_op_threads()
        options.inter_op_num_threads = inter_op_threads
        # Eight sessions share the cores: idle pool threads must sleep, not spin, or they starve the busy one.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=_providers(onnxruntime))
        except Exception as error:  # onnxruntime raises its own exception types for a bad file.
            raise ModelRepositoryError(
                f"{path}: cannot load the {name} ONNX model ({type(error).__name__}); re-export it with"
                f" {EXPORT_COMMAND} {path.parent}") from None
        self.name = name
        self.file_name = path.name
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.preprocessing = preprocessing
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.channels = int(model_input.shape[3])
        self.num_outputs = int(self.session.get_outputs()[0].shape[-1])
        if list(model_input.shape[1:3]) != list(self.input_size):
            raise ModelRepositoryError(
                f"{path}: the ONNX model takes {model_input.shape[1:3]} images but the manifest says"
                f" {list(self.input_size)}; re-export it with {EXPORT_COMMAND} {path.parent}")

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the session on an already preprocessed (N, H, W, C) float32 batch."""
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(outputs[0], dtype=np.float32)


def _providers(onnxruntime: Any) -> list[str]:
    """CUDA first when this onnxruntime build has it, then CPU."""
    available = onnxruntime.get_available_providers()
    return [name for name in ("CUDAExecutionProvider", "CPUExecutionProvider") if name in available]


def has_cuda() -> bool:
    """Whether this onnxruntime build can run on a GPU (its CUDA provider)."""
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def configure(options: BackendOptions) -> str:
    """Describe where the sessions run (thread pools are set per session)."""
    if has_cuda():
        return "GPU (ONNX Runtime CUDA provider)"
    return f"CPU ({os.cpu_count()} cores)"


def load(folder: Path, entry: ModelEntry, options: BackendOptions) -> tuple[OnnxModel, ModelEntry]:
    """Open the entry's fp32 ONNX export and check its output width against the entry's classes."""
    onnx_file = entry.files.get(ONNX_FILE_KEY)
    if onnx_file is None:
        raise ModelRepositoryError(
            f"{folder / 'manifest.json'} [{entry.role}]: no ONNX export; run {EXPORT_COMMAND} {folder},"
            " or use TRIAGE_BACKEND=auto")
    model = OnnxModel(entry.role, folder / onnx_file, entry.input_size, entry.preprocessing,
                      options.intra_op_threads, options.inter_op_threads)
    check_output_width(model.num_outputs, entry.classes, entry.role, folder / onnx_file,
                       f"re-export it with {EXPORT_COMMAND} {folder}")
    return model, entry


def versions() -> dict[str, str]:
    """ONNX Runtime's version."""
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__}
