"""Each expert's calibration and two operating points, fitted on labelled studies and written into the manifest.

    python -m training.operating_points REPOSITORY --data FOLDER [--heldout FOLDER]
        [--sensitivity 0.95] [--specificity 0.95] [--method temperature|platt]

On the studies of FOLDER (MURA layout, labelled by folder name) each expert's raw view scores are
calibrated (training.calibration), then on the calibrated study scores a rule-out threshold is chosen
at the target sensitivity, a rule-in threshold at the target specificity, and the decision threshold
(Youden's J) again; each point's sensitivity and specificity carry bootstrap 95 % CIs. With --heldout,
calibration error and AUROC before and after are measured on studies no fit saw. Training runs the same
fit on its validation studies (training.train).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifiers.errors import ClassifierError
from classifiers.repository.entries import Calibration, ModelEntry, OperatingPoints
from classifiers.repository.manifest import read_manifest, update_manifest_entry
from mura.metrics import expected_calibration_error, roc_auc, sensitivity, specificity
from mura.studies import find_studies
from scoring.bootstrap import bootstrap_interval
from training.calibration import fit_calibration, negative_log_likelihood
from training.data import task_examples
from training.evaluation import predict_study_scores, rounded_metric, youden_threshold

OPERATING_POINTS_METHOD = "rule-out at target sensitivity, rule-in at target specificity, on calibrated study scores"


@dataclass(frozen=True)
class FitSettings:
    """Targets and bootstrap of the fit."""

    target_sensitivity: float = 0.95
    target_specificity: float = 0.95
    method: str = "platt"  # measured: temperature alone cannot move a biased score (docs/TRAINING.md)
    replicates: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class StudyScores:
    """One expert's raw study scores (S,), the mean of each study's raw view P(abnormal), and labels (S,) 0/1."""

    raw: np.ndarray
    labels: np.ndarray

    def calibrated(self, calibration: Calibration | None) -> np.ndarray:
        """(S,) the scores as the service answers them: calibrated after the mean over views."""
        return self.raw if calibration is None else calibration.apply(self.raw)


def rule_out_threshold(labels: np.ndarray, scores: np.ndarray, target_sensitivity: float) -> float:
    """The highest threshold whose sensitivity (score >= threshold is positive) still reaches the target."""
    candidates = _candidates(scores)
    positives = scores[labels == 1]
    reached = [(positives >= threshold).mean() >= target_sensitivity for threshold in candidates]
    return float(candidates[np.flatnonzero(reached).max()])


def rule_in_threshold(labels: np.ndarray, scores: np.ndarray, target_specificity: float) -> float:
    """The lowest threshold whose specificity (score below threshold is negative) reaches the target."""
    candidates = _candidates(scores)
    negatives = scores[labels == 0]
    reached = [(negatives < threshold).mean() >= target_specificity for threshold in candidates]
    return float(candidates[np.flatnonzero(reached).min()])


def _candidates(scores: np.ndarray) -> np.ndarray:
    """0, the midpoints between consecutive distinct scores, and 1: thresholds that never sit on a score."""
    distinct = np.unique(scores)
    return np.concatenate([[0.0], (distinct[:-1] + distinct[1:]) / 2.0, [1.0]])


def point_figures(labels: np.ndarray, scores: np.ndarray, threshold: float, settings: FitSettings) -> dict:
    """Sensitivity and specificity at `threshold` with bootstrap 95 % CIs over studies."""
    def at_threshold(metric):
        return lambda truth, values: metric(truth, (values >= threshold).astype(np.int64))

    figures = {}
    for name, metric in (("sensitivity", sensitivity), ("specificity", specificity)):
        interval = bootstrap_interval(at_threshold(metric), (labels, scores), settings.replicates, settings.seed)
        figures[name] = {key: rounded_metric(interval[key]) for key in ("value", "low", "high")}
    return figures


def choose_operating_points(
    labels: np.ndarray, scores: np.ndarray, settings: FitSettings, data: str
) -> OperatingPoints:
    """Rule-out and rule-in thresholds on study scores with their figures; one threshold when one meets both."""
    rule_out = rule_out_threshold(labels, scores, settings.target_sensitivity)
    rule_in = rule_in_threshold(labels, scores, settings.target_specificity)
    if rule_in < rule_out:  # any threshold between meets both targets: no indeterminate band is needed
        rule_out = rule_in = (rule_out + rule_in) / 2.0
    details = {
        "method": OPERATING_POINTS_METHOD,
        "rule_out": {"target_sensitivity": settings.target_sensitivity,
                     **point_figures(labels, scores, rule_out, settings)},
        "rule_in": {"target_specificity": settings.target_specificity,
                    **point_figures(labels, scores, rule_in, settings)},
        "chosen_on": data,
        "num_studies": int(labels.size),
        "bootstrap_replicates": settings.replicates,
    }
    return OperatingPoints(rule_out=round(rule_out, 6), rule_in=round(rule_in, 6), details=details)


def fit_expert(entry: ModelEntry, scores: StudyScores, settings: FitSettings, data: str) -> ModelEntry:
    """The entry with a calibration, operating points and a decision threshold fitted on `scores`."""
    before = scores.raw
    fitted = fit_calibration(before, scores.labels, settings.method)
    after = fitted.apply(before)
    calibration = dataclasses.replace(fitted, details={
        "fitted_on": data,
        "num_studies": int(scores.labels.size),
        "ece_before": rounded_metric(expected_calibration_error(scores.labels, before)),
        "ece_after": rounded_metric(expected_calibration_error(scores.labels, after)),
        "nll_before": rounded_metric(negative_log_likelihood(before, scores.labels)),
        "nll_after": rounded_metric(negative_log_likelihood(after, scores.labels)),
    })
    points = choose_operating_points(scores.labels, after, settings, data)
    threshold = youden_threshold(scores.labels, after)
    points = dataclasses.replace(points, details={**points.details, "decision_threshold": {
        "threshold": threshold, "method": "youden_j_on_calibrated_study_scores",
        **point_figures(scores.labels, after, threshold, settings)}})
    return dataclasses.replace(entry, calibration=calibration, operating_points=points, threshold=threshold)


def fit_trained_expert(repository: Path, entry: ModelEntry, scores: StudyScores, data: str) -> ModelEntry:
    """Training's step: fit the expert on its validation studies and write it; unchanged (said why) when it cannot."""
    try:
        entry = fit_expert(entry, scores, FitSettings(), data)
    except ValueError as error:
        print(f"[{entry.role}] no calibration or operating points: {error}; fit them later with"
              f" python -m training.operating_points {repository} --data FOLDER")
        return entry
    update_manifest_entry(repository, entry)
    print(describe_fit(entry))
    return entry


