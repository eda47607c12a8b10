"""Prepare a model repository for speed: fp32 ONNX exports and, with --int8, accuracy-guarded INT8 models.

    python -m training.optimize DIR [--int8] [--calibration FOLDER] [--no-accuracy-guard]

Exports every model to `<role>.onnx` (checked against TensorFlow, as training.export_onnx does); with
--int8 also writes `<role>.int8.xml` + `<role>.int8.bin`, quantized with NNCF into OpenVINO's format (symmetric
int8 weights per channel and activations) and calibrated on the views of FOLDER (default DIR/validation). The accuracy
guard then compares INT8 with fp32 on those views: an entry whose routing agreement is under 99.5 %, whose
study AUROC drops by more than 0.005, or (without labels) whose probabilities move by more than 0.02 on
average keeps fp32. Every artefact goes into manifest.json with its sha256, the guard's figures beside it.
The default backend (TRIAGE_BACKEND=auto) then serves the INT8 model (OpenVINO) where present, else fp32 ONNX.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from classifiers.backends.base import ImageModel
from classifiers.backends.onnx_backend import OnnxModel
from classifiers.backends.openvino_backend import OpenVinoModel
from classifiers.errors import ModelRepositoryError
from classifiers.repository.entries import (
    INT8_FILE_KEY,
    INT8_FILE_KEYS,
    INT8_GUARD_KEY,
    INT8_WEIGHTS_FILE_KEY,
    ONNX_FILE_KEY,
    ModelEntry,
)
from classifiers.repository.manifest import read_manifest, write_manifest
from mura.studies import StudySourceError
from training.conventional_manifest import ensure_manifest
from training.export_onnx import export_repository, run_reporting_errors
from training.quantize import (
    ValidationViews,
    calibration_batches,
    guard_figures,
    load_validation_views,
    quantize_openvino,
)

DEFAULT_CALIBRATION_FOLDER = "validation"
QUANTIZATION_METHOD = "nncf quantize for OpenVINO: performance preset, symmetric int8 per-channel weights, activations"
Log = Callable[[str], None]


def quantize_entry(folder: Path, entry: ModelEntry, views: ValidationViews, accuracy_guard: bool,
                   calibration_views: int) -> tuple[ModelEntry, dict[str, Any]]:
    """Quantize one entry's fp32 ONNX model and guard it; return the entry recording it (or its refusal)."""
    fp32_path = folder / entry.files[ONNX_FILE_KEY]
    int8_path = folder / f"{entry.role}.int8.xml"
    int8_weights_path = int8_path.with_suffix(".bin")  # openvino.save_model writes the weights beside the model
    fp32 = OnnxModel(entry.role, fp32_path, entry.input_size, entry.preprocessing)
    indices = views.indices_for(entry.role)
    pixels = views.pixels(entry.input_size)[indices]
    batches = calibration_batches(fp32, pixels, calibration_views)
    started = time.perf_counter()
    quantize_openvino(fp32_path, int8_path, batches)
    record: dict[str, Any] = {"method": QUANTIZATION_METHOD, "calibration_views": int(sum(map(len, batches))),
                              "quantize_seconds": round(time.perf_counter() - started, 1)}
    if accuracy_guard:
        int8 = OpenVinoModel(entry.role, int8_path, entry.input_size, entry.preprocessing)
        record.update(guard_figures(entry.role, entry.positive_column, _predict_all(fp32, pixels),
                                    _predict_all(int8, pixels), views, indices))
        record["status"] = "passed" if record.pop("passed") else "failed"
    else:
        record["status"] = "unchecked"
    entry = dataclasses.replace(entry, extra={**entry.extra, INT8_GUARD_KEY: record})
    if record["status"] == "failed":
        int8_path.unlink()
        int8_weights_path.unlink()
        return entry, record
    files = {INT8_FILE_KEY: int8_path.name, INT8_WEIGHTS_FILE_KEY: int8_weights_path.name}
    return entry.with_files(folder, **files), record


