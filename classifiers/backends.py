"""The backend registry: one entry per way of running a repository's models, looked up by name.

A backend is a module-level trio: `configure(options) -> device description`, `load(folder, entry,
options) -> (ImageModel, entry)` and `versions() -> {library: version}`. Adding one (INT8, OpenVINO)
is one entry here; nothing else branches on backend names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from classifiers import onnx_backend, tensorflow_backend
from classifiers.repository.entries import ONNX_FILE_KEY, ModelEntry
from classifiers.runtime import BackendOptions, ImageModel


@dataclass(frozen=True)
class Backend:
    """A named way to run models: how to set the library up, load one entry, and report versions."""

    name: str
    description: str
    file_key: str | None  # the entry's file it runs beside the Keras files (None: the Keras files themselves)
    configure: Callable[[BackendOptions], str]
    load: Callable[[Path, ModelEntry, BackendOptions], tuple[ImageModel, ModelEntry]]
    versions: Callable[[], dict[str, str]]


BACKENDS: dict[str, Backend] = {
    "tensorflow": Backend("tensorflow", "the Keras files, run by TensorFlow (Keras 3 or tf_keras)", None,
                          tensorflow_backend.configure, tensorflow_backend.load, tensorflow_backend.versions),
    "onnx": Backend("onnx", "each entry's ONNX export (python -m classifiers.repository.onnx_export), run by"
                    " ONNX Runtime", ONNX_FILE_KEY, onnx_backend.configure, onnx_backend.load, onnx_backend.versions),
}
DEFAULT_BACKEND = "tensorflow"


def get_backend(name: str) -> Backend:
    """The backend called `name`; ValueError listing the valid names otherwise."""
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} unknown; use one of {', '.join(BACKENDS)}")
    return BACKENDS[name]
