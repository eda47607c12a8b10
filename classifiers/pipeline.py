"""The two-stage pipeline: router on all views, then the chosen body part's expert on all views."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from classifiers.admission import PixelBudget
from classifiers.batching import DynamicBatcher
from classifiers.errors import InvalidOption, ModelRepositoryError, StudyTooLarge
from classifiers.imaging import ImageLimits, count_pixels, decode_image, resize_image
from classifiers.loading import load_model, model_input_shape
from classifiers.manifest import (
    BODY_PARTS,
    DEFAULT_THRESHOLD,
    MANIFEST_NAME,
    NO_MANIFEST_WARNING,
    ONNX_FILE_KEY,
    ROUTER,
    read_manifest,
    threshold_source,
)
from classifiers.onnx_backend import OnnxModel
from classifiers.results import StudyResult, ViewInput, ViewResult
from classifiers.runtime import CompiledModel, ImageModel, configure_devices, padded_batch_size

logger = logging.getLogger(__name__)

AGGREGATIONS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda scores: float(np.mean(scores)),
    "max": lambda scores: float(np.max(scores)),
}


@dataclass(frozen=True)
class PipelineSettings:
    """Batching, warning and input limits of a pipeline."""

    max_batch_size: int = 16
    max_wait_ms: float = 2.0
    max_queue_views: int = 256
    confidence_floor: float = 0.6
    disagreement_floor: float = 0.1
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    # Memory bounded by admission (classifiers.admission): pixels per study, decoded pixels in flight.
    max_study_pixels: int = 120_000_000
    pixel_budget: int = 160_000_000
    warmup: bool = True
    on_batch: Callable[[str, int], None] | None = None
    # Speed settings (docs/PERFORMANCE.md): XLA compilation, and TensorFlow's CPU thread pools (0: default).
    jit_compile: bool = False
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    # "tensorflow" runs the Keras files; "onnx" runs each entry's ONNX export (classifiers.onnx_export).
    backend: str = "tensorflow"


BACKENDS = ("tensorflow", "onnx")


@dataclass
class LoadedModel:
    """One model of the repository: its manifest entry, compiled function and batcher."""

    role: str
    entry: dict[str, Any]
    compiled: ImageModel
    batcher: DynamicBatcher
    version: str

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model takes."""
        return self.compiled.input_size


