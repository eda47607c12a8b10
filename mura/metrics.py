"""Binary and multi-class metrics in plain NumPy, as the MURA paper reports them.

Labels are 1 (abnormal, positive) and 0 (normal, negative). Where a metric is undefined on the data
it is given, it returns NaN instead of raising, so a per-body-part report can show "n/a" for a part
that happens to hold one class only:

- `roc_auc`: NaN when `y_true` holds only one class (scikit-learn raises there);
- `cohen_kappa`: NaN when chance agreement is 1, i.e. both raters used one and the same class for
  every item (scikit-learn returns NaN with a warning);
- `sensitivity`: NaN without positives; `specificity`: NaN without negatives (scikit-learn's
  `recall_score` returns 0.0 with a warning);
- `expected_calibration_error`: equal-width bins (10 by default), weighted by count;
- every metric: NaN on empty input.

Ties in `roc_auc` scores count one half, as in the Mann-Whitney statistic and scikit-learn.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _binary_pair(y_true: ArrayLike, y_other: ArrayLike, other_name: str) -> tuple[np.ndarray, ...]:
    """Return both arrays as 1-D after checking equal length and 0/1 true labels."""
    true_array = np.asarray(y_true).ravel()
    other_array = np.asarray(y_other).ravel()
    if true_array.shape != other_array.shape:
        raise ValueError(
            f"y_true has {true_array.size} values but {other_name} has {other_array.size}; "
            "pass one value per study in both"
        )
    if true_array.size and not np.isin(true_array, (0, 1)).all():
        raise ValueError(f"y_true must hold only 0 and 1, got {np.unique(true_array)[:10]}")
    return true_array.astype(np.int64), other_array


def _binary_labels(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    true_array, pred_array = _binary_pair(y_true, y_pred, "y_pred")
    if pred_array.size and not np.isin(pred_array, (0, 1)).all():
        raise ValueError(f"y_pred must hold only 0 and 1, got {np.unique(pred_array)[:10]}")
    return true_array, pred_array.astype(np.int64)


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Return the area under the ROC curve (ties count 1/2); NaN if only one class is present."""
    true_array, score_array = _binary_pair(y_true, y_score, "y_score")
    score_array = score_array.astype(np.float64)
    num_positive = int(true_array.sum())
    num_negative = true_array.size - num_positive
    if num_positive == 0 or num_negative == 0:
        return float("nan")
    ranks = _average_ranks(score_array)
    rank_sum_positive = ranks[true_array == 1].sum()
    u_statistic = rank_sum_positive - num_positive * (num_positive + 1) / 2.0
    return float(u_statistic / (num_positive * num_negative))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Return 1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and its length.
    run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_lengths = np.diff(np.r_[run_starts, values.size])
    run_mean_ranks = run_starts + (run_lengths + 1) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_mean_ranks, run_lengths)
    return ranks


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """Return the (num_classes, num_classes) int64 count matrix: rows true class, columns predicted."""
    true_array = np.asarray(y_true).ravel()
    pred_array = np.asarray(y_pred).ravel()
    if true_array.shape != pred_array.shape:
        raise ValueError(
            f"y_true has {true_array.size} values but y_pred has {pred_array.size}; "
            "pass one value per item in both"
        )
    for name, array in (("y_true", true_array), ("y_pred", pred_array)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(
                f"{name} holds class indices outside 0..{num_classes - 1}: {np.unique(array)[:10]}"
            )
    flat_index = true_array.astype(np.int64) * num_classes + pred_array.astype(np.int64)
    counts = np.bincount(flat_index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def cohen_kappa(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Return Cohen's kappa of two binary raters; NaN when chance agreement is 1 or input is empty."""
    true_array, pred_array = _binary_labels(y_true, y_pred)
    if true_array.size == 0:
        return float("nan")
    counts = confusion_matrix(true_array, pred_array, 2).astype(np.float64)
    total = counts.sum()
    observed_agreement = np.trace(counts) / total
    expected_agreement = float((counts.sum(axis=1) * counts.sum(axis=0)).sum() / total**2)
    if np.isclose(expected_agreement, 1.0):
        return float("nan")
    return float((observed_agreement - expected_agreement) / (1.0 - expected_agreement))


def sensitivity(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Return true positives / positives (recall of abnormal); NaN without positives."""
    true_array, pred_array = _binary_labels(y_true, y_pred)
    positives = true_array == 1
    if not positives.any():
        return float("nan")
    return float((pred_array[positives] == 1).mean())


def specificity(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Return true negatives / negatives (recall of normal); NaN without negatives."""
    true_array, pred_array = _binary_labels(y_true, y_pred)
    negatives = true_array == 0
    if not negatives.any():
        return float("nan")
    return float((pred_array[negatives] == 0).mean())


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Return the fraction of predictions equal to the truth; NaN on empty input."""
    true_array = np.asarray(y_true).ravel()
    pred_array = np.asarray(y_pred).ravel()
    if true_array.shape != pred_array.shape:
        raise ValueError(
            f"y_true has {true_array.size} values but y_pred has {pred_array.size}; "
            "pass one value per item in both"
        )
    if true_array.size == 0:
        return float("nan")
    return float((true_array == pred_array).mean())


DEFAULT_CALIBRATION_BINS = 10


def reliability_bins(
    y_true: ArrayLike, y_score: ArrayLike, num_bins: int = DEFAULT_CALIBRATION_BINS
) -> list[dict[str, float | int]]:
    """Return the reliability diagram: {"low", "high", "count", "mean_score", "fraction_positive"} per non-empty bin.

    The bins split [0, 1] into `num_bins` equal widths; the last includes 1.0.
    """
    true_array, score_array = _binary_pair(y_true, y_score, "y_score")
    score_array = score_array.astype(np.float64)
    if score_array.size and (not np.isfinite(score_array).all() or score_array.min() < 0 or score_array.max() > 1):
        raise ValueError("y_score must hold probabilities in [0, 1]")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.digitize(score_array, edges[1:-1], right=False), 0, num_bins - 1)
    bins = []
    for number in range(num_bins):
        members = index == number
        if members.any():
            bins.append({"low": float(edges[number]), "high": float(edges[number + 1]), "count": int(members.sum()),
                         "mean_score": float(score_array[members].mean()),
                         "fraction_positive": float(true_array[members].mean())})
    return bins


def expected_calibration_error(
    y_true: ArrayLike, y_score: ArrayLike, num_bins: int = DEFAULT_CALIBRATION_BINS
) -> float:
    """Return the count-weighted mean |fraction positive - mean score| over equal-width bins; NaN if empty."""
    bins = reliability_bins(y_true, y_score, num_bins)
    total = sum(item["count"] for item in bins)
    if total == 0:
        return float("nan")
    return float(sum(item["count"] * abs(item["fraction_positive"] - item["mean_score"]) for item in bins) / total)
