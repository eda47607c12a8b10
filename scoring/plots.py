"""PNG plots of the report: ROC curves per study type, the reliability diagram per expert and the routing confusion
matrix (no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mura import metrics


def roc_curve_points(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (false positive rates, true positive rates) from (0, 0) to (1, 1), one point per threshold."""
    order = np.argsort(-y_score, kind="mergesort")
    sorted_scores, sorted_truth = y_score[order], y_true[order]
    # Last index of each run of equal scores: tied studies cross the threshold together.
    run_ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    true_positives = np.cumsum(sorted_truth)[run_ends]
    false_positives = (run_ends + 1) - true_positives
    num_positive, num_negative = max(int(y_true.sum()), 1), max(int((1 - y_true).sum()), 1)
    return (np.r_[0.0, false_positives / num_negative], np.r_[0.0, true_positives / num_positive])


def plot_roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Draw one ROC curve per group (the `overall` one thicker) with AUROC in the legend."""
    figure = Figure(figsize=(6, 6), dpi=100)
    axes = figure.add_subplot()
    for group, (y_true, y_score) in curves.items():
        if y_true.min() == y_true.max():
            continue  # one class only: no curve
        false_rate, true_rate = roc_curve_points(y_true, y_score)
        title = group.removeprefix("XR_").capitalize()
        auroc = metrics.roc_auc(y_true, y_score)
        axes.plot(false_rate, true_rate, linewidth=2.5 if group == "overall" else 1.2,
                  label=f"{title} (AUROC {auroc:.3f}, n={y_true.size})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axes.set(xlabel="False positive rate (1 - specificity)", ylabel="True positive rate (sensitivity)",
             title="ROC curves by study type", xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right", fontsize="small")
    figure.savefig(path, bbox_inches="tight")


def plot_reliability(calibration: dict[str, dict[str, Any]], path: Path) -> None:
    """Draw the reliability diagram from the report's calibration section: per expert group, fraction abnormal
    against mean score in each non-empty bin, its ECE and study count in the legend."""
    figure = Figure(figsize=(6, 6), dpi=100)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfectly calibrated")
    for group, figures in calibration.items():
        bins = figures["bins"]
        if not bins:
            continue
        title = group.removeprefix("XR_").capitalize()
        axes.plot([item["mean_score"] for item in bins], [item["fraction_positive"] for item in bins], marker="o",
                  linewidth=2.5 if group == "overall" else 1.2, markersize=4,
                  label=f"{title} (ECE {figures['ece']['value']:.3f}, n={figures['n_studies']})")
    axes.set(xlabel="Mean abnormality score in the bin", ylabel="Fraction of abnormal studies in the bin",
             title="Reliability diagram by expert", xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="upper left", fontsize="small")
    figure.savefig(path, bbox_inches="tight")


def plot_routing_confusion(routing: dict[str, Any], path: Path) -> None:
    """Draw the routing confusion matrix with counts in the cells."""
    matrix = np.asarray(routing["confusion_matrix"])
    titles = [part.removeprefix("XR_").capitalize() for part in routing["classes"]]
    figure = Figure(figsize=(7, 6), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(titles)), titles, rotation=45, ha="right")
    axes.set_yticks(range(len(titles)), titles)
    axes.set(xlabel="routed body part", ylabel="true body part", title="Routing confusion matrix")
    for row_index, column_index in np.ndindex(matrix.shape):
        count = matrix[row_index, column_index]
        axes.text(column_index, row_index, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black", fontsize="small")
    figure.savefig(path, bbox_inches="tight")