def heldout_figures(entry: ModelEntry, scores: StudyScores, data: str) -> dict:
    """ECE and AUROC before and after the entry's calibration, and each point's sensitivity/specificity."""
    before, after = scores.raw, scores.calibrated(entry.calibration)
    labels = scores.labels
    figures = {
        "data": data,
        "num_studies": int(labels.size),
        "ece_before": rounded_metric(expected_calibration_error(labels, before)),
        "ece_after": rounded_metric(expected_calibration_error(labels, after)),
        "auroc_before": rounded_metric(roc_auc(labels, before)),
        "auroc_after": rounded_metric(roc_auc(labels, after)),
    }
    for name, threshold in (("rule_out", entry.operating_points.rule_out), ("rule_in", entry.operating_points.rule_in)):
        predicted = (after >= threshold).astype(np.int64)
        figures[name] = {"sensitivity": rounded_metric(sensitivity(labels, predicted)),
                         "specificity": rounded_metric(specificity(labels, predicted))}
    return figures


def with_heldout(entry: ModelEntry, figures: Mapping) -> ModelEntry:
    """The entry with held-out figures recorded in its calibration's and operating points' details."""
    calibration_figures = {key: figures[key] for key in ("data", "num_studies", "ece_before", "ece_after",
                                                          "auroc_before", "auroc_after")}
    points_figures = {key: figures[key] for key in ("data", "num_studies", "rule_out", "rule_in")}
    return dataclasses.replace(
        entry,
        calibration=dataclasses.replace(entry.calibration,
                                        details={**entry.calibration.details, "heldout": calibration_figures}),
        operating_points=dataclasses.replace(entry.operating_points,
                                             details={**entry.operating_points.details, "heldout": points_figures}),
    )


