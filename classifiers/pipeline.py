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
from classifiers.backends.base import BackendOptions, ImageModel, padded_batch_size
from classifiers.backends.registry import DEFAULT_BACKEND, Backend, get_backend
from classifiers.batching import DynamicBatcher
from classifiers.body_parts import ROUTER, normalize_body_part
from classifiers.decoding import attach_dicom_metadata, count_view_pixels, decode_views
from classifiers.decoding.imaging import ImageLimits, resize_image
from classifiers.errors import InvalidOption, NotARadiograph, StudyTooLarge
from classifiers.explain.explainers import Explainers
from classifiers.explain.overlay import Explanation, explain_view
from classifiers.gate import NO_GATE_WARNING, Gate, flag_views, load_repository_gate
from classifiers.repository.entries import Manifest, ModelEntry
from classifiers.repository.manifest import NO_MANIFEST_WARNING, read_manifest
from classifiers.results import DecodedView, StudyResult, ViewInput, ViewResult

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
    reject_out_of_distribution: bool = False  # a view the gate flags is refused (NotARadiograph), not scored
    disagreement_floor: float = 0.1
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    # Memory bounded by admission (classifiers.admission): pixels per study, decoded pixels in flight.
    max_study_pixels: int = 120_000_000
    pixel_budget: int = 160_000_000
    warmup: bool = True
    on_batch: Callable[[str, int, float], None] | None = None  # (model, views, seconds) per model call
    # Speed settings (docs/PERFORMANCE.md): XLA compilation, and TensorFlow's CPU thread pools (0: default).
    jit_compile: bool = False
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    # A name in classifiers.backends.registry.BACKENDS: "tensorflow" runs the Keras files, "onnx" their ONNX exports.
    backend: str = DEFAULT_BACKEND
    # Heatmaps (explain=true) are made on first request per expert; True makes them all at start instead.
    preload_explainers: bool = False

    @property
    def backend_options(self) -> BackendOptions:
        """The speed settings the backend reads."""
        return BackendOptions(self.intra_op_threads, self.inter_op_threads, self.jit_compile)


