"""scoring.report and scoring.bootstrap: figures equal scikit-learn's; seeded intervals that narrow with data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from classifiers.body_parts import BODY_PARTS
from mura import metrics
from scoring.bootstrap import bootstrap_interval
from scoring.report import build_report, write_report
from scoring.report_markdown import render_markdown


def test_build_report_matches_scikit_learn_on_random_rows() -> None:
    generator = np.random.default_rng(7)
    num_rows = 300
    y_true = generator.integers(0, 2, num_rows)
    y_score = np.round(np.clip(0.35 * y_true + 0.65 * generator.random(num_rows), 0, 1), 2)
    true_parts = generator.choice(BODY_PARTS, num_rows)
    routed_parts = np.where(generator.random(num_rows) < 0.8, true_parts, generator.choice(BODY_PARTS, num_rows))
    rows = [{"study": f"s{index}", "n_unreadable": "0", "abnormality": f"{y_score[index]:.6f}",
             "label": "abnormal" if y_score[index] >= 0.5 else "normal", "true_label": str(y_true[index]),
             "true_body_part": str(true_parts[index]), "body_part": str(routed_parts[index])}
            for index in range(num_rows)]
    report = build_report(rows, replicates=200, seed=1)
    y_pred = (y_score >= 0.5).astype(int)
    for part in [*BODY_PARTS, "overall"]:
        members = np.ones(num_rows, bool) if part == "overall" else true_parts == part
        figures = report["abnormality"][part]
        assert figures["n_studies"] == members.sum()
        expected = {
            "auroc": sk_metrics.roc_auc_score(y_true[members], y_score[members]),
            "kappa": sk_metrics.cohen_kappa_score(y_true[members], y_pred[members]),
            "sensitivity": sk_metrics.recall_score(y_true[members], y_pred[members]),
            "specificity": sk_metrics.recall_score(y_true[members], y_pred[members], pos_label=0),
            "accuracy": sk_metrics.accuracy_score(y_true[members], y_pred[members]),
        }
        for name, value in expected.items():
            assert figures[name]["value"] == pytest.approx(value), (part, name)
            assert figures[name]["low"] <= value <= figures[name]["high"], (part, name)
    assert report["routing"]["accuracy"]["value"] == pytest.approx(np.mean(true_parts == routed_parts))


def test_bootstrap_interval_is_seeded_and_narrows_with_more_data() -> None:
    generator = np.random.default_rng(0)
    small = (generator.integers(0, 2, 40), generator.integers(0, 2, 40))
    large = (generator.integers(0, 2, 4000), generator.integers(0, 2, 4000))
    first = bootstrap_interval(metrics.accuracy, small, replicates=300, seed=5)
    assert first == bootstrap_interval(metrics.accuracy, small, replicates=300, seed=5)
    wide = first["high"] - first["low"]
    large_interval = bootstrap_interval(metrics.accuracy, large, replicates=300, seed=5)
    assert large_interval["high"] - large_interval["low"] < wide / 4


def _triage_rows(num_rows: int = 400, seed: int = 3) -> tuple[list[dict[str, str]], dict[str, np.ndarray]]:
    """Labelled rows of two experts with unrounded scores and categories at rule-out 0.3 / rule-in 0.7."""
    generator = np.random.default_rng(seed)
    y_true = generator.integers(0, 2, num_rows)
    y_score = np.clip(0.4 * y_true + 0.6 * generator.random(num_rows), 0, 1)
    parts = generator.choice(["XR_HAND", "XR_WRIST"], num_rows)
    categories = np.where(y_score >= 0.7, "flagged", np.where(y_score < 0.3, "low", "indeterminate"))
    rows = [{"study": f"s{index}", "n_unreadable": "0", "abnormality": f"{y_score[index]:.6f}",
             "label": "abnormal" if y_score[index] >= 0.5 else "normal", "true_label": str(y_true[index]),
             "true_body_part": str(parts[index]), "body_part": str(parts[index]), "triage": str(categories[index])}
            for index in range(num_rows)]
    return rows, {"y_true": y_true, "y_score": np.round(y_score, 6), "parts": parts, "categories": categories}


def _plain_ece(y_true: np.ndarray, y_score: np.ndarray, num_bins: int = 10) -> float:
    """ECE written out with numpy: equal-width bins, |fraction positive - mean score| weighted by count."""
    index = np.minimum((y_score * num_bins).astype(int), num_bins - 1)
    total = 0.0
    for number in range(num_bins):
        members = index == number
        if members.any():
            total += members.sum() * abs(y_true[members].mean() - y_score[members].mean())
    return total / y_true.size


@pytest.fixture(scope="module")
def calibrated_manifest(tiny_repository, tmp_path_factory):
    """The tiny repository's manifest with operating points 0.3 / 0.7 and a calibration recording its ECE."""
    from classifiers.repository.manifest import read_manifest
    from tests.support.triage_repository import triaged_copy

    calibration = {"method": "temperature", "temperature": 1.5, "ece_before": 0.12, "ece_after": 0.031}
    folder = triaged_copy(tiny_repository, tmp_path_factory.mktemp("calibrated") / "repository", 0.3, 0.7,
                          calibration)
    return read_manifest(folder)