class Pipeline:
    """Router + seven experts, loaded once, safe to call from many threads at once."""

    def __init__(self, repository: Path, manifest: dict[str, Any], models: dict[str, LoadedModel],
                 settings: PipelineSettings, device: str, load_seconds: float) -> None:
        self.repository = repository
        self.manifest = manifest
        self.models = models
        self.settings = settings
        self.device = device
        self.load_seconds = load_seconds
        self.body_parts: tuple[str, ...] = tuple(manifest[ROUTER]["classes"])
        self.pixel_budget = PixelBudget(settings.pixel_budget)
        self.warnings: list[str] = [NO_MANIFEST_WARNING] if manifest[ROUTER].get("conventional") else []
        for warning in self.warnings:
            logger.warning("%s: %s", repository.name, warning)

    @classmethod
    def load(cls, repository: str | Path, settings: PipelineSettings | None = None) -> Pipeline:
        """Load, verify and warm up every model of a repository.

        Raises:
            ModelRepositoryError: anything in the repository is missing or invalid; nothing is served.
        """
        settings = settings or PipelineSettings()
        if settings.backend not in BACKENDS:
            raise ValueError(f"backend {settings.backend!r} unknown; use one of {', '.join(BACKENDS)}")
        repository = Path(repository)
        started = time.perf_counter()
        # The thread settings size the pools of the backend that runs the models: TensorFlow's or ONNX Runtime's.
        tensorflow_threads = (settings.intra_op_threads, settings.inter_op_threads) \
            if settings.backend == "tensorflow" else (0, 0)
        device = configure_devices(*tensorflow_threads)
        manifest = read_manifest(repository)
        entries = {ROUTER: manifest[ROUTER], **{part: manifest["experts"][part] for part in BODY_PARTS}}
        models: dict[str, LoadedModel] = {}
        try:
            for role, entry in entries.items():
                models[role] = _load_one(repository, role, entry, settings)
        except BaseException:
            for loaded in models.values():
                loaded.batcher.close()
            raise
        return cls(repository, manifest, models, settings, device, time.perf_counter() - started)

    def normalize_body_part(self, body_part: str) -> str:
        """Accept `XR_WRIST`, `wrist` or `Wrist`; raise InvalidOption for anything else."""
        candidate = body_part.strip().upper()
        candidate = candidate if candidate.startswith("XR_") else f"XR_{candidate}"
        if candidate not in self.body_parts:
            raise InvalidOption(f"unknown body_part {body_part!r}; valid: {', '.join(self.body_parts)}")
        return candidate

    def predict_study(self, views: Sequence[ViewInput], body_part: str | None = None,
                      aggregation: str = "mean", deadline: float | None = None) -> StudyResult:
        """Decode the views of one study and run both stages on them.

        `deadline` (time.monotonic()) is when the study must have room in the pixel budget and a start in
        the router's queue; past it, Overloaded is raised and nothing more is computed.

        Raises:
            StudyTooLarge: the views have more pixels together than `max_study_pixels`.
        """
        self._check_options(body_part, aggregation, len(views))
        started = time.perf_counter()
        limits = self.settings.image_limits
        num_pixels = sum(count_pixels(view.data, limits, view.name) for view in views)
        if num_pixels > self.settings.max_study_pixels:
            raise StudyTooLarge(f"the {len(views)} views have {num_pixels:,} pixels together, over the limit of "
                                f"{self.settings.max_study_pixels:,} per study; send fewer or smaller views")
        with self.pixel_budget.hold(num_pixels, deadline):
            images = [decode_image(view.data, limits, view.name) for view in views]
            decode_ms = (time.perf_counter() - started) * 1000
            result = self.predict_images([view.name for view in views], images, body_part, aggregation, deadline)
        result.timing_ms = {"decode": decode_ms, **result.timing_ms}
        result.timing_ms["total"] += decode_ms
        return result

    def predict_images(self, names: Sequence[str], images: Sequence[Image.Image], body_part: str | None = None,
                       aggregation: str = "mean", deadline: float | None = None) -> StudyResult:
        """Run router and expert on already-decoded RGB images of one study (deadline: see predict_study).

        The deadline applies to the router's queue: a study that started there goes on to its expert.
        """
        self._check_options(body_part, aggregation, len(images))
        if len(names) != len(images):
            raise ValueError(f"{len(names)} names for {len(images)} images")
        started = time.perf_counter()
        resized: dict[tuple[int, int], np.ndarray] = {}
        router = self.models[ROUTER]
        router_scores = router.batcher.submit(_resize_all(images, router.input_size, resized), deadline)
        router_ms = (time.perf_counter() - started) * 1000
        # (num_views, 7) probabilities, columns in self.body_parts order.
        mean_scores = router_scores.mean(axis=0)
        routed_part = self.body_parts[int(np.argmax(mean_scores))]
        chosen_part = self.normalize_body_part(body_part) if body_part else routed_part
        expert = self.models[chosen_part]
        expert_started = time.perf_counter()
        view_scores = _abnormality(expert, expert.batcher.submit(_resize_all(images, expert.input_size, resized)))
        expert_ms = (time.perf_counter() - expert_started) * 1000
        threshold = float(expert.entry.get("threshold", DEFAULT_THRESHOLD))
        abnormality = AGGREGATIONS[aggregation](view_scores)
        views = [
            self._view_result(name, scores, score)
            for name, scores, score in zip(names, router_scores, view_scores, strict=True)
        ]
        return StudyResult(
            body_part=chosen_part,
            body_part_confidence=float(mean_scores[self.body_parts.index(chosen_part)]),
            abnormality=abnormality,
            label="abnormal" if abnormality >= threshold else "normal",
            threshold=threshold,
            threshold_source=threshold_source(expert.entry),
            aggregation=aggregation,
            n_images=len(images),
            warnings=self._warnings(views, mean_scores, routed_part, body_part and chosen_part),
            images=views,
            models={"router": router.version, "expert": expert.version},
            timing_ms={"router": router_ms, "expert": expert_ms, "total": (time.perf_counter() - started) * 1000},
        )

    def describe(self) -> dict[str, Any]:
        """What is loaded: repository, device, library versions, manifest and per-model settings."""
        import keras
        import tensorflow as tf

        return {
            "repository": str(self.repository),
            "device": self.device,
            "load_seconds": round(self.load_seconds, 3),
            "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__},
            "body_parts": list(self.body_parts),
            "warnings": list(self.warnings),
            "models": {
                role: {"version": loaded.version, "input_size": list(loaded.input_size),
                       "preprocessing": loaded.compiled.preprocessing, "classes": loaded.entry["classes"],
                       "threshold": loaded.entry.get("threshold"), "backend": loaded.compiled.backend}
                for role, loaded in self.models.items()
            },
            "manifest": self.manifest,
        }

    def queue_depths(self) -> dict[str, int]:
        """Views queued or running per model."""
        return {role: loaded.batcher.queued_views for role, loaded in self.models.items()}

    def close(self) -> None:
        """Stop the batcher threads."""
        for loaded in self.models.values():
            loaded.batcher.close()

    def _check_options(self, body_part: str | None, aggregation: str, num_views: int) -> None:
        """Reject unknown options and empty studies before any work is done."""
        if aggregation not in AGGREGATIONS:
            raise InvalidOption(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        if body_part:
            self.normalize_body_part(body_part)
        if num_views < 1:
            raise InvalidOption("a study needs at least one image")

    def _view_result(self, name: str, router_scores: np.ndarray, abnormality: float) -> ViewResult:
        """Per-view body part, its confidence and all router scores."""
        best = int(np.argmax(router_scores))
        return ViewResult(
            name=name,
            body_part=self.body_parts[best],
            body_part_confidence=float(router_scores[best]),
            body_part_scores={part: float(score) for part, score in zip(self.body_parts, router_scores, strict=True)},
            abnormality=float(abnormality),
        )

    def _warnings(self, views: list[ViewResult], mean_scores: np.ndarray, routed_part: str,
                  given_part: str | None) -> list[str]:
        """Warnings a reader should see: views that disagree, low confidence, a router that disagrees."""
        warnings = []
        view_parts = {view.body_part for view in views}
        if len(view_parts) > 1:
            listing = ", ".join(f"{view.name}: {view.body_part}" for view in views)
            warnings.append(f"views disagree on the body part ({listing})")
        confidence = float(mean_scores[self.body_parts.index(routed_part)])
        if not given_part and confidence < self.settings.confidence_floor:
            warnings.append(
                f"body part confidence {confidence:.2f} is under {self.settings.confidence_floor:.2f};"
                " check the body part or pass body_part"
            )
        if given_part:
            given_score = float(mean_scores[self.body_parts.index(given_part)])
            if given_part != routed_part and given_score < self.settings.disagreement_floor:
                warnings.append(
                    f"the router strongly disagrees with body_part {given_part} ({given_score:.2f}):"
                    f" it sees {routed_part} ({confidence:.2f})"
                )
        return warnings


def _load_one(repository: Path, role: str, entry: dict[str, Any], settings: PipelineSettings) -> LoadedModel:
    """Load, compile, warm up and start the batcher of one model."""
    if settings.backend == "onnx":
        compiled = _load_onnx(repository, role, entry, settings)
    else:
        model = load_model(repository, entry, role)
        channels = model_input_shape(model)[2]
        compiled = CompiledModel(role, model, tuple(entry["input_size"]), entry["preprocessing"], channels,
                                 jit_compile=settings.jit_compile)
    if settings.warmup:
        # XLA compiles per batch shape: compile every padded size the batcher can form, not just 1.
        sizes = {padded_batch_size(size) for size in range(1, settings.max_batch_size + 1)}
        compiled.warm_up(tuple(sorted(sizes)) if compiled.jit_compile else (1,))
    batcher = DynamicBatcher(role, compiled.predict, settings.max_batch_size, settings.max_wait_ms,
                             settings.max_queue_views, settings.on_batch)
    main_file = entry["files"].get(ONNX_FILE_KEY) if settings.backend == "onnx" else None
    main_file = main_file or entry["files"].get("model") or entry["files"]["weights"]
    checksum = (entry.get("sha256") or {}).get(main_file, "")
    return LoadedModel(role, entry, compiled, batcher, f"{main_file}@{checksum[:12]}" if checksum else main_file)


def _load_onnx(repository: Path, role: str, entry: dict[str, Any], settings: PipelineSettings) -> OnnxModel:
    """Open the entry's ONNX export and check its output width against the manifest classes."""
    onnx_file = entry["files"].get(ONNX_FILE_KEY)
    if onnx_file is None:
        raise ModelRepositoryError(
            f"{repository / MANIFEST_NAME} [{role}]: no ONNX export for the onnx backend; run"
            f" python -m classifiers.onnx_export {repository}, or use the tensorflow backend")
    model = OnnxModel(role, repository / onnx_file, tuple(entry["input_size"]), entry["preprocessing"],
                      settings.intra_op_threads, settings.inter_op_threads)
    expected = len(entry["classes"])
    if model.num_outputs != expected:
        raise ModelRepositoryError(
            f"{repository / onnx_file}: {model.num_outputs} outputs but the manifest lists {expected} classes for"
            f" {role}; re-export it with python -m classifiers.onnx_export {repository}")
    return model


def _resize_all(images: Sequence[Image.Image], size: tuple[int, int],
                cache: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
    """Resize every view to `size` once per study: (num_views, H, W, 3) uint8."""
    if size not in cache:
        cache[size] = np.stack([resize_image(image, size) for image in images])
    return cache[size]


def _abnormality(expert: LoadedModel, outputs: np.ndarray) -> np.ndarray:
    """P(abnormal) per view from a 1-unit sigmoid or a 2-way softmax [negative, positive]."""
    classes = expert.entry["classes"]
    column = classes.index("positive") if len(classes) == 2 else 0
    return outputs[:, column].astype(np.float64)
