"""training.calibration and training.operating_points: the fits, the thresholds, the manifest they write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from classifiers import Pipeline, PipelineSettings
from classifiers.body_parts import BODY_PARTS
from classifiers.repository.entries import Calibration
from classifiers.repository.manifest import read_manifest
from classifiers.results import ViewInput
from mura.metrics import expected_calibration_error, roc_auc
from tests.support.helpers import encode_image
from training import operating_points
from training.calibration import fit_calibration
from training.operating_points import FitSettings, choose_operating_points, rule_in_threshold, rule_out_threshold

FAST = PipelineSettings(warmup=False)


def _miscalibrated(seed: int, temperature: float, bias: float, size: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores sigmoid(z) whose true probability of abnormal is sigmoid(z / T + b); labels drawn from it."""
    generator = np.random.default_rng(seed)
    logits = generator.normal(0.0, 3.0, size)
    truth = 1.0 / (1.0 + np.exp(-(logits / temperature + bias)))
    return 1.0 / (1.0 + np.exp(-logits)), (generator.random(size) < truth).astype(np.int64)


def test_platt_fit_recovers_the_scaling_and_removes_the_calibration_error() -> None:
    raw, labels = _miscalibrated(0, temperature=2.0, bias=-1.0)
    calibration = fit_calibration(raw, labels, "platt")
    assert calibration.temperature == pytest.approx(2.0, rel=0.15)
    assert calibration.bias == pytest.approx(-1.0, abs=0.15)
    assert expected_calibration_error(labels, raw) > 0.1
    assert expected_calibration_error(labels, calibration.apply(raw)) < 0.03
    assert roc_auc(labels, calibration.apply(raw)) == pytest.approx(roc_auc(labels, raw))


def test_temperature_fit_keeps_the_bias_at_zero() -> None:
    raw, labels = _miscalibrated(1, temperature=0.5, bias=0.0)
    calibration = fit_calibration(raw, labels, "temperature")
    assert calibration.bias == 0.0 and calibration.temperature == pytest.approx(0.5, rel=0.15)


def test_calibration_refuses_one_class_and_unknown_methods() -> None:
    with pytest.raises(ValueError, match="one class"):
        fit_calibration(np.array([0.2, 0.9]), np.array([1, 1]))
    with pytest.raises(ValueError, match="temperature, platt"):
        fit_calibration(np.array([0.2, 0.9]), np.array([0, 1]), "isotonic")


def test_rule_out_and_rule_in_thresholds_reach_their_targets_and_no_further() -> None:
    labels = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9])
    # Sensitivity 1.0 needs every positive at or above: the highest such threshold is below 0.45.
    assert rule_out_threshold(labels, scores, 1.0) == pytest.approx(0.425)
    assert rule_out_threshold(labels, scores, 0.8) == pytest.approx(0.55)  # 4 of 5 positives
    # Specificity 1.0: every negative below, the lowest such threshold is above 0.5.
    assert rule_in_threshold(labels, scores, 1.0) == pytest.approx(0.55)
    assert rule_in_threshold(labels, scores, 0.8) == pytest.approx(0.425)  # 4 of 5 negatives below
    points = choose_operating_points(labels, scores, FitSettings(1.0, 1.0, replicates=50), "hand-made")
    assert (points.rule_out, points.rule_in) == (pytest.approx(0.425), pytest.approx(0.55))
    assert points.category(0.42) == "low" and points.category(0.5) == "indeterminate"
    assert points.category(0.55) == "flagged"
    rule_out = points.details["rule_out"]
    assert rule_out["sensitivity"]["value"] == 1.0 and rule_out["specificity"]["value"] == 0.8
    assert rule_out["sensitivity"]["low"] <= 1.0 <= rule_out["sensitivity"]["high"]
    assert points.details["rule_in"]["specificity"]["value"] == 1.0


def test_points_that_cross_become_one_threshold_meeting_both_targets() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])  # separable: 0.3 < t < 0.7 meets both at 1.0
    points = choose_operating_points(labels, scores, FitSettings(0.95, 0.95, replicates=20), "separable")
    assert points.rule_out == points.rule_in == pytest.approx(0.5)
    assert {points.category(score) for score in scores[:3]} == {"low"}
    assert {points.category(score) for score in scores[3:]} == {"flagged"}


