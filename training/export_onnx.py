"""Export every model of a repository to ONNX beside its Keras files, checked against TensorFlow.

    python -m training.export_onnx FOLDER

Writes `<role>.onnx` for the router and each expert, adds it to the entry's files (with its sha256) in
FOLDER/manifest.json, and refuses a model whose ONNX probabilities differ from TensorFlow's by more than
1e-4 on a probe batch. Serve the result with TRIAGE_BACKEND=onnx (PipelineSettings(backend="onnx")).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from classifiers.backends.keras_files import load_model, model_input_shape
from classifiers.backends.onnx_backend import OnnxModel
from classifiers.backends.tensorflow_backend import CompiledModel
from classifiers.errors import ModelRepositoryError
from classifiers.repository.entries import ModelEntry
from classifiers.repository.manifest import read_manifest, write_manifest
from training.conventional_manifest import ensure_manifest

T = TypeVar("T")
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


def export_entry(folder: Path, entry: ModelEntry) -> tuple[ModelEntry, float]:
    """Export one entry's model to FOLDER/<role>.onnx; return the entry recording it and the largest difference."""
    model, entry = load_model(folder, entry)
    channels = model_input_shape(model)[2]
    onnx_name = f"{entry.role}.onnx"
    export_onnx(model, entry.input_size, channels, folder / onnx_name)
    probe = np.random.default_rng(0).integers(0, 256, (3, *entry.input_size, 3), dtype=np.uint8)
    expected = CompiledModel(entry.role, model, entry.input_size, entry.preprocessing, channels).predict(probe)
    actual = OnnxModel(entry.role, folder / onnx_name, entry.input_size, entry.preprocessing).predict(probe)
    difference = float(np.abs(expected - actual).max())
    if not difference <= ONNX_TOLERANCE:
        (folder / onnx_name).unlink()
        raise ModelRepositoryError(
            f"{folder / onnx_name}: ONNX outputs differ from TensorFlow's by {difference:.2e} (> {ONNX_TOLERANCE:g});"
            " not exported: serve this model with the tensorflow backend")
    return entry.with_files(folder, onnx=onnx_name), difference


def export_repository(folder: Path, log: Any = print) -> dict[str, float]:
    """Export every model of FOLDER and rewrite its manifest (written first when missing); return the largest
    difference per role."""
    ensure_manifest(folder, log)
    manifest = read_manifest(folder)
    differences = {}
    for role, entry in manifest.entries().items():
        started = time.perf_counter()
        exported, differences[role] = export_entry(folder, entry)
        manifest = manifest.with_entry(exported)
        log(f"{role:12s} -> {exported.files['onnx']}: max |ONNX - TensorFlow| {differences[role]:.1e},"
            f" {time.perf_counter() - started:.1f} s")
    write_manifest(folder, manifest)
    read_manifest(folder)
    return differences


def main(argv: list[str] | None = None) -> int:
    """Command line: export FOLDER's models to ONNX; exit 2 with one line on any error."""
    parser = argparse.ArgumentParser(prog="python -m training.export_onnx",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path,
                        help="model repository: a folder with manifest.json, or with the conventional names")
    args = parser.parse_args(argv)
    if run_reporting_errors(lambda: export_repository(args.folder)) is None:
        return 2
    print(f"wrote the ONNX files and {args.folder / 'manifest.json'}")
    return 0


def run_reporting_errors(action: Callable[[], T]) -> T | None:
    """Run a repository tool's action; on a repository fault or a missing package print one line, return None."""
    try:
        return action()
    except ModelRepositoryError as error:
        print(f"error: {error}", file=sys.stderr)
    except ImportError as error:
        print(f"error: {error.name or error} is not installed: pip install -r requirements.txt", file=sys.stderr)
    return None


if __name__ == "__main__":
    sys.exit(main())