@dataclass
class LoadedModel:
    """One model of the repository: its entry, the backend's runner and the batcher in front of it."""

    entry: ModelEntry
    runner: ImageModel
    batcher: DynamicBatcher
    seconds: dict[str, float] = field(default_factory=dict)  # {"load": ..., "warm_up": ...}

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model takes."""
        return self.runner.input_size

    @property
    def version(self) -> str:
        """`file@sha256-prefix` of the file the runner runs."""
        return self.entry.version(self.runner.file_name)


class Pipeline:
    """Router + seven experts, loaded once, safe to call from many threads at once."""

    def __init__(self, repository: Path, manifest: Manifest, models: dict[str, LoadedModel],
                 settings: PipelineSettings, backend: Backend, device: str, load_seconds: float,
                 gate: Gate | None = None) -> None:
        self.repository = repository
        self.manifest = manifest
        self.models = models
        self.settings = settings
        self.backend = backend
        self.device = device
        self.load_seconds = load_seconds
        # Where the start-up seconds went: runtime import, manifest and checksums, model loading, warm-up.
        self.load_breakdown: dict[str, float] = {}
        self.body_parts: tuple[str, ...] = manifest.router.classes
        self.pixel_budget = PixelBudget(settings.pixel_budget)
        self.gate = gate
        self.warnings: list[str] = [NO_MANIFEST_WARNING] if manifest.conventional else []
        if self.gate is None:
            self.warnings.append(NO_GATE_WARNING)
        for warning in self.warnings:
            logger.warning("%s: %s", repository.name, warning)
        self.explainers = Explainers(repository, {role: loaded.runner for role, loaded in models.items()})
        if settings.preload_explainers:
            for role, loaded in models.items():
                if role != ROUTER:
                    self.explainers.get(loaded.entry)

    @classmethod
    def load(cls, repository: str | Path, settings: PipelineSettings | None = None) -> Pipeline:
        """Load, verify and warm up every model of a repository.

        Raises:
            ModelRepositoryError: anything in the repository is missing or invalid; nothing is served.
        """
        settings = settings or PipelineSettings()
        backend = get_backend(settings.backend)
        repository = Path(repository)
        started = time.perf_counter()
        options = settings.backend_options  # one per load: its Keras architectures are shared by the entries
        device = backend.configure(options)
        configured = time.perf_counter()
        manifest = read_manifest(repository)
        gate = load_repository_gate(repository, dict(manifest.extra))
        read = time.perf_counter()
        models: dict[str, LoadedModel] = {}
        try:
            for role, entry in manifest.entries().items():
                models[role] = _load_one(repository, entry, backend, settings, options)
        except BaseException:
            for loaded in models.values():
                loaded.batcher.close()
            raise
        # Entries built from conventional names were completed from their models while loading.
        manifest = Manifest(router=models[ROUTER].entry,
                            experts={role: loaded.entry for role, loaded in models.items() if role != ROUTER},
                            format_version=manifest.format_version, extra=manifest.extra)
        pipeline = cls(repository, manifest, models, settings, backend, device, time.perf_counter() - started, gate)
        pipeline.load_breakdown = {
            "runtime_import_and_devices": configured - started, "manifest_and_checksums": read - configured,
            "models_load": sum(loaded.seconds["load"] for loaded in models.values()),
            "models_warm_up": sum(loaded.seconds["warm_up"] for loaded in models.values())}
        return pipeline

    def predict_study(self, views: Sequence[ViewInput], body_part: str | None = None,
                      aggregation: str = "mean", deadline: float | None = None, explain: bool = False) -> StudyResult:
        """Decode the views of one study (any format, see `classifiers.decoding`) and run both stages on them.

        `explain`: see predict_images.

        `deadline` (time.monotonic()) is when the study must have room in the pixel budget and be done
        queueing: its start in the router's queue must leave room for the expert's expected queue. A study
        that cannot make it is refused at once, before decoding; one still queued then is withdrawn. Either
        way Overloaded is raised and nothing more is computed.

        Raises:
            StudyTooLarge: the views have more pixels together than `max_study_pixels`.
        """
        chosen_part = self._checked_options(body_part, aggregation, len(views))
        started = time.perf_counter()
        limits = self.settings.image_limits
        # From the headers only (a DICOM's Rows x Columns x Frames): nothing is decoded before the limits pass.
        num_pixels = sum(count_view_pixels(view, limits) for view in views)
        if num_pixels > self.settings.max_study_pixels:
            raise StudyTooLarge(f"the {len(views)} views have {num_pixels:,} pixels together, over the limit of "
                                f"{self.settings.max_study_pixels:,} per study; send fewer or smaller views")
        self.refuse_if_late(deadline, chosen_part)
        with self.pixel_budget.hold(num_pixels, deadline):
            decode_started = time.monotonic()
            decoded = decode_views(views, limits)
            decode_ms = (time.perf_counter() - started) * 1000
            if deadline is not None:  # decoding is the study's own work, not waiting: it does not use up the deadline
                deadline += time.monotonic() - decode_started
            return self._run_decoded(decoded, chosen_part, aggregation, decode_ms, deadline, explain)

    def predict_decoded(self, views: Sequence[DecodedView], body_part: str | None = None, aggregation: str = "mean",
                        deadline: float | None = None, explain: bool = False) -> StudyResult:
        """Run both stages on views decoded by `classifiers.decoding` (score.py, in-process callers)."""
        chosen_part = self._checked_options(body_part, aggregation, len(views))
        return self._run_decoded(views, chosen_part, aggregation, 0.0, deadline, explain)

    def _run_decoded(self, views: Sequence[DecodedView], given_part: str | None, aggregation: str,
                     decode_ms: float, deadline: float | None, explain: bool = False) -> StudyResult:
        """Both stages on decoded views; DICOM metadata goes into the result, a header mismatch into warnings."""
        result = self._run_stages([view.name for view in views], [view.image for view in views], given_part,
                                  aggregation, deadline, explain)
        result.timing_ms = {"decode": decode_ms, **result.timing_ms}
        result.timing_ms["total"] += decode_ms
        attach_dicom_metadata(result, views)
        return result

    def predict_images(self, names: Sequence[str], images: Sequence[Image.Image], body_part: str | None = None,
                       aggregation: str = "mean", deadline: float | None = None, explain: bool = False) -> StudyResult:
        """Run router and expert on already-decoded 8-bit L or RGB images of one study (deadline: see predict_study).

        The deadline applies to the router's queue, less the expert's expected queue: a study that started
        there goes on to its expert.
        With `explain`, each view also gets the expert's heatmap (classifiers.explain); without, none of it runs.
        """
        chosen_part = self._checked_options(body_part, aggregation, len(images))
        if len(names) != len(images):
            raise ValueError(f"{len(names)} names for {len(images)} images")
        return self._run_stages(names, images, chosen_part, aggregation, deadline, explain)

    def _run_stages(self, names: Sequence[str], images: Sequence[Image.Image], given_part: str | None,
                    aggregation: str, deadline: float | None, explain: bool = False) -> StudyResult:
        """Router then expert on checked options: `given_part` is normalised or None, `aggregation` known."""
        started = time.perf_counter()
        resized: dict[tuple[int, int], np.ndarray] = {}
        router = self.models[ROUTER]
        router_scores = router.batcher.submit(_resize_all(images, router.input_size, resized),
                                              self._router_deadline(deadline, given_part))
        router_ms = (time.perf_counter() - started) * 1000
        # (num_views, 7) probabilities, columns in self.body_parts order.
        ood_scores = self._gate_scores(names, images, router_scores)
        mean_scores = router_scores.mean(axis=0)
        routed_part = self.body_parts[int(np.argmax(mean_scores))]
        chosen_part = given_part or routed_part
        expert = self.models[chosen_part]
        expert_started = time.perf_counter()
        expert_outputs = expert.batcher.submit(_resize_all(images, expert.input_size, resized))
        # (num_views,) P(abnormal) from a 1-unit sigmoid or a 2-way softmax [negative, positive].
        view_scores = expert_outputs[:, expert.entry.positive_column].astype(np.float64)
        expert_ms = (time.perf_counter() - expert_started) * 1000
        explanations: list[Explanation | None] = [None] * len(images)
        explain_timing = {}
        if explain:
            explain_started = time.perf_counter()
            explanations = list(self.explain_views(chosen_part, images, resized[expert.input_size]))
            explain_timing["explain"] = (time.perf_counter() - explain_started) * 1000
        threshold = expert.entry.decision_threshold
        abnormality = AGGREGATIONS[aggregation](view_scores)
        views = [
            self._view_result(name, scores, score, explanation, ood)
            for name, scores, score, explanation, ood in zip(names, router_scores, view_scores, explanations,
                                                             ood_scores, strict=True)
        ]
        return StudyResult(
            body_part=chosen_part,
            body_part_confidence=float(mean_scores[self.body_parts.index(chosen_part)]),
            abnormality=abnormality,
            label="abnormal" if abnormality >= threshold else "normal",
            threshold=threshold,
            threshold_source=expert.entry.threshold_source,
            aggregation=aggregation,
            n_images=len(images),
            warnings=self._warnings(views, mean_scores, routed_part, given_part),
            images=views,
            models={"router": router.version, "expert": expert.version},
            timing_ms={"router": router_ms, "expert": expert_ms, **explain_timing,
                       "total": (time.perf_counter() - started) * 1000},
        )

    def explain_views(self, role: str, images: Sequence[Image.Image], resized: np.ndarray) -> list[Explanation]:
        """Heatmap of expert `role` on each view: the decoded views and them at its input size, (N, H, W, 3) uint8."""
        explainer = self.explainers.get(self.models[role].entry)
        maps = explainer.maps(resized)
        return [explain_view(image, [layer_maps[index] for layer_maps in maps], explainer.method)
                for index, image in enumerate(images)]

    def describe(self) -> dict[str, Any]:
        """What is loaded: repository, backend, device, library versions, manifest and per-model settings."""
        return {
            "repository": str(self.repository),
            "backend": self.backend.name,
            "device": self.device,
            "load_seconds": round(self.load_seconds, 3),
            "load_breakdown_seconds": {cause: round(seconds, 3) for cause, seconds in self.load_breakdown.items()},
            "versions": {"python": platform.python_version(), **self.backend.versions()},
            "body_parts": list(self.body_parts),
            "warnings": list(self.warnings),
            "models": {
                role: {"version": loaded.version, "input_size": list(loaded.input_size),
                       "preprocessing": loaded.entry.preprocessing, "classes": list(loaded.entry.classes),
                       "threshold": loaded.entry.threshold, "library": loaded.runner.library,
                       "backend": loaded.runner.backend}
                for role, loaded in self.models.items()
            },
            "manifest": self.manifest.to_json(),
        }

    def refuse_if_late(self, deadline: float | None, body_part: str | None = None) -> None:
        """Raise Overloaded now if a study's queueing could not end by `deadline` (before anything is decoded)."""
        self.models[ROUTER].batcher.refuse_if_late(self._router_deadline(deadline, body_part))

    def _router_deadline(self, deadline: float | None, body_part: str | None) -> float | None:
        """The deadline less the expert's expected queue (the busiest expert's while the part is unknown).

        The queue deadline bounds a study's waiting in both stages, so an accepted study is answered within
        the deadline plus its own two model calls.
        """
        if deadline is None:
            return None
        experts = [body_part] if body_part else [role for role in self.models if role != ROUTER]
        return deadline - max(self.models[role].batcher.expected_wait_s for role in experts)

    def queue_depths(self) -> dict[str, int]:
        """Views queued or running per model."""
        return {role: loaded.batcher.queued_views for role, loaded in self.models.items()}

    def close(self) -> None:
        """Stop the batcher threads."""
        for loaded in self.models.values():
            loaded.batcher.close()

    @staticmethod
    def _checked_options(body_part: str | None, aggregation: str, num_views: int) -> str | None:
        """Reject unknown options and empty studies before any work; return the normalised body part."""
        if aggregation not in AGGREGATIONS:
            raise InvalidOption(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        if num_views < 1:
            raise InvalidOption("a study needs at least one image")
        return normalize_body_part(body_part) if body_part else None

    def _gate_scores(self, names: Sequence[str], images: Sequence[Image.Image],
                     router_scores: np.ndarray) -> list[float | None]:
        """Each view's out-of-domain score (None without a gate); refuses a flagged view when set to."""
        if self.gate is None:
            return [None] * len(images)
        scores = flag_views(self.gate, images, router_scores)
        if self.settings.reject_out_of_distribution:
            for name, score in zip(names, scores, strict=True):
                if score > self.gate.threshold:
                    raise NotARadiograph(name, f"does not look like a radiograph these models know (out-of-domain"
                                               f" score {score:.0f}, limit {self.gate.threshold:.0f}); send a"
                                               " radiograph of the upper limb")
        return [float(score) for score in scores]

    def _view_result(self, name: str, router_scores: np.ndarray, abnormality: float,
                     explanation: Explanation | None = None, ood_score: float | None = None) -> ViewResult:
        """Per-view body part, its confidence and all router scores, and the gate's verdict."""
        best = int(np.argmax(router_scores))
        return ViewResult(
            name=name,
            body_part=self.body_parts[best],
            body_part_confidence=float(router_scores[best]),
            body_part_scores={part: float(score) for part, score in zip(self.body_parts, router_scores, strict=True)},
            abnormality=float(abnormality),
            explanation=explanation,
            ood_score=ood_score,
            out_of_distribution=None if ood_score is None else bool(ood_score > self.gate.threshold),
        )

    def _warnings(self, views: list[ViewResult], mean_scores: np.ndarray, routed_part: str,
                  given_part: str | None) -> list[str]:
        """Warnings a reader should see: views that disagree, low confidence, a router that disagrees."""
        warnings = []
        flagged = [view.name for view in views if view.out_of_distribution]
        if flagged:
            warnings.append(f"views unlike the radiographs these models know (out of distribution): "
                            f"{', '.join(flagged)}; their scores may mean nothing")
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


def _load_one(repository: Path, entry: ModelEntry, backend: Backend, settings: PipelineSettings,
              options: BackendOptions) -> LoadedModel:
    """Load one entry with the backend, warm it up and start its batcher; time both."""
    started = time.perf_counter()
    runner, entry = backend.load(repository, entry, options)
    runner.backend = runner.backend or backend.name
    loaded = time.perf_counter()
    if settings.warmup:
        # XLA compiles per batch shape: compile every padded size the batcher can form, not just 1.
        sizes = {padded_batch_size(size) for size in range(1, settings.max_batch_size + 1)}
        runner.warm_up(tuple(sorted(sizes)) if runner.jit_compile else (1,))
    batcher = DynamicBatcher(entry.role, runner.predict, settings.max_batch_size, settings.max_wait_ms,
                             settings.max_queue_views, settings.on_batch)
    return LoadedModel(entry, runner, batcher, {"load": loaded - started, "warm_up": time.perf_counter() - loaded})


def _resize_all(images: Sequence[Image.Image], size: tuple[int, int],
                cache: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
    """Resize every view to `size` once per study: (num_views, H, W, 3) uint8."""
    if size not in cache:
        cache[size] = np.stack([resize_image(image, size) for image in images])
    return cache[size]
