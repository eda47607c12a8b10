"""scoring.report and scoring.bootstrap: figures equal scikit-learn's; seeded intervals that narrow with data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from classifiers.body_parts import BODY_PARTS
from mura import metrics
from scoring.bootstrap import bootstrap_interval
from scoring.report import build_report


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
