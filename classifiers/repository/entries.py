"""Typed model entries: manifest.json parsed once into frozen records the rest of the code reads by attribute."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.body_parts import BODY_PARTS, ROLES, ROUTER

DEFAULT_THRESHOLD = 0.5
# File keys of an entry: the Keras files (one of two layouts), and optional exports beside them.
KERAS_FILE_LAYOUTS = ({"architecture", "weights"}, {"model"})
ONNX_FILE_KEY = "onnx"  # an ONNX export beside the Keras files (training.export_onnx)
# Its INT8 quantization (training.optimize --int8: NNCF), in OpenVINO's format: model and weights.
INT8_FILE_KEY = "openvino_int8"  # <role>.int8.xml
INT8_WEIGHTS_FILE_KEY = "openvino_int8_weights"  # <role>.int8.bin
# ONNX Runtime's INT8 file of earlier releases: still accepted in a manifest, no longer run (auto serves the fp32
# ONNX export instead); optimize --int8 replaces it.
LEGACY_ONNX_INT8_FILE_KEY = "onnx_int8"
INT8_FILE_KEYS = (INT8_FILE_KEY, INT8_WEIGHTS_FILE_KEY, LEGACY_ONNX_INT8_FILE_KEY)
INT8_GUARD_KEY = "int8_guard"  # the INT8 model's accuracy-guard figures and verdict, kept in `extra`
OPTIONAL_FILE_KEYS = {ONNX_FILE_KEY, *INT8_FILE_KEYS}
# The keys an entry's JSON object may hold; anything else is kept as it is in `extra`.
ENTRY_KEYS = ("files", "classes", "input_size", "preprocessing", "threshold", "sha256", "provenance", "conventional",
              "operating_points", "calibration")
OPERATING_POINTS_KEY = "operating_points"
CALIBRATION_KEY = "calibration"
CALIBRATION_METHODS = ("temperature", "platt")
# Triage categories of a study against its expert's two operating points, in worklist order.
TRIAGE_CATEGORIES = ("flagged", "indeterminate", "low")


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class OperatingPoints:
    """An expert's two thresholds on the calibrated study score: below `rule_out` low, at or above `rule_in` flagged.

    `details` keeps what the manifest records beside them: targets, the sensitivity and specificity each
    reached on validation studies with bootstrap 95 % CIs, and the data they were chosen on.
    """

    rule_out: float
    rule_in: float
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> OperatingPoints:
        """Build from a validated manifest object {"rule_out": {"threshold": x, ...}, "rule_in": {...}, ...}."""
        return cls(rule_out=float(document["rule_out"]["threshold"]), rule_in=float(document["rule_in"]["threshold"]),
                   details=dict(document))

    def to_json(self) -> dict[str, Any]:
        """The manifest object (the thresholds inside their points, with every recorded figure)."""
        document = {key: (dict(value) if isinstance(value, Mapping) else value) for key, value in self.details.items()}
        document.setdefault("rule_out", {})["threshold"] = self.rule_out
        document.setdefault("rule_in", {})["threshold"] = self.rule_in
        return document

    def category(self, score: float) -> str:
        """"flagged" at or above rule-in, "low" below rule-out, else "indeterminate"."""
        if score >= self.rule_in:
            return "flagged"
        return "low" if score < self.rule_out else "indeterminate"


@dataclass(frozen=True)
class Calibration:
    """Scaling of an expert's logit fitted on validation studies: p = sigmoid(logit(p_raw) / temperature + bias).

    "temperature" fits the temperature alone (bias 0); "platt" fits both. `details` keeps the recorded
    figures (expected calibration error before and after, the data it was fitted on).
    """

    method: str
    temperature: float
    bias: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Calibration:
        """Build from a validated manifest object {"method": ..., "temperature": T, "bias": b, ...}."""
        return cls(method=document["method"], temperature=float(document["temperature"]),
                   bias=float(document.get("bias", 0.0)), details=dict(document))

    def to_json(self) -> dict[str, Any]:
        """The manifest object."""
        return {**self.details, "method": self.method, "temperature": self.temperature, "bias": self.bias}

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw ones, same shape, float64."""
        raw = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
        logits = np.log(raw) - np.log1p(-raw)
        return 1.0 / (1.0 + np.exp(-(logits / self.temperature + self.bias)))