def _write_labelled_studies(root: Path, studies_per_class: int = 3) -> Path:
    """A MURA-layout folder: per body part, normal studies darker than abnormal ones, two views each."""
    generator = np.random.default_rng(0)
    for part in BODY_PARTS:
        for index in range(2 * studies_per_class):
            label = index % 2
            folder = root / "valid" / part / f"patient{index:05d}" / f"study1_{'positive' if label else 'negative'}"
            folder.mkdir(parents=True)
            for view in range(2):
                pixels = generator.integers(0, 120, (32, 32)) + 100 * label
                (folder / f"image{view + 1}.png").write_bytes(encode_image(pixels.astype(np.uint8)))
    return root


@pytest.fixture(scope="module")
def fitted_repository(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the tiny repository fitted by the command line on labelled studies; and the studies."""
    folder = tmp_path_factory.mktemp("fitted") / "repository"
    shutil.copytree(tiny_repository, folder)
    studies = _write_labelled_studies(tmp_path_factory.mktemp("labelled") / "LABELLED")
    code = operating_points.main([str(folder), "--data", str(studies), "--heldout", str(studies),
                                  "--replicates", "50"])
    assert code == 0
    return folder, studies


def test_command_records_calibration_points_and_heldout_figures(fitted_repository: tuple[Path, Path]) -> None:
    folder, _ = fitted_repository
    manifest = read_manifest(folder)
    for part in BODY_PARTS:
        entry = manifest.experts[part]
        assert entry.calibration is not None and entry.calibration.method == "platt"
        details = entry.calibration.details
        assert {"ece_before", "ece_after", "nll_before", "nll_after", "fitted_on", "heldout"} <= set(details)
        assert details["nll_after"] <= details["nll_before"] + 1e-9  # the fit never makes the likelihood worse
        assert details["heldout"]["auroc_after"] == details["heldout"]["auroc_before"]  # a monotone map
        points = entry.operating_points
        assert 0.0 <= points.rule_out <= points.rule_in <= 1.0
        assert points.details["rule_out"]["target_sensitivity"] == 0.95
        assert points.details["rule_out"]["sensitivity"]["value"] >= 0.95
        assert points.details["rule_in"]["specificity"]["value"] >= 0.95
        assert entry.threshold == points.details["decision_threshold"]["threshold"]
    assert manifest.router.calibration is None and manifest.router.operating_points is None


def test_the_service_answers_the_fitted_calibration_after_the_mean_over_views(
        fitted_repository: tuple[Path, Path], tiny_repository: Path) -> None:
    folder, _ = fitted_repository
    views = [ViewInput(f"view{index}.png", encode_image(np.full((40, 40), 60 * index + 40, np.uint8)))
             for index in range(3)]
    pipelines = [Pipeline.load(tiny_repository, FAST), Pipeline.load(folder, FAST)]
    try:
        raw, fitted = (pipeline.predict_study(views, body_part="XR_WRIST") for pipeline in pipelines)
    finally:
        for pipeline in pipelines:
            pipeline.close()
    calibration = read_manifest(folder).experts["XR_WRIST"].calibration
    raw_mean = np.mean([view.abnormality for view in raw.images])
    assert fitted.abnormality == pytest.approx(float(calibration.apply(np.float64(raw_mean))), abs=1e-6)
    assert [view.abnormality for view in fitted.images] == pytest.approx(
        list(calibration.apply(np.array([view.abnormality for view in raw.images]))), abs=1e-6)
    assert fitted.triage in ("flagged", "indeterminate", "low") and fitted.calibrated


def test_command_says_what_is_wrong_without_a_traceback(tmp_path: Path, tiny_repository: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "repository"
    shutil.copytree(tiny_repository, folder)
    assert operating_points.main([str(folder), "--data", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    one_class = tmp_path / "ONECLASS" / "valid" / "XR_ELBOW" / "patient00001" / "study1_negative"
    one_class.mkdir(parents=True)
    (one_class / "image1.png").write_bytes(encode_image(np.zeros((32, 32), np.uint8)))
    assert operating_points.main([str(folder), "--data", str(tmp_path / "ONECLASS")]) == 2
    assert "error: " in capsys.readouterr().err
    assert json.loads((folder / "manifest.json").read_text()) == json.loads((tiny_repository / "manifest.json")
                                                                            .read_text())
    with pytest.raises(SystemExit):
        operating_points.main([str(folder), "--data", str(tmp_path), "--sensitivity", "1.5"])


def test_calibration_apply_is_the_documented_formula() -> None:
    calibration = Calibration("platt", temperature=2.0, bias=0.5)
    assert float(calibration.apply(np.float64(0.8))) == pytest.approx(1 / (1 + np.exp(-(np.log(4) / 2 + 0.5))))
