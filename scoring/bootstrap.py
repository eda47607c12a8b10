"""Percentile bootstrap confidence intervals over studies, seeded so reports are reproducible."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

DEFAULT_REPLICATES = 1000
DEFAULT_SEED = 0


def bootstrap_interval(
    metric: Callable[..., float],
    arrays: tuple[np.ndarray, ...],
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> dict[str, float | int]:
    """Return {"value", "low", "high", "replicates"} for `metric(*arrays)` resampled over rows.

    Studies are drawn with replacement `replicates` times; the interval is the central `confidence`
    part of the replicate values. Replicates where the metric is undefined (NaN, e.g. AUROC of a
    resample holding one class) are left out, and "replicates" counts those used. With no defined
    replicate, or a NaN point estimate, low and high are NaN.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    num_rows = len(arrays[0])
    value = metric(*arrays) if num_rows else float("nan")
    if num_rows == 0 or math.isnan(value):
        return {"value": value, "low": float("nan"), "high": float("nan"), "replicates": 0}
    generator = np.random.default_rng(seed)
    # (replicates, num_rows) row indices, one resample per line.
    indices = generator.integers(0, num_rows, size=(replicates, num_rows))
    values = np.array([metric(*(array[rows] for array in arrays)) for rows in indices])
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"value": value, "low": float("nan"), "high": float("nan"), "replicates": 0}
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return {"value": float(value), "low": float(low), "high": float(high), "replicates": int(values.size)}
