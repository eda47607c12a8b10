"""Export every model of a repository to ONNX beside its Keras files, checked against TensorFlow.

    python -m classifiers.onnx_export FOLDER

Writes `<role>.onnx` for the router and each expert, adds it to the entry's files (with its sha256) in
FOLDER/manifest.json, and refuses a model whose ONNX probabilities differ from TensorFlow's by more than
1e-4 on a probe batch. Serve the result with TRIAGE_BACKEND=onnx (PipelineSettings(backend="onnx")).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.errors import ModelRepositoryError
from classifiers.loading import load_model, model_input_shape
from classifiers.manifest import BODY_PARTS, ONNX_FILE_KEY, ROUTER, read_manifest, sha256_file, write_manifest
from classifiers.onnx_backend import ONNX_TOLERANCE, OnnxModel, export_onnx
from classifiers.runtime import CompiledModel


def export_entry(folder: Path, role: str, entry: dict[str, Any]) -> float:
    """Export one entry's model to FOLDER/<role>.onnx, record it in the entry; return the largest difference."""
    model = load_model(folder, entry, role)
    channels = model_input_shape(model)[2]
    input_size = (int(entry["input_size"][0]), int(entry["input_size"][1]))
    onnx_name = f"{role}.onnx"
    export_onnx(model, input_size, channels, folder / onnx_name)
    probe = np.random.default_rng(0).integers(0, 256, (3, *input_size, 3), dtype=np.uint8)
    expected = CompiledModel(role, model, input_size, entry["preprocessing"], channels).predict(probe)
    actual = OnnxModel(role, folder / onnx_name, input_size, entry["preprocessing"]).predict(probe)
    difference = float(np.abs(expected - actual).max())
    if not difference <= ONNX_TOLERANCE:
        (folder / onnx_name).unlink()
        raise ModelRepositoryError(
            f"{folder / onnx_name}: ONNX outputs differ from TensorFlow's by {difference:.2e} (> {ONNX_TOLERANCE:g});"
            " not exported: serve this model with the tensorflow backend")
    entry["files"][ONNX_FILE_KEY] = onnx_name
    entry.setdefault("sha256", {})[onnx_name] = sha256_file(folder / onnx_name)
    return difference


def export_repository(folder: Path, log: Any = print) -> dict[str, float]:
    """Export every model of FOLDER and rewrite its manifest; return the largest difference per role."""
    manifest = read_manifest(folder)
    differences = {}
    for role in (ROUTER, *BODY_PARTS):
        entry = manifest[ROUTER] if role == ROUTER else manifest["experts"][role]
        started = time.perf_counter()
        differences[role] = export_entry(folder, role, entry)
        log(f"{role:12s} -> {entry['files'][ONNX_FILE_KEY]}: max |ONNX - TensorFlow| {differences[role]:.1e},"
            f" {time.perf_counter() - started:.1f} s")
    write_manifest(folder, manifest)
    read_manifest(folder)
    return differences


def main(argv: list[str] | None = None) -> int:
    """Command line: export FOLDER's models to ONNX; exit 2 with one line on any error."""
    parser = argparse.ArgumentParser(prog="python -m classifiers.onnx_export", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="model repository (a folder with manifest.json)")
    args = parser.parse_args(argv)
    try:
        export_repository(args.folder)
    except ModelRepositoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(f"error: {error.name or error} is not installed: pip install -r requirements.txt", file=sys.stderr)
        return 2
    print(f"wrote the ONNX files and {args.folder / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
