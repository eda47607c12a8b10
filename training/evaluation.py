"""Study-level evaluation of a trained model: scores, metrics, the decision threshold, curves."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import numpy as np

from mura.metrics import accuracy, cohen_kappa, roc_auc, sensitivity, specificity
from training.data import TaskExamples, make_dataset


def predict_study_scores(
    model: keras.Model,
    examples: TaskExamples,
    input_size: tuple[int, int],
    preprocessing: str,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (study labels (S,), study scores (S, C)): the mean of each study's view outputs.

    The mean over views is the service's default aggregation; studies come in first-seen order.
    """
    dataset = make_dataset(examples, input_size, preprocessing, batch_size, training=False)
    view_scores = np.asarray(model.predict(dataset, verbose=0), dtype=np.float64)
    order: dict[str, int] = {}
    for study_id in examples.study_ids:
        order.setdefault(study_id, len(order))
    study_index = np.asarray([order[study_id] for study_id in examples.study_ids])
    sums = np.zeros((len(order), view_scores.shape[1]))
    np.add.at(sums, study_index, view_scores)
    counts = np.bincount(study_index, minlength=len(order)).reshape(-1, 1)
    labels = np.zeros(len(order), dtype=np.int32)
    labels[study_index] = examples.labels
    return labels, sums / counts


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Return the threshold maximising Youden's J = sensitivity + specificity - 1 on a ROC.

    Candidates are the midpoints between consecutive distinct scores, so the threshold does not sit
    on a validation score; ties in J go to the threshold closest to 0.5.
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    distinct = np.unique(scores)
    if distinct.size < 2 or labels.min() == labels.max():
        return 0.5
    candidates = (distinct[:-1] + distinct[1:]) / 2.0
    positives = scores[labels == 1]
    negatives = scores[labels == 0]
    true_positive_rate = (positives[None, :] >= candidates[:, None]).mean(axis=1)
    false_positive_rate = (negatives[None, :] >= candidates[:, None]).mean(axis=1)
    youden = true_positive_rate - false_positive_rate
    best = np.flatnonzero(np.isclose(youden, youden.max()))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def expert_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Return AUROC, Cohen's kappa, accuracy, sensitivity and specificity of study scores (S,) or (S, 1)."""
    scores = np.asarray(scores).reshape(-1)
    predicted = (scores >= threshold).astype(np.int32)
    return {
        "auroc": rounded_metric(roc_auc(labels, scores)),
        "kappa": rounded_metric(cohen_kappa(labels, predicted)),
        "accuracy": rounded_metric(accuracy(labels, predicted)),
        "sensitivity": rounded_metric(sensitivity(labels, predicted)),
        "specificity": rounded_metric(specificity(labels, predicted)),
        "num_studies": int(labels.size),
    }


def rounded_metric(value: float) -> float | None:
    """Round a metric to 4 places; None where it is undefined (NaN is not valid JSON)."""
    return None if not np.isfinite(value) else round(float(value), 4)


def router_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Return the study-level routing accuracy of router scores (S, 7)."""
    predicted = np.argmax(scores, axis=1)
    return {"accuracy": rounded_metric(accuracy(labels, predicted)), "num_studies": int(labels.size)}


def plot_training_curves(csv_log: Path, out_folder: Path, role: str) -> list[Path]:
    """Draw <role>_loss.png and <role>_accuracy.png (train vs validation per epoch) from a CSV log."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    with open(csv_log, newline="") as handle:
        rows = list(csv.DictReader(handle))
    written = []
    for metric in ("loss", "accuracy"):
        if not rows or metric not in rows[0]:
            continue
        figure, axes = pyplot.subplots(figsize=(6, 4))
        epochs = [int(row["epoch"]) + 1 for row in rows]
        axes.plot(epochs, [float(row[metric]) for row in rows], label="train")
        if f"val_{metric}" in rows[0]:
            axes.plot(epochs, [float(row[f"val_{metric}"]) for row in rows], label="validation")
        axes.set(xlabel="epoch", ylabel=metric, title=f"{role} {metric}")
        axes.legend()
        path = out_folder / f"{role}_{metric}.png"
        figure.savefig(path, dpi=80, bbox_inches="tight")
        pyplot.close(figure)
        written.append(path)
    return written
