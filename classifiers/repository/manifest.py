"""The model repository's manifest.json: read, validate and verify once into a typed Manifest; write."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from classifiers.body_parts import BODY_PARTS, ROLES, ROUTER
from classifiers.errors import ModelRepositoryError
from classifiers.preprocessing import PREPROCESSING_MODES
from classifiers.repository.entries import (
    CALIBRATION_KEY,
    CALIBRATION_METHODS,
    DEFAULT_THRESHOLD,
    KERAS_FILE_LAYOUTS,
    OPERATING_POINTS_KEY,
    OPTIONAL_FILE_KEYS,
    Manifest,
    ModelEntry,
    is_probability,
    sha256_file,
)

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
EXPERT_CLASS_LAYOUTS = (["abnormal"], ["negative", "positive"])
DEFAULT_INPUT_SIZE = (224, 224)
DEFAULT_PREPROCESSING = "tf"
NO_MANIFEST_WARNING = (
    "no manifest.json: every threshold is the default 0.5, preprocessing and input sizes are defaults, and no"
    " checksum is verified; write a manifest (python -m training.import_original FOLDER, or see"
    " README, 'Model repository') with the thresholds chosen on validation data"
)


def triage_warnings(manifest: Manifest) -> list[str]:
    """What answers lack where experts have no operating points or no calibration; empty when every expert has both."""
    warnings = []
    without_points = [part for part, entry in manifest.experts.items() if entry.operating_points is None]
    without_calibration = [part for part, entry in manifest.experts.items() if entry.calibration is None]
    fit = "fit them on labelled validation studies: python -m training.operating_points REPOSITORY --data FOLDER"
    if without_points:
        warnings.append(f"no operating points for {', '.join(without_points)}: their answers carry triage null"
                        f" (no flagged/indeterminate/low), worklists order them by score; {fit}")
    if without_calibration:
        warnings.append(f"no calibration for {', '.join(without_calibration)}: their abnormality is the network's"
                        f" raw output, not a calibrated probability; {fit}")
    return warnings
FIX_HINT = "fix manifest.json or regenerate it (see README, 'Model repository')"


def make_model_entry(
    folder: str | Path,
    role: str,
    files: dict[str, str],
    classes: list[str] | tuple[str, ...],
    input_size: tuple[int, int],
    preprocessing: str,
    threshold: float | None = None,
    provenance: dict[str, Any] | None = None,
) -> ModelEntry:
    """Build one entry for files already in `folder`, with their sha256."""
    folder = Path(folder)
    return ModelEntry(
        role=role,
        files=dict(files),
        classes=tuple(classes),
        input_size=(int(input_size[0]), int(input_size[1])),
        preprocessing=preprocessing,
        threshold=None if threshold is None else float(threshold),
        sha256={name: sha256_file(folder / name) for name in files.values()},
        provenance=dict(provenance or {}),
    )


def write_manifest(folder: str | Path, manifest: Manifest) -> None:
    """Write manifest.json atomically (a temporary file renamed over the old one)."""
    path = Path(folder) / MANIFEST_NAME
    _write_json_atomically(path, manifest.to_json())


def update_manifest_entry(folder: str | Path, entry: ModelEntry) -> None:
    """Add or replace the entry of `entry.role`; creates manifest.json if missing (entries unchecked)."""
    if entry.role not in ROLES:
        raise ValueError(f"unknown role {entry.role!r}; valid roles: {', '.join(ROLES)}")
    path = Path(folder) / MANIFEST_NAME
    manifest = json.loads(path.read_text()) if path.exists() else {"format_version": FORMAT_VERSION}
    if entry.is_router:
        manifest[ROUTER] = entry.to_json()
    else:
        manifest.setdefault("experts", {})[entry.role] = entry.to_json()
    _write_json_atomically(path, manifest)


def _write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write JSON to a temporary file and rename it over `path`."""
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    temporary.replace(path)