def is_probability(value: Any) -> bool:
    """True for a finite number in [0, 1] (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


@dataclass(frozen=True)
class ModelEntry:
    """One model of the repository as manifest.json describes it (validated before it is built)."""

    role: str
    files: Mapping[str, str]
    classes: tuple[str, ...]
    input_size: tuple[int, int]
    preprocessing: str
    threshold: float | None = None
    sha256: Mapping[str, str] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    conventional: bool = False  # built from conventional file names, without manifest.json
    operating_points: OperatingPoints | None = None  # experts only: rule-out and rule-in thresholds
    calibration: Calibration | None = None  # experts only: applied to P(abnormal) after the model, on every backend
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, role: str, entry: Mapping[str, Any]) -> ModelEntry:
        """Build the record from an already validated JSON object."""
        return cls(
            role=role,
            files=dict(entry["files"]),
            classes=tuple(entry["classes"]),
            input_size=(int(entry["input_size"][0]), int(entry["input_size"][1])),
            preprocessing=entry["preprocessing"],
            threshold=float(entry["threshold"]) if entry.get("threshold") is not None else None,
            sha256=dict(entry.get("sha256") or {}),
            provenance=dict(entry.get("provenance") or {}),
            conventional=bool(entry.get("conventional", False)),
            operating_points=(OperatingPoints.from_json(entry[OPERATING_POINTS_KEY])
                              if entry.get(OPERATING_POINTS_KEY) else None),
            calibration=Calibration.from_json(entry[CALIBRATION_KEY]) if entry.get(CALIBRATION_KEY) else None,
            extra={key: value for key, value in entry.items() if key not in ENTRY_KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object manifest.json stores for this entry."""
        entry: dict[str, Any] = {
            "files": dict(self.files),
            "classes": list(self.classes),
            "input_size": list(self.input_size),
            "preprocessing": self.preprocessing,
            "sha256": dict(self.sha256),
            "provenance": dict(self.provenance),
        }
        if self.threshold is not None:
            entry["threshold"] = self.threshold
        if self.conventional:
            entry["conventional"] = True
        if self.operating_points is not None:
            entry[OPERATING_POINTS_KEY] = self.operating_points.to_json()
        if self.calibration is not None:
            entry[CALIBRATION_KEY] = self.calibration.to_json()
        return {**entry, **self.extra}

    @property
    def is_router(self) -> bool:
        """True for the router, False for an expert."""
        return self.role == ROUTER

    @property
    def keras_file(self) -> str:
        """The file holding the Keras weights: the full model, or the weights of a .json pair."""
        return self.files.get("model") or self.files["weights"]

    @property
    def decision_threshold(self) -> float:
        """The expert's threshold, or the default when the manifest sets none."""
        return DEFAULT_THRESHOLD if self.threshold is None else self.threshold

    @property
    def threshold_source(self) -> str:
        """Where the threshold comes from: "manifest", or a default (said why)."""
        if self.conventional:
            return "default (no manifest.json)"
        return "manifest" if self.threshold is not None else "default (not in manifest.json)"

    def calibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """P(abnormal) as the answers report it: calibrated when the manifest has a calibration, else as given."""
        values = np.asarray(probabilities, dtype=np.float64)
        return values if self.calibration is None else self.calibration.apply(values)

    def triage_category(self, score: float) -> str | None:
        """The study's triage category at this expert's operating points, or None without them."""
        return None if self.operating_points is None else self.operating_points.category(score)

    @property
    def positive_column(self) -> int:
        """The output column of P(abnormal): 0 for a sigmoid, the "positive" column of a 2-way softmax."""
        return self.classes.index("positive") if len(self.classes) == 2 else 0

    def version(self, file_name: str) -> str:
        """`file@sha256-prefix`, the name answers give the model run from `file_name`."""
        checksum = self.sha256.get(file_name, "")
        return f"{file_name}@{checksum[:12]}" if checksum else file_name

    def with_files(self, folder: Path, **files: str) -> ModelEntry:
        """A copy with more files (e.g. onnx=...) recorded with their sha256."""
        checksums = {name: sha256_file(folder / name) for name in files.values()}
        return dataclasses.replace(self, files={**self.files, **files}, sha256={**self.sha256, **checksums})


@dataclass(frozen=True)
class Manifest:
    """A repository's router and seven experts, in role order."""

    router: ModelEntry
    experts: Mapping[str, ModelEntry]
    format_version: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)

    def entries(self) -> dict[str, ModelEntry]:
        """Every entry by role: the router first, then the experts in BODY_PARTS order."""
        return {ROUTER: self.router, **{part: self.experts[part] for part in BODY_PARTS}}

    def entry(self, role: str) -> ModelEntry:
        """The entry of one role ("router" or a body part)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; valid roles: {', '.join(ROLES)}")
        return self.router if role == ROUTER else self.experts[role]

    def with_entry(self, entry: ModelEntry) -> Manifest:
        """A copy with `entry` in place of the entry of its role."""
        if entry.is_router:
            return dataclasses.replace(self, router=entry)
        return dataclasses.replace(self, experts={**self.experts, entry.role: entry})

    @property
    def conventional(self) -> bool:
        """True when there was no manifest.json and defaults stand in for it."""
        return self.router.conventional

    def to_json(self) -> dict[str, Any]:
        """The JSON object manifest.json stores."""
        return {
            "format_version": self.format_version,
            **self.extra,
            ROUTER: self.router.to_json(),
            "experts": {part: self.experts[part].to_json() for part in BODY_PARTS if part in self.experts},
        }
