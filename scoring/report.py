"""The evaluation report of a scored, labelled set: MURA-paper metrics with bootstrap intervals.

Built from the predictions CSV (all of it, including rows from earlier resumed runs). Studies are
grouped by their true body part (the paper's "study type"), or by the routed body part where the
truth is unknown. Unscored studies (no readable image) are counted but left out of the metrics. Calibration
and triage figures are per expert (the routed body part), with the manifest's figures when it is given
(scoring.report_triage).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classifiers.body_parts import BODY_PARTS
from mura import metrics
from scoring.bootstrap import DEFAULT_REPLICATES, DEFAULT_SEED, bootstrap_interval
from scoring.report_markdown import render_markdown
from scoring.report_triage import calibration_metrics, triage_metrics

if TYPE_CHECKING:
    from classifiers.repository.entries import Manifest

OVERALL = "overall"
# Figures from the MURA paper (Rajpurkar et al., 2017, arXiv:1712.06957), its test set of 207
# studies with a radiologist majority vote as gold standard. Per-part figures are not reproduced here.
PAPER_FIGURES = {
    "model_kappa": {"value": 0.705, "low": 0.700, "high": 0.710},
    "model_auroc": 0.929,
    "model_sensitivity": 0.815,
    "model_specificity": 0.887,
    "best_radiologist_kappa": 0.778,
}
BINARY_METRICS = {
    "kappa": (metrics.cohen_kappa, "pred"),
    "auroc": (metrics.roc_auc, "score"),
    "sensitivity": (metrics.sensitivity, "pred"),
    "specificity": (metrics.specificity, "pred"),
    "accuracy": (metrics.accuracy, "pred"),
}


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _labelled_scored(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if row["true_label"] in ("0", "1") and row["label"] in ("normal", "abnormal")]


def abnormality_metrics(rows: list[dict[str, str]], replicates: int, seed: int) -> dict[str, Any]:
    """Return {"n_studies", "n_abnormal", metric name: bootstrap interval} for labelled scored rows."""
    y_true = np.array([int(row["true_label"]) for row in rows], dtype=np.int64)
    inputs = {
        "score": np.array([_float_or_nan(row["abnormality"]) for row in rows]),
        "pred": np.array([int(row["label"] == "abnormal") for row in rows], dtype=np.int64),
    }
    result: dict[str, Any] = {"n_studies": len(rows), "n_abnormal": int(y_true.sum())}
    for name, (function, input_name) in BINARY_METRICS.items():
        result[name] = bootstrap_interval(function, (y_true, inputs[input_name]), replicates, seed)
    return result


def routing_metrics(rows: list[dict[str, str]], replicates: int, seed: int) -> dict[str, Any]:
    """Return routing accuracy with its interval, per-part accuracy and the confusion matrix."""
    known = [row for row in rows if row["true_body_part"] in BODY_PARTS and row["body_part"] in BODY_PARTS]
    true_index = np.array([BODY_PARTS.index(row["true_body_part"]) for row in known], dtype=np.int64)
    routed_index = np.array([BODY_PARTS.index(row["body_part"]) for row in known], dtype=np.int64)
    matrix = metrics.confusion_matrix(true_index, routed_index, len(BODY_PARTS))
    per_part = {
        part: (float(matrix[index, index] / matrix[index].sum()) if matrix[index].sum() else None)
        for index, part in enumerate(BODY_PARTS)
    }
    return {
        "n_studies": len(known),
        "accuracy": bootstrap_interval(metrics.accuracy, (true_index, routed_index), replicates, seed),
        "classes": list(BODY_PARTS),
        "confusion_matrix": matrix.tolist(),
        "per_part_accuracy": per_part,
    }


def build_report(rows: list[dict[str, str]], replicates: int = DEFAULT_REPLICATES,
                 seed: int = DEFAULT_SEED, manifest: Manifest | None = None) -> dict[str, Any]:
    """Return the JSON-ready report of predictions rows (see the module docstring); `manifest`: the repository's."""
    labelled = _labelled_scored(rows)
    groups: dict[str, list[dict[str, str]]] = {}
    for row in labelled:
        groups.setdefault(row["true_body_part"] or row["body_part"], []).append(row)
    ordered_parts = [part for part in BODY_PARTS if part in groups] + sorted(set(groups) - set(BODY_PARTS))
    abnormality = {part: abnormality_metrics(groups[part], replicates, seed) for part in ordered_parts}
    abnormality[OVERALL] = abnormality_metrics(labelled, replicates, seed)
    return {
        "studies": {
            "rows": len(rows),
            "scored": sum(row["label"] in ("normal", "abnormal") for row in rows),
            "unscored": sum(row["label"] not in ("normal", "abnormal") for row in rows),
            "labelled_and_scored": len(labelled),
            "images_unreadable": sum(int(row["n_unreadable"] or 0) for row in rows),
            "images_out_of_distribution": sum(int(row.get("n_out_of_distribution") or 0) for row in rows),
            "studies_with_out_of_distribution_views": sum(int(row.get("n_out_of_distribution") or 0) > 0
                                                          for row in rows),
        },
        "settings": {"bootstrap_replicates": replicates, "seed": seed, "confidence": 0.95,
                     "grouped_by": "true body part (routed body part where unknown)",
                     "calibration_and_triage_grouped_by": "the expert that scored (routed body part)",
                     "calibration_bins": metrics.DEFAULT_CALIBRATION_BINS},
        "abnormality": abnormality,
        "routing": routing_metrics(rows, replicates, seed),
        "calibration": calibration_metrics(rows, manifest, replicates, seed),
        "triage": triage_metrics(rows, manifest, replicates, seed),
        "paper": PAPER_FIGURES,
    }


def curve_inputs(rows: list[dict[str, str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return {group: (y_true, y_score)} for ROC curves, groups as in `build_report`."""
    labelled = _labelled_scored(rows)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for group in [OVERALL, *BODY_PARTS]:
        members = [row for row in labelled if group == OVERALL or (row["true_body_part"] or row["body_part"]) == group]
        if members:
            y_true = np.array([int(row["true_label"]) for row in members])
            curves[group] = (y_true, np.array([float(row["abnormality"]) for row in members]))
    return curves


def _json_safe(value: Any) -> Any:
    """Replace NaN by None recursively: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def write_report(folder: Path, rows: list[dict[str, str]], replicates: int = DEFAULT_REPLICATES,
                 seed: int = DEFAULT_SEED, manifest: Manifest | None = None) -> dict[str, Any]:
    """Write report.json, report.md, roc_curves.png, reliability.png and routing_confusion.png into `folder`."""
    from scoring.plots import plot_reliability, plot_roc_curves, plot_routing_confusion

    folder.mkdir(parents=True, exist_ok=True)
    report = build_report(rows, replicates, seed, manifest)
    report["plots"] = {}
    curves = curve_inputs(rows)
    if curves:
        plot_roc_curves(curves, folder / "roc_curves.png")
        report["plots"]["roc_curves"] = "roc_curves.png"
    if report["calibration"]:
        plot_reliability(report["calibration"], folder / "reliability.png")
        report["plots"]["reliability"] = "reliability.png"
    if report["routing"]["n_studies"]:
        plot_routing_confusion(report["routing"], folder / "routing_confusion.png")
        report["plots"]["routing_confusion"] = "routing_confusion.png"
    (folder / "report.json").write_text(json.dumps(_json_safe(report), indent=2) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report