def _predict_all(model: ImageModel, pixels: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Outputs (N, K) of `model` on (N, H, W, 3) uint8 views, in batches."""
    return np.concatenate([model.predict(pixels[start : start + batch_size])
                           for start in range(0, len(pixels), batch_size)])


def forget_int8(folder: Path, entry: ModelEntry) -> ModelEntry:
    """The entry without its INT8 files and figures (they describe an older fp32 export); deletes the files."""
    names = {entry.files[key] for key in INT8_FILE_KEYS if key in entry.files}
    for name in names:
        (folder / name).unlink(missing_ok=True)
    return dataclasses.replace(
        entry, files={key: value for key, value in entry.files.items() if key not in INT8_FILE_KEYS},
        sha256={key: value for key, value in entry.sha256.items() if key not in names},
        extra={key: value for key, value in entry.extra.items() if key != INT8_GUARD_KEY})


def describe_record(role: str, record: dict[str, Any]) -> str:
    """One line for the log: what runs for this entry and the guard's figures."""
    figures = ", ".join(f"{key} {record[key]:.4f}" for key in (
        "routing_agreement", "mean_abs_difference", "auroc_fp32", "auroc_int8") if record.get(key) is not None)
    if record["status"] == "failed":
        return f"{role:12s} INT8 refused by the accuracy guard ({figures}): keeps fp32 ONNX"
    if record["status"] == "unchecked":
        return f"{role:12s} -> {role}.int8.xml, accuracy NOT checked (--no-accuracy-guard)"
    return f"{role:12s} -> {role}.int8.xml, guard passed ({figures})"


def drop_optimizer_state(folder: Path, entry: ModelEntry) -> tuple[ModelEntry, int]:
    """Rewrite a `.weights.h5` without the optimizer variables Keras 3 saves with a compiled model.

    Serving never reads them; they are two thirds of an Adam-trained file. Returns the entry and bytes saved.
    """
    name = entry.files.get("weights", "")
    path = folder / name
    if not name.endswith(".weights.h5"):
        return entry, 0
    with h5py.File(path, "r") as source:
        if "optimizer" not in source:
            return entry, 0
        temporary = path.with_suffix(".tmp")
        with h5py.File(temporary, "w") as target:
            for key, value in source.attrs.items():
                target.attrs[key] = value
            for key in source:
                if key != "optimizer":
                    source.copy(key, target)
    saved = path.stat().st_size - temporary.stat().st_size
    temporary.replace(path)
    return entry.with_files(folder, weights=name), saved


def optimize_repository(folder: Path, int8: bool = False, calibration: Path | None = None,
                        accuracy_guard: bool = True, calibration_views: int = 64,
                        drop_optimizer: bool = False, log: Log = print) -> dict[str, dict[str, Any]]:
    """Export FOLDER to fp32 ONNX and, with `int8`, quantize and guard each entry; return the INT8 records.

    Everything that can be checked before the first export is: the tools are installed, the calibration
    images read, and a folder without manifest.json gets one (classifiers.repository.conventional).

    Raises:
        ModelRepositoryError: a model does not load or export, or there are no calibration images.
        ImportError: a package the export (tf2onnx) or INT8 (nncf, openvino) needs is not installed.
    """
    require_tools(int8)
    views = _calibration_views(folder, calibration) if int8 else None
    ensure_manifest(folder, log)
    if drop_optimizer:
        manifest, saved = read_manifest(folder), 0
        for entry in manifest.entries().values():
            entry, saved_here = drop_optimizer_state(folder, entry)
            manifest, saved = manifest.with_entry(entry), saved + saved_here
        write_manifest(folder, manifest)
        log(f"dropped {saved / 1e6:.1f} MB of optimizer state from the weights files")
    export_repository(folder, log=log)
    manifest = read_manifest(folder)
    records: dict[str, dict[str, Any]] = {}
    for role, entry in manifest.entries().items():
        if any(key in entry.files for key in INT8_FILE_KEYS) and not int8:
            log(f"{role:12s} removed its INT8 model (made from an older export); add --int8 to make a new one")
        entry = forget_int8(folder, entry)
        if views is not None:
            entry, records[role] = quantize_entry(folder, entry, views, accuracy_guard, calibration_views)
            log(describe_record(role, records[role]))
        manifest = manifest.with_entry(entry)
    write_manifest(folder, manifest)
    read_manifest(folder)
    return records


def require_tools(int8: bool) -> None:
    """Import what the export (and with `int8` the quantization) needs, so a missing package stops the run first."""
    import tf2onnx  # noqa: F401
    if int8:
        import nncf  # noqa: F401
        import openvino  # noqa: F401


def _calibration_views(folder: Path, calibration: Path | None) -> ValidationViews:
    """The views INT8 is calibrated and checked on: FOLDER given, else the repository's validation folder."""
    source = calibration or folder / DEFAULT_CALIBRATION_FOLDER
    if calibration is None and not source.is_dir():
        raise ModelRepositoryError(
            f"{folder}: --int8 needs validation images to calibrate on; add {source.name}/ (a MURA-layout or"
            " one-folder-per-study tree) or pass --calibration FOLDER")
    try:
        return load_validation_views(source)
    except StudySourceError as error:
        raise ModelRepositoryError(f"calibration images: {error}") from None


def main(argv: list[str] | None = None) -> int:
    """Command line: optimize DIR; exit 2 with one line on any error."""
    parser = argparse.ArgumentParser(prog="python -m training.optimize", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path,
                        help="model repository: a folder with manifest.json, or with the conventional names")
    parser.add_argument("--int8", action="store_true", help="also write guarded static INT8 models")
    parser.add_argument("--calibration", type=Path, default=None,
                        help=f"folder of validation studies (default DIR/{DEFAULT_CALIBRATION_FOLDER})")
    parser.add_argument("--no-accuracy-guard", action="store_true",
                        help="keep every INT8 model unchecked (random-weight benchmark repositories only)")
    parser.add_argument("--calibration-views", type=int, default=64, help="views per model to calibrate on")
    parser.add_argument("--drop-optimizer-state", action="store_true",
                        help="rewrite .weights.h5 files without the optimizer variables serving never reads")
    args = parser.parse_args(argv)
    if args.calibration_views < 1:
        parser.error("--calibration-views must be >= 1")
    records = run_reporting_errors(lambda: optimize_repository(
        args.folder, args.int8, args.calibration, not args.no_accuracy_guard, args.calibration_views,
        args.drop_optimizer_state))
    if records is None:
        return 2
    refused = [role for role, record in records.items() if record["status"] == "failed"]
    print(f"wrote the ONNX files and {args.folder / 'manifest.json'}")
    if refused:
        print(f"the accuracy guard kept fp32 ONNX for: {', '.join(refused)} (figures in manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
