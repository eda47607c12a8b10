"""The report's calibration and triage figures, per expert: ECE and reliability bins, categories, operating points.

Grouped by the expert that scored (the routed body part), since calibration and operating points belong to an
expert; `overall` pools every scored study. The ECE is that of the scores in the predictions file (the
calibrated ones when the expert has a calibration); the ECE before and after calibration that the manifest
records beside an expert's calibration (keys `ece_before`, `ece_after`) is shown beside it. At an operating
point a study counts as positive when its triage category is at or above it: at rule-out any category but
`low`, at rule-in `flagged` only; only studies with a category count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from classifiers.body_parts import BODY_PARTS
from classifiers.repository.entries import TRIAGE_CATEGORIES, Manifest
from mura import metrics
from scoring.bootstrap import bootstrap_interval

OVERALL = "overall"
SCORED_LABELS = ("normal", "abnormal")
MANIFEST_ECE_KEYS = ("ece_before", "ece_after")  # in an expert's manifest `calibration` object
# Operating point -> the categories counted positive there.
POSITIVE_AT = {"rule_out": ("flagged", "indeterminate"), "rule_in": ("flagged",)}


def expert_groups(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Scored rows by the expert that scored them (body parts in BODY_PARTS order, others after), then `overall`."""
    scored = [row for row in rows if row["label"] in SCORED_LABELS and row["body_part"]]
    groups: dict[str, list[dict[str, str]]] = {}
    for row in scored:
        groups.setdefault(row["body_part"], []).append(row)
    ordered = [part for part in BODY_PARTS if part in groups] + sorted(set(groups) - set(BODY_PARTS))
    return {**{part: groups[part] for part in ordered}, **({OVERALL: scored} if scored else {})}


def _labelled(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if row["true_label"] in ("0", "1")]


def _manifest_calibration(manifest: Manifest | None, group: str) -> dict[str, Any]:
    """The calibration the manifest records for the group's expert: method and its ECE before and after."""
    entry = manifest.experts.get(group) if manifest is not None else None
    calibration = entry.calibration if entry is not None else None
    if calibration is None:
        return {"method": None, **dict.fromkeys(MANIFEST_ECE_KEYS)}
    recorded = {key: calibration.details.get(key) for key in MANIFEST_ECE_KEYS}
    return {"method": calibration.method,
            **{key: float(value) if isinstance(value, (int, float)) else None for key, value in recorded.items()}}


def calibration_metrics(rows: list[dict[str, str]], manifest: Manifest | None, replicates: int,
                        seed: int) -> dict[str, Any]:
    """Per expert group: {"n_studies", "ece" (bootstrap interval), "bins", "method", "ece_before", "ece_after"}."""
    result: dict[str, Any] = {}
    for group, members in expert_groups(_labelled(rows)).items():
        y_true = np.array([int(row["true_label"]) for row in members], dtype=np.int64)
        y_score = np.array([float(row["abnormality"]) for row in members])
        result[group] = {
            "n_studies": len(members),
            "ece": bootstrap_interval(metrics.expected_calibration_error, (y_true, y_score), replicates, seed),
            "bins": metrics.reliability_bins(y_true, y_score),  # the reliability diagram's points (scoring.plots)
            **_manifest_calibration(manifest, group),
        }
    return result


def _thresholds(manifest: Manifest | None, group: str) -> dict[str, float | None]:
    """The group's expert's rule-out and rule-in thresholds in the manifest (None when unknown)."""
    entry = manifest.experts.get(group) if manifest is not None else None
    points = entry.operating_points if entry is not None else None
    return {"rule_out": points.rule_out if points else None, "rule_in": points.rule_in if points else None}


def _operating_point(members: list[dict[str, str]], positive: tuple[str, ...], replicates: int,
                     seed: int) -> dict[str, Any]:
    """Sensitivity and specificity with bootstrap intervals when the categories in `positive` count as positive."""
    y_true = np.array([int(row["true_label"]) for row in members], dtype=np.int64)
    y_pred = np.array([int(row["triage"] in positive) for row in members], dtype=np.int64)
    return {"sensitivity": bootstrap_interval(metrics.sensitivity, (y_true, y_pred), replicates, seed),
            "specificity": bootstrap_interval(metrics.specificity, (y_true, y_pred), replicates, seed)}


def triage_metrics(rows: list[dict[str, str]], manifest: Manifest | None, replicates: int,
                   seed: int) -> dict[str, Any]:
    """Per expert group with a triage category: studies per category, and each operating point's figures.

    Empty when no scored row has a category (no operating points in the repository that scored them).
    """
    if not any(row.get("triage") in TRIAGE_CATEGORIES for row in rows if row["label"] in SCORED_LABELS):
        return {}
    result: dict[str, Any] = {}
    for group, members in expert_groups(rows).items():
        counts = {category: sum(row.get("triage") == category for row in members) for category in TRIAGE_CATEGORIES}
        categorised = [row for row in _labelled(members) if row.get("triage") in TRIAGE_CATEGORIES]
        thresholds = _thresholds(manifest, group)
        result[group] = {
            "n_studies": len(members),
            "counts": counts | {"none": len(members) - sum(counts.values())},
            "n_labelled_with_category": len(categorised),
            **{point: {"threshold": thresholds[point], **_operating_point(categorised, positive, replicates, seed)}
               for point, positive in POSITIVE_AT.items()},
        }
    return result
