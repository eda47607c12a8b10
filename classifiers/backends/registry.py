"""The backend registry: one entry per way of running a repository's models, looked up by name.

A backend is a module-level trio: `configure(options) -> device description`, `load(folder, entry,
options) -> (ImageModel, entry)` and `versions() -> {library: version}`. Adding one is one entry here;
nothing else branches on backend names.

`auto`, the default, chooses per entry the fastest verified file the repository has: the INT8 model
`training.optimize --int8` left (its accuracy guard passed, or was waived; run by OpenVINO on
the CPU, so skipped where ONNX Runtime has a GPU), else the fp32 ONNX export, else the Keras files.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from classifiers.backends import onnx_backend, openvino_backend, tensorflow_backend
from classifiers.backends.base import BackendOptions, ImageModel
from classifiers.repository.entries import INT8_FILE_KEY, ONNX_FILE_KEY, ModelEntry


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
    "onnx": Backend("onnx", "each entry's fp32 ONNX export (python -m training.optimize), run by"
                    " ONNX Runtime", ONNX_FILE_KEY, onnx_backend.configure, onnx_backend.load, onnx_backend.versions),
    "int8": Backend("int8", "each entry's guarded INT8 model (python -m training.optimize --int8: NNCF),"
                    " run by OpenVINO on the CPU", INT8_FILE_KEY, openvino_backend.configure,
                    openvino_backend.load_int8, openvino_backend.versions),
}
# `auto` is not a backend of its own: a choice, per entry, over these in order (fastest first; every entry
# has the Keras files tensorflow runs).
AUTO = "auto"
AUTO_ORDER = ("int8", "onnx", "tensorflow")
AUTO_DESCRIPTION = ("per entry: the INT8 model (OpenVINO), else the fp32 ONNX export (ONNX Runtime), else the"
                    " Keras files")
DEFAULT_BACKEND = AUTO


def _can_run(name: str) -> bool:
    """Whether auto may pick backend `name` here: its library is installed (and, for int8, no GPU is lost)."""
    if name == "tensorflow":
        return True
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    if name == "int8":
        return importlib.util.find_spec("openvino") is not None and not onnx_backend.has_cuda()
    return True


def choose_backend(entry: ModelEntry, order: Sequence[str] = AUTO_ORDER) -> str:
    """The first backend of `order` that has its file in the entry and can run here (tensorflow always can)."""
    for name in order:
        if (BACKENDS[name].file_key is None or BACKENDS[name].file_key in entry.files) and _can_run(name):
            return name
    raise ValueError(f"no backend of {', '.join(order)} can run entry {entry.role}; add tensorflow to the order")


def auto_backend(order: Sequence[str] = AUTO_ORDER) -> Backend:
    """A backend that loads each entry with `choose_backend(entry, order)`; the runner says which it got."""

    def configure(options: BackendOptions) -> str:
        # ONNX Runtime's device; TensorFlow is set up only if an entry falls back to its Keras files.
        if importlib.util.find_spec("onnxruntime") is None:
            return tensorflow_backend.configure(options)
        return onnx_backend.configure(options)

    def load(folder: Path, entry: ModelEntry, options: BackendOptions) -> tuple[ImageModel, ModelEntry]:
        name = choose_backend(entry, order)
        if name == "tensorflow":
            tensorflow_backend.configure(options)
        runner, entry = BACKENDS[name].load(folder, entry, options)
        runner.backend = name
        return runner, entry

    def versions() -> dict[str, str]:
        # The libraries auto may run: ONNX Runtime, and OpenVINO and TensorFlow where they are loaded.
        found = onnx_backend.versions() if importlib.util.find_spec("onnxruntime") is not None else {}
        if "openvino" in sys.modules:
            found.update(openvino_backend.versions())
        return {**found, **(tensorflow_backend.versions() if "tensorflow" in sys.modules else {})}

    return Backend(AUTO, AUTO_DESCRIPTION, None, configure, load, versions)


# Every name a user may choose (TRIAGE_BACKEND, --backend), with what it runs.
BACKEND_CHOICES: dict[str, str] = {**{name: backend.description for name, backend in BACKENDS.items()},
                                   AUTO: AUTO_DESCRIPTION}


def get_backend(name: str) -> Backend:
    """The backend called `name` (`auto`: the choice over AUTO_ORDER); ValueError listing the valid names otherwise."""
    if name == AUTO:
        return auto_backend()
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} unknown; use one of {', '.join(BACKEND_CHOICES)}")
    return BACKENDS[name]
