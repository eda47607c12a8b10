"""Load every model of a repository with a backend, warm it up and put a batcher in front of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from classifiers.backends.base import BackendOptions, ImageModel, padded_batch_size
from classifiers.backends.registry import Backend
from classifiers.batching import DynamicBatcher
from classifiers.repository.entries import Manifest, ModelEntry
from classifiers.settings import PipelineSettings


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


def load_models(repository: Path, manifest: Manifest, backend: Backend, settings: PipelineSettings,
                options: BackendOptions) -> dict[str, LoadedModel]:
    """Load every entry in role order; on any failure the batchers already started are closed."""
    models: dict[str, LoadedModel] = {}
    try:
        for role, entry in manifest.entries().items():
            models[role] = load_model(repository, entry, backend, settings, options)
    except BaseException:
        for loaded in models.values():
            loaded.batcher.close()
        raise
    return models


def load_model(repository: Path, entry: ModelEntry, backend: Backend, settings: PipelineSettings,
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
