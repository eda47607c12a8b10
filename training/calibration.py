"""Calibration of an expert's study scores on labelled studies: temperature or Platt scaling, fitted by grid search.

The service averages a study's raw view scores and then calibrates the study score
(classifiers/pipeline.py), so the fit maximises the likelihood of the study labels under
sigmoid(logit(raw study score) / T + b): a monotone map, which leaves the study ranking (AUROC) as it
was. A coarse-to-fine grid over log T (and b for Platt) needs no optimiser library, is deterministic,
and costs milliseconds for thousands of studies.
"""

from __future__ import annotations

import numpy as np

from classifiers.repository.entries import CALIBRATION_METHODS, Calibration

LOG_TEMPERATURE_RANGE = (-4.0, 4.0)  # T from 0.018 to 55
BIAS_RANGE = (-20.0, 20.0)
GRID_POINTS = 41
REFINEMENTS = 7
EPSILON = 1e-7


def negative_log_likelihood(scores: np.ndarray, labels: np.ndarray) -> float:
    """Return the mean binary cross-entropy of scores (S,) in [0, 1] against labels (S,) 0/1."""
    return float(_cross_entropy(np.asarray(scores, dtype=np.float64), labels))


def _cross_entropy(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean binary cross-entropy over the last axis of scores (..., S) against labels (S,)."""
    clipped = np.clip(scores, EPSILON, 1 - EPSILON)
    return -np.mean(labels * np.log(clipped) + (1 - labels) * np.log1p(-clipped), axis=-1)


def fit_calibration(raw_scores: np.ndarray, labels: np.ndarray, method: str = "temperature") -> Calibration:
    """Fit T (and b for "platt") minimising the NLL of raw study scores (S,) against labels (S,).

    Raises:
        ValueError: an unknown method, or labels holding one class only (nothing to calibrate against).
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    labels = np.asarray(labels, dtype=np.float64)
    if labels.size == 0 or labels.min() == labels.max():
        raise ValueError("calibration needs normal and abnormal studies; these studies hold one class only")
    raw = np.clip(np.asarray(raw_scores, dtype=np.float64), EPSILON, 1 - EPSILON)
    logits = np.log(raw) - np.log1p(-raw)
    log_t_range, bias_range = LOG_TEMPERATURE_RANGE, (BIAS_RANGE if method == "platt" else (0.0, 0.0))
    best = (0.0, 0.0)
    for _ in range(REFINEMENTS):
        log_ts = np.linspace(*log_t_range, GRID_POINTS)
        biases = np.linspace(*bias_range, GRID_POINTS) if method == "platt" else np.zeros(1)
        # (T, B, S) calibrated scores of every grid point at once.
        scaled = logits[None, None, :] / np.exp(log_ts)[:, None, None] + biases[None, :, None]
        losses = _cross_entropy(1.0 / (1.0 + np.exp(-scaled)), labels)
        row, column = np.unravel_index(int(np.argmin(losses)), losses.shape)
        best = (float(log_ts[row]), float(biases[column]))
        log_step = (log_t_range[1] - log_t_range[0]) / (GRID_POINTS - 1)
        bias_step = (bias_range[1] - bias_range[0]) / (GRID_POINTS - 1)
        log_t_range = (best[0] - 2 * log_step, best[0] + 2 * log_step)
        bias_range = (best[1] - 2 * bias_step, best[1] + 2 * bias_step)
    return Calibration(method=method, temperature=round(float(np.exp(best[0])), 6), bias=round(best[1], 6))