def test_calibration_per_expert_matches_a_plain_ece_and_shows_the_manifests_figures(calibrated_manifest) -> None:
    rows, truth = _triage_rows()
    report = build_report(rows, replicates=100, seed=2, manifest=calibrated_manifest)
    assert list(report["calibration"]) == ["XR_HAND", "XR_WRIST", "overall"]
    for group, figures in report["calibration"].items():
        members = np.ones(truth["parts"].size, bool) if group == "overall" else truth["parts"] == group
        expected = _plain_ece(truth["y_true"][members], truth["y_score"][members])
        assert figures["n_studies"] == members.sum()
        assert figures["ece"]["value"] == pytest.approx(expected)
        assert figures["ece"]["low"] <= expected <= figures["ece"]["high"]
        assert sum(item["count"] for item in figures["bins"]) == members.sum()
    assert (report["calibration"]["XR_HAND"]["method"], report["calibration"]["XR_HAND"]["ece_before"],
            report["calibration"]["XR_HAND"]["ece_after"]) == ("temperature", 0.12, 0.031)
    assert report["calibration"]["overall"]["ece_before"] is None  # the manifest's figures are per expert
    assert build_report(rows, replicates=10)["calibration"]["XR_HAND"]["method"] is None  # no manifest given


def test_triage_counts_and_operating_points_match_scikit_learn(calibrated_manifest) -> None:
    rows, truth = _triage_rows()
    report = build_report(rows, replicates=100, seed=2, manifest=calibrated_manifest)
    for group, figures in report["triage"].items():
        members = np.ones(truth["parts"].size, bool) if group == "overall" else truth["parts"] == group
        categories, y_true = truth["categories"][members], truth["y_true"][members]
        assert figures["counts"] == {"flagged": int((categories == "flagged").sum()),
                                     "indeterminate": int((categories == "indeterminate").sum()),
                                     "low": int((categories == "low").sum()), "none": 0}
        for point, y_pred in (("rule_out", categories != "low"), ("rule_in", categories == "flagged")):
            sensitivity = sk_metrics.recall_score(y_true, y_pred.astype(int))
            specificity = sk_metrics.recall_score(y_true, y_pred.astype(int), pos_label=0)
            assert figures[point]["sensitivity"]["value"] == pytest.approx(sensitivity), (group, point)
            assert figures[point]["specificity"]["value"] == pytest.approx(specificity), (group, point)
            assert figures[point]["sensitivity"]["low"] <= sensitivity <= figures[point]["sensitivity"]["high"]
    assert report["triage"]["XR_WRIST"]["rule_out"]["threshold"] == 0.3
    assert report["triage"]["XR_WRIST"]["rule_in"]["threshold"] == 0.7
    assert report["triage"]["overall"]["rule_in"]["threshold"] is None


def test_rows_without_categories_give_no_triage_figures_and_the_markdown_says_why() -> None:
    rows, _ = _triage_rows(60)
    earlier = [{key: value for key, value in row.items() if key != "triage"} for row in rows]  # a file before triage
    for without in (earlier, [row | {"triage": ""} for row in rows]):
        report = build_report(without, replicates=10)
        assert report["triage"] == {} and report["calibration"]["overall"]["n_studies"] == 60
        assert "have no operating points" in render_markdown(report)


def test_write_report_adds_the_reliability_diagram_and_both_sections(calibrated_manifest, tmp_path) -> None:
    rows, _ = _triage_rows(80)
    report = write_report(tmp_path, rows, replicates=20, seed=0, manifest=calibrated_manifest)
    assert report["plots"]["reliability"] == "reliability.png"
    assert (tmp_path / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (tmp_path / "report.md").read_text()
    assert "## Calibration per expert" in markdown and "![Reliability diagram](reliability.png)" in markdown
    hand = next(line for line in markdown.splitlines() if line.startswith("| Hand |") and "temperature" in line)
    assert "| 0.120 | 0.031 |" in hand
    triage_section = markdown.split("## Triage at the operating points")[1].split("## Routing")[0]
    [wrist_triage] = [line for line in triage_section.splitlines() if line.startswith("| Wrist |")]
    counts = report["triage"]["XR_WRIST"]["counts"]
    assert wrist_triage.startswith(f"| Wrist | {counts['flagged']} | {counts['indeterminate']} | {counts['low']} | 0 |")
    assert json.loads((tmp_path / "report.json").read_text())["triage"]["XR_WRIST"]["rule_out"]["threshold"] == 0.3
