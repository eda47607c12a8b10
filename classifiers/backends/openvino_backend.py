"""The int8 backend: each entry's INT8 model (NNCF quantization, OpenVINO's format), run by OpenVINO on the CPU.

`python -m training.optimize DIR --int8` writes `<role>.int8.xml` + `<role>.int8.bin` and guards their
accuracy; measured against ONNX Runtime's static INT8 on DenseNet169 it ran 1.3x faster per batch of 8 and
1.5x faster with a router and an expert batch side by side (docs/PERFORMANCE.md, "INT8").

The entry's preprocessing is compiled into the model at load (OpenVINO's PrePostProcessor): uint8 views go
in as they are, and the conversion to float runs inside the model: 0.5 ms less per view and model than
preprocessing in numpy first, with the same outputs (docs/PERFORMANCE.md, "Serving").
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.backends.base import BackendOptions, ImageModel, check_output_width
from classifiers.backends.onnx_backend import EXPORT_COMMAND, default_intra_op_threads
from classifiers.errors import ModelRepositoryError
from classifiers.preprocessing import AFFINE_FORMS, check_preprocessing_mode
from classifiers.repository.entries import INT8_FILE_KEY, INT8_WEIGHTS_FILE_KEY, ModelEntry

INT8_COMMAND = f"{EXPORT_COMMAND} --int8"


def import_openvino() -> Any:
    """The openvino module; ModelRepositoryError saying how to install it otherwise."""
    try:
        import openvino
    except ImportError:
        raise ModelRepositoryError(
            "the int8 backend needs the openvino package: pip install -r requirements.txt") from None
    return openvino


class OpenVinoModel(ImageModel):
    """An OpenVINO model compiled for the CPU behind the same interface as the other backends' models."""

    library = "openvino"

    def __init__(self, name: str, path: Path, input_size: tuple[int, int], preprocessing: str,
                 intra_op_threads: int = 0) -> None:
        openvino = import_openvino()
        # Eight models share the cores: each gets its threads unpinned (pinning would put all eight on the same
        # cores), and one stream (a batch at a time, as the batcher gives it).
        config = {"INFERENCE_NUM_THREADS": intra_op_threads or default_intra_op_threads(),
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
        flip, mean, scale = AFFINE_FORMS[check_preprocessing_mode(preprocessing)]
        self._flip_channels = flip
        try:
            core = openvino.Core()
            compiled = core.compile_model(_with_preprocessing(openvino, core.read_model(str(path)), mean, scale),
                                          "CPU", config)
        except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own for a bad file.
            raise ModelRepositoryError(
                f"{path}: cannot load the {name} INT8 model ({type(error).__name__}); make it again with"
                f" {INT8_COMMAND} {path.parent}") from None
        self.name = name
        self.file_name = path.name
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.preprocessing = preprocessing
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one batch at a time (the batcher sends one anyway)
        model_input = compiled.input(0).get_partial_shape()
        self.channels = int(model_input[3].get_length())
        self.num_outputs = int(compiled.output(0).get_partial_shape()[-1].get_length())
        if [model_input[1].get_length(), model_input[2].get_length()] != list(self.input_size):
            raise ModelRepositoryError(
                f"{path}: the INT8 model takes {model_input} images but the manifest says {list(self.input_size)};"
                f" make it again with {INT8_COMMAND} {path.parent}")

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB images -> the (N, H, W, C) uint8 batch `forward` takes (BGR for `caffe`)."""
        pixels = images[..., ::-1] if self._flip_channels else images
        return np.ascontiguousarray(pixels[..., : self.channels], dtype=np.uint8)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a batch from `prepare`: uint8 pixels, preprocessed inside the compiled model."""
        if batch.dtype != np.uint8:
            raise TypeError(f"the {self.name} INT8 model takes the uint8 batch prepare() makes, not {batch.dtype}")
        with self._lock:
            outputs = self._request.infer([batch])
            return np.array(outputs[0], dtype=np.float32)


def _with_preprocessing(openvino: Any, model: Any, mean: np.ndarray, scale: np.ndarray) -> Any:
    """The model taking uint8 NHWC pixels and computing (x - mean) / scale per channel itself, then its own input."""
    from openvino.preprocess import PrePostProcessor

    channels = int(model.input(0).get_partial_shape()[3].get_length())
    steps = PrePostProcessor(model)
    steps.input().tensor().set_element_type(openvino.Type.u8).set_layout(openvino.Layout("NHWC"))
    steps.input().model().set_layout(openvino.Layout("NHWC"))
    steps.input().preprocess().convert_element_type(openvino.Type.f32) \
        .mean([float(value) for value in mean[:channels]]).scale([float(value) for value in scale[:channels]])
    return steps.build()


def configure(options: BackendOptions) -> str:
    """Describe where the models run (threads are set per model)."""
    import_openvino()
    return f"CPU ({os.cpu_count()} cores, OpenVINO)"


def load_int8(folder: Path, entry: ModelEntry, options: BackendOptions) -> tuple[OpenVinoModel, ModelEntry]:
    """Compile the entry's guarded INT8 model and check its output width against the entry's classes."""
    model_file = entry.files.get(INT8_FILE_KEY)
    if model_file is None or INT8_WEIGHTS_FILE_KEY not in entry.files:
        raise ModelRepositoryError(
            f"{folder / 'manifest.json'} [{entry.role}]: no INT8 model; run {INT8_COMMAND} {folder},"
            " or use TRIAGE_BACKEND=auto")
    model = OpenVinoModel(entry.role, folder / model_file, entry.input_size, entry.preprocessing,
                          options.intra_op_threads)
    check_output_width(model.num_outputs, entry.classes, entry.role, folder / model_file,
                       f"make it again with {INT8_COMMAND} {folder}")
    return model, entry


def versions() -> dict[str, str]:
    """The OpenVINO version."""
    return {"openvino": import_openvino().get_version()}