def expert_study_scores(repository: Path, entry: ModelEntry, studies: list, batch_size: int = 32) -> StudyScores:
    """Run the expert's Keras model (the reference every backend is checked against) on its part's studies."""
    from classifiers.backends.keras_files import load_model

    model, entry = load_model(repository, entry)
    examples = task_examples(studies, entry.role)
    labels, scores = predict_study_scores(model, examples, entry.input_size, entry.preprocessing, batch_size)
    return StudyScores(scores[:, entry.positive_column], labels)


def fit_repository(repository: Path, data: Path, heldout: Path | None = None,
                   settings: FitSettings = FitSettings()) -> dict[str, ModelEntry]:
    """Fit every expert of REPOSITORY on DATA (and measure on HELDOUT); write the manifest; return the entries."""
    manifest = read_manifest(repository)
    studies = find_studies(data)
    heldout_studies = find_studies(heldout) if heldout is not None else None
    fitted = {}
    for role, entry in manifest.experts.items():  # every expert is fitted before any is written
        try:
            entry = fit_expert(entry, expert_study_scores(repository, entry, studies), settings, data.name)
        except ValueError as error:
            raise ValueError(f"{role}: {error}; nothing was written (every expert needs labelled normal and"
                             " abnormal studies)") from None
        if heldout_studies is not None:
            figures = heldout_figures(entry, expert_study_scores(repository, entry, heldout_studies), heldout.name)
            entry = with_heldout(entry, figures)
        fitted[role] = entry
    for entry in fitted.values():
        update_manifest_entry(repository, entry)
        print(describe_fit(entry))
    return fitted


def describe_fit(entry: ModelEntry) -> str:
    """One line per expert: the fitted temperature, the two thresholds and the calibration error."""
    points, calibration = entry.operating_points, entry.calibration
    line = (f"[{entry.role}] T={calibration.temperature:.3f} b={calibration.bias:.3f}"
            f" rule-out {points.rule_out:.4f} (sensitivity {points.details['rule_out']['sensitivity']['value']})"
            f" rule-in {points.rule_in:.4f} (specificity {points.details['rule_in']['specificity']['value']})"
            f" ECE {calibration.details['ece_before']} -> {calibration.details['ece_after']}")
    heldout = calibration.details.get("heldout")
    if heldout:
        line += (f"; held-out ECE {heldout['ece_before']} -> {heldout['ece_after']},"
                 f" AUROC {heldout['auroc_before']} -> {heldout['auroc_after']}")
    return line


def main(argv: list[str] | None = None) -> int:
    """Command line: fit and write; exit 2 with one line on a bad repository or data folder."""
    parser = argparse.ArgumentParser(prog="python -m training.operating_points", description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path, help="model repository (manifest.json) to update")
    parser.add_argument("--data", type=Path, required=True, help="labelled validation studies (MURA layout)")
    parser.add_argument("--heldout", type=Path, default=None, help="labelled studies no fit saw, to measure on")
    parser.add_argument("--sensitivity", type=float, default=0.95, help="target sensitivity of the rule-out point")
    parser.add_argument("--specificity", type=float, default=0.95, help="target specificity of the rule-in point")
    parser.add_argument("--method", default="platt", choices=["temperature", "platt"])
    parser.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates of the CIs")
    args = parser.parse_args(argv)
    for name in ("sensitivity", "specificity"):
        if not 0.0 < getattr(args, name) <= 1.0:
            parser.error(f"--{name} must be in (0, 1], got {getattr(args, name)}")
    settings = FitSettings(args.sensitivity, args.specificity, args.method, args.replicates)
    try:
        fit_repository(args.repository, args.data, args.heldout, settings)
    except (ClassifierError, ValueError, FileNotFoundError) as error:  # StudySourceError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
