"""Settings of a pipeline: batching, limits, warnings, speed and backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from classifiers.admission import AdmissionLimits
from classifiers.backends.base import BackendOptions
from classifiers.backends.registry import DEFAULT_BACKEND
from classifiers.decoding.imaging import ImageLimits

if TYPE_CHECKING:
    from classifiers.results import StudyResult


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
    # Admission (classifiers.admission), the same at every door: views per study (frames count), pixels per
    # study, decoded pixels in flight in this process.
    max_views: int = 12
    max_study_pixels: int = 120_000_000
    pixel_budget: int = 160_000_000
    warmup: bool = True
    on_batch: Callable[[str, int, float], None] | None = None  # (model, views, seconds) per model call
    # Called with every answered study (the service's drift monitor): every door's studies pass through it.
    on_study: Callable[[StudyResult], None] | None = None
    # Speed settings (docs/PERFORMANCE.md): XLA compilation, and TensorFlow's CPU thread pools (0: default).
    jit_compile: bool = False
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    # A name in classifiers.backends.registry.BACKEND_CHOICES ("auto": the fastest file each entry has).
    backend: str = DEFAULT_BACKEND
    # Heatmaps (explain=true) are made on first request per expert; True makes them all at start instead.
    preload_explainers: bool = False

    @property
    def backend_options(self) -> BackendOptions:
        """The speed settings the backend reads."""
        return BackendOptions(self.intra_op_threads, self.inter_op_threads, self.jit_compile)

    @property
    def admission_limits(self) -> AdmissionLimits:
        """The limits admission applies to every study."""
        return AdmissionLimits(self.max_views, self.max_study_pixels, self.image_limits)
