"""The two-stage pipeline: admission, decoding, the router on all views, then the chosen part's expert.

Every door (HTTP, score.py local and on Ray, the PACS worker, in-process callers) builds a
`StudyRequest` and calls `Pipeline.run`; this module orchestrates, `admission` bounds, `study_policy`
says what the numbers mean.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from classifiers.admission import Admission, AdmittedStudy, PixelBudget
from classifiers.backends.registry import Backend, get_backend
from classifiers.body_parts import ROUTER
from classifiers.decoding import attach_dicom_metadata, check_single_study, decode_probed
from classifiers.decoding.imaging import resize_image
from classifiers.drift import DriftReference, read_drift_reference
from classifiers.errors import ImageError, NoReadableView, NotARadiograph
from classifiers.explain.explainers import Explainers
from classifiers.explain.overlay import explain_view
from classifiers.gate import NO_GATE_WARNING, Gate, flag_views, load_repository_gate
from classifiers.model_loading import LoadedModel, load_models
from classifiers.repository.entries import Manifest, ModelEntry
from classifiers.repository.manifest import NO_MANIFEST_WARNING, read_manifest, triage_warnings
from classifiers.results import DecodedView, Explanation, StudyResult, UnreadableView, ViewInput
from classifiers.settings import PipelineSettings
from classifiers.study_policy import aggregate, label_of, study_warnings, unreadable_warnings, view_result
from classifiers.study_request import StudyRequest, build_study_request

logger = logging.getLogger(__name__)

__all__ = ["Pipeline", "PipelineSettings", "StudyRequest"]


class Pipeline:
    """Router + seven experts, loaded once, safe to call from many threads at once."""

    def __init__(self, repository: Path, manifest: Manifest, models: dict[str, LoadedModel],
                 settings: PipelineSettings, backend: Backend, device: str, load_seconds: float,
                 gate: Gate | None = None, drift_reference: DriftReference | None = None) -> None:
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
        self.admission = Admission(settings.admission_limits, self.pixel_budget, self.refuse_if_late)
        self.gate = gate
        self.drift_reference = drift_reference  # validation studies' figures the service's drift monitor compares with
        self.warnings: list[str] = [NO_MANIFEST_WARNING] if manifest.conventional else []
        if self.gate is None:
            self.warnings.append(NO_GATE_WARNING)
        self.warnings += triage_warnings(manifest)
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
        drift_reference = read_drift_reference(manifest.extra)
        read = time.perf_counter()
        models = load_models(repository, manifest, backend, settings, options)
        # Entries built from conventional names were completed from their models while loading.
        manifest = Manifest(router=models[ROUTER].entry,
                            experts={role: loaded.entry for role, loaded in models.items() if role != ROUTER},
                            format_version=manifest.format_version, extra=manifest.extra)
        pipeline = cls(repository, manifest, models, settings, backend, device, time.perf_counter() - started, gate,
                       drift_reference)
        pipeline.load_breakdown = {
            "runtime_import_and_devices": configured - started, "manifest_and_checksums": read - configured,
            "models_load": sum(loaded.seconds["load"] for loaded in models.values()),
            "models_warm_up": sum(loaded.seconds["warm_up"] for loaded in models.values())}
        return pipeline

    def run(self, request: StudyRequest) -> StudyResult:
        """Admit, decode and score one study: the one path of every door.

        The deadline bounds the study's waiting (the pixel budget, then both models' queues; the router's
        start must leave room for the expert's expected queue); decoding is the study's own work and does
        not use it up. A study that cannot make it raises Overloaded and nothing more is computed.

        Raises:
            ClassifierError: the typed refusal (see `Admission.admit`; MixedStudies, NotARadiograph).
        """
        started = time.perf_counter()
        with self.admission.admit(request) as admitted:
            decode_started = time.monotonic()
            views, unreadable = self._decode(admitted, request.skip_unreadable)
            decode_ms = (time.perf_counter() - started) * 1000
            deadline = None if request.deadline is None else request.deadline + time.monotonic() - decode_started
            result = self._run_stages([view.name for view in views], [view.image for view in views],
                                      request.body_part, request.aggregation, deadline, request.explain)
        result.timing_ms = {"decode": decode_ms, **result.timing_ms, "total": (time.perf_counter() - started) * 1000}
        attach_dicom_metadata(result, views)
        result.unreadable = unreadable
        result.warnings += unreadable_warnings([(view.error, view.message) for view in unreadable])
        if self.settings.on_study is not None:
            self.settings.on_study(result)
        return result

    def predict_study(self, views: Sequence[ViewInput], body_part: str | None = None, aggregation: str = "mean",
                      deadline: float | None = None, explain: bool = False) -> StudyResult:
        """`run` on a request built and validated from these arguments (in-process callers: tests, tools)."""
        return self.run(build_study_request(views, body_part, aggregation, explain, deadline))

    def _decode(self, admitted: AdmittedStudy, skip_unreadable: bool) -> tuple[list[DecodedView], list[UnreadableView]]:
        """Decode every admitted view (a view per frame); a view that fails refuses the study or is left out."""
        views: list[DecodedView] = []
        unreadable = list(admitted.unreadable)
        for probed in admitted.views:
            try:
                views.extend(decode_probed(probed))
            except ImageError as error:
                if not skip_unreadable:
                    raise
                unreadable.append(UnreadableView(probed.name, type(error).__name__, str(error)))
        if not views:
            raise NoReadableView(f"none of the study's {len(unreadable)} views can be read", unreadable)
        check_single_study(views)
        return views, unreadable

    def _run_stages(self, names: Sequence[str], images: Sequence[Image.Image], given_part: str | None,
                    aggregation: str, deadline: float | None, explain: bool) -> StudyResult:
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
        raw_view_scores = expert_outputs[:, expert.entry.positive_column]
        # Calibrated here, after the model, whichever backend ran it: each view for its own figure, and the study
        # after aggregating the raw views (a monotone map of the study score: the ranking, AUROC, is unchanged).
        view_scores = expert.entry.calibrated(raw_view_scores)
        expert_ms = (time.perf_counter() - expert_started) * 1000
        explanations: list[Explanation | None] = [None] * len(images)
        explain_timing = {}
        if explain:
            explain_started = time.perf_counter()
            explanations = list(self.explain_views(chosen_part, images, resized[expert.input_size]))
            explain_timing["explain"] = (time.perf_counter() - explain_started) * 1000
        threshold = expert.entry.decision_threshold
        abnormality = float(expert.entry.calibrated(np.float64(aggregate(raw_view_scores, aggregation))))
        ood_threshold = None if self.gate is None else self.gate.threshold
        views = [view_result(name, self.body_parts, scores, score, explanation, ood, ood_threshold)
                 for name, scores, score, explanation, ood in zip(names, router_scores, view_scores, explanations,
                                                                  ood_scores, strict=True)]
        points = expert.entry.operating_points
        return StudyResult(
            triage=expert.entry.triage_category(abnormality),
            operating_points=None if points is None else {"rule_out": points.rule_out, "rule_in": points.rule_in},
            calibrated=expert.entry.calibration is not None,
            body_part=chosen_part,
            body_part_confidence=float(mean_scores[self.body_parts.index(chosen_part)]),
            abnormality=abnormality,
            label=label_of(abnormality, threshold),
            threshold=threshold,
            threshold_source=expert.entry.threshold_source,
            aggregation=aggregation,
            n_images=len(images),
            warnings=study_warnings(views, self.body_parts, mean_scores, routed_part, given_part,
                                    self.settings.confidence_floor, self.settings.disagreement_floor),
            images=views,
            models={"router": router.version, "expert": expert.version},
            timing_ms={"router": router_ms, "expert": expert_ms, **explain_timing},
        )

    def explain_views(self, role: str, images: Sequence[Image.Image], resized: np.ndarray) -> list[Explanation]:
        """Heatmap of expert `role` on each view: the decoded views and them at its input size, (N, H, W, 3) uint8."""
        explainer = self.explainers.get(self.models[role].entry)
        maps = explainer.maps(resized)
        return [explain_view(image, [layer_maps[index] for layer_maps in maps], explainer.method,
                             model=explainer.model_version) for index, image in enumerate(images)]

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
                       "backend": loaded.runner.backend, **_triage_settings(loaded.entry)}
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


def _resize_all(images: Sequence[Image.Image], size: tuple[int, int],
                cache: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
    """Resize every view to `size` once per study: (num_views, H, W, 3) uint8."""
    if size not in cache:
        cache[size] = np.stack([resize_image(image, size) for image in images])
    return cache[size]


def _triage_settings(entry: ModelEntry) -> dict[str, Any]:
    """An expert's operating points and calibration as /models shows them (None where the manifest has none)."""
    if entry.is_router:
        return {}
    points, calibration = entry.operating_points, entry.calibration
    return {
        "operating_points": None if points is None else {"rule_out": points.rule_out, "rule_in": points.rule_in},
        "calibration": None if calibration is None else {
            "method": calibration.method, "temperature": calibration.temperature, "bias": calibration.bias,
            **{key: calibration.details[key] for key in ("ece_before", "ece_after") if key in calibration.details}},
    }