def read_manifest(folder: str | Path, verify_checksums: bool = True) -> Manifest:
    """Read and validate a repository's manifest.json, verifying every file's sha256.

    Without manifest.json, the conventional names (router.json/.h5 or body_part.json/.h5 and
    XR_<PART>.json/.h5) load with default settings.

    Raises:
        ModelRepositoryError: the folder, manifest or a file is missing or invalid; says what to do.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelRepositoryError(f"{folder}: model repository folder not found; pass --models DIR")
    path = folder / MANIFEST_NAME
    if not path.exists():
        return conventional_manifest(folder)
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelRepositoryError(f"{path}: not valid JSON ({error}); {FIX_HINT}") from None
    validate_manifest(manifest, folder, verify_checksums)
    return parse_manifest(manifest)


def parse_manifest(manifest: dict[str, Any]) -> Manifest:
    """Turn a validated manifest JSON object into typed entries."""
    return Manifest(
        router=ModelEntry.from_json(ROUTER, manifest[ROUTER]),
        experts={part: ModelEntry.from_json(part, manifest["experts"][part]) for part in BODY_PARTS},
        format_version=manifest["format_version"],
        extra={key: value for key, value in manifest.items() if key not in ("format_version", ROUTER, "experts")},
    )


def validate_manifest(manifest: Any, folder: Path, verify_checksums: bool = True) -> None:
    """Check the manifest's structure, files and checksums; raise ModelRepositoryError on the first fault."""
    where = folder / MANIFEST_NAME
    if not isinstance(manifest, dict):
        raise ModelRepositoryError(f"{where}: must be a JSON object; {FIX_HINT}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelRepositoryError(f"{where}: format_version must be {FORMAT_VERSION}; {FIX_HINT}")
    if not isinstance(manifest.get(ROUTER), dict):
        raise ModelRepositoryError(f"{where}: no 'router' entry; {FIX_HINT}")
    _validate_entry(manifest[ROUTER], ROUTER, folder, verify_checksums)
    router_classes = manifest[ROUTER]["classes"]
    if sorted(router_classes) != sorted(BODY_PARTS):
        raise ModelRepositoryError(
            f"{where}: router classes must be the 7 body parts {', '.join(BODY_PARTS)}; got {router_classes}"
        )
    experts = manifest.get("experts")
    if not isinstance(experts, dict):
        raise ModelRepositoryError(f"{where}: no 'experts' object; {FIX_HINT}")
    for body_part in BODY_PARTS:
        if body_part not in experts:
            raise ModelRepositoryError(f"{where}: no expert for {body_part}; every body part needs one")
        _validate_entry(experts[body_part], body_part, folder, verify_checksums)
    unknown = sorted(set(experts) - set(BODY_PARTS))
    if unknown:
        raise ModelRepositoryError(f"{where}: unknown expert(s) {unknown}; valid: {', '.join(BODY_PARTS)}")


def _validate_entry(entry: Any, role: str, folder: Path, verify_checksums: bool) -> None:
    """Validate one router or expert entry."""
    where = f"{folder / MANIFEST_NAME} [{role}]"
    if not isinstance(entry, dict):
        raise ModelRepositoryError(f"{where}: must be an object; {FIX_HINT}")
    files = entry.get("files")
    if not isinstance(files, dict) or set(files) - OPTIONAL_FILE_KEYS not in KERAS_FILE_LAYOUTS:
        raise ModelRepositoryError(
            f"{where}: 'files' must be {{'architecture': X.json, 'weights': X.h5}} or {{'model': X.keras|X.h5}},"
            " optionally with 'onnx': X.onnx and 'openvino_int8': X.int8.xml + 'openvino_int8_weights': X.int8.bin"
        )
    classes = entry.get("classes")
    if role != ROUTER and classes not in EXPERT_CLASS_LAYOUTS:
        raise ModelRepositoryError(
            f"{where}: expert classes must be ['abnormal'] (1-unit sigmoid) or ['negative', 'positive']"
            f" (2-way softmax); got {classes}"
        )
    if role == ROUTER and (not isinstance(classes, list) or len(classes) != len(BODY_PARTS)):
        raise ModelRepositoryError(f"{where}: router needs 7 class names in output order; got {classes}")
    size = entry.get("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ModelRepositoryError(f"{where}: input_size must be [height, width] in pixels; got {size}")
    if entry.get("preprocessing") not in PREPROCESSING_MODES:
        valid = ", ".join(sorted(PREPROCESSING_MODES))
        raise ModelRepositoryError(f"{where}: preprocessing {entry.get('preprocessing')!r} unknown; valid: {valid}")
    threshold = entry.get("threshold", DEFAULT_THRESHOLD)
    if role != ROUTER and not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise ModelRepositoryError(f"{where}: threshold must be a number in [0, 1]; got {threshold!r}")
    _validate_operating_points(entry.get(OPERATING_POINTS_KEY), role, where)
    _validate_calibration(entry.get(CALIBRATION_KEY), role, where)
    _verify_files(entry, where, folder, verify_checksums)


def _validate_operating_points(points: Any, role: str, where: str) -> None:
    """An expert's optional {"rule_out": {"threshold": x, ...}, "rule_in": {"threshold": y, ...}} with x <= y."""
    if points is None:
        return
    hint = ("operating_points must be {'rule_out': {'threshold': x}, 'rule_in': {'threshold': y}} with 0 <= x <= y <= 1"
            " (python -m training.operating_points REPOSITORY --data FOLDER writes them)")
    if role == ROUTER:
        raise ModelRepositoryError(f"{where}: the router has no operating points; only experts do")
    thresholds = [points.get(name, {}).get("threshold") if isinstance(points, dict) and
                  isinstance(points.get(name), dict) else None for name in ("rule_out", "rule_in")]
    if not all(is_probability(value) for value in thresholds) or thresholds[0] > thresholds[1]:
        raise ModelRepositoryError(f"{where}: {hint}")


def _validate_calibration(calibration: Any, role: str, where: str) -> None:
    """An expert's optional {"method": "temperature"|"platt", "temperature": T > 0, "bias": b}."""
    if calibration is None:
        return
    if role == ROUTER:
        raise ModelRepositoryError(f"{where}: the router has no calibration; only experts do")
    methods = " or ".join(repr(method) for method in CALIBRATION_METHODS)
    hint = (f"calibration must be {{'method': {methods}, 'temperature': T > 0, 'bias': b}}"
            " (python -m training.operating_points REPOSITORY --data FOLDER fits it)")
    if not isinstance(calibration, dict) or calibration.get("method") not in CALIBRATION_METHODS:
        raise ModelRepositoryError(f"{where}: {hint}")
    temperature, bias = calibration.get("temperature"), calibration.get("bias", 0.0)
    numbers = all(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  for value in (temperature, bias))
    if not numbers or temperature <= 0:
        raise ModelRepositoryError(f"{where}: {hint}")


def _verify_files(entry: dict[str, Any], where: str, folder: Path, verify_checksums: bool) -> None:
    """Check that every file exists and matches its recorded sha256."""
    checksums = entry.get("sha256") or {}
    for file_name in entry["files"].values():
        file_path = folder / file_name
        if not file_path.is_file():
            raise ModelRepositoryError(f"{file_path}: model file missing; copy it into {folder} or fix manifest.json")
        if not verify_checksums:
            continue
        expected = checksums.get(file_name)
        if expected is None:
            raise ModelRepositoryError(f"{where}: no sha256 for {file_name}; regenerate manifest.json")
        actual = sha256_file(file_path)
        if actual != expected:
            raise ModelRepositoryError(
                f"{file_path}: sha256 mismatch (expected {expected[:12]}…, file has {actual[:12]}…); the file is"
                " corrupt or was replaced: restore the right file or regenerate manifest.json"
            )


def conventional_manifest(folder: Path) -> Manifest:
    """Build a manifest for a folder that uses the conventional file names and default settings.

    Input sizes and expert classes here are placeholders: loading takes them from each model.
    """
    router_names = [name for name in ("router", "body_part")
                    if (folder / f"{name}.json").exists() or (folder / f"{name}.h5").exists()]
    if not router_names:
        raise ModelRepositoryError(
            f"{folder}: no manifest.json and no router.json/body_part.json (or full-model router.h5/body_part.h5);"
            " add a manifest"
            " (python -m training.import_original FOLDER for the original project's files)"
        )
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION, "experts": {}}
    manifest[ROUTER] = _conventional_entry(folder, router_names[0], list(BODY_PARTS))
    for body_part in BODY_PARTS:
        manifest["experts"][body_part] = _conventional_entry(folder, body_part, None)
    validate_manifest(manifest, folder, verify_checksums=False)
    return parse_manifest(manifest)


def _conventional_entry(folder: Path, stem: str, classes: list[str] | None) -> dict[str, Any]:
    """Entry for `<stem>.json` + `<stem>.weights.h5` or `<stem>.h5`, or a full-model `<stem>.h5` without .json.

    Expert classes and input sizes come from the model when it loads."""
    weights = f"{stem}.weights.h5" if (folder / f"{stem}.weights.h5").exists() else f"{stem}.h5"
    full_model = not (folder / f"{stem}.json").exists() and (folder / f"{stem}.h5").exists()
    entry: dict[str, Any] = {
        "files": {"model": f"{stem}.h5"} if full_model else {"architecture": f"{stem}.json", "weights": weights},
        "classes": classes if classes is not None else ["abnormal"],
        "input_size": list(DEFAULT_INPUT_SIZE),
        "preprocessing": DEFAULT_PREPROCESSING,
        "provenance": {"data": "unknown (no manifest.json)"},
        "conventional": True,
    }
    if classes is None:
        entry["threshold"] = DEFAULT_THRESHOLD
    return entry
