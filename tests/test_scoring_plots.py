"""scoring.plots: ROC curve points equal scikit-learn's, ties included."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk_metrics

from scoring.plots import roc_curve_points


def test_roc_curve_points_match_scikit_learn_with_ties() -> None:
    generator = np.random.default_rng(2)
    y_true = generator.integers(0, 2, 200)
    y_score = np.round(generator.random(200), 1)
    false_rate, true_rate = roc_curve_points(y_true, y_score)
    expected_false, expected_true, _ = sk_metrics.roc_curve(y_true, y_score, drop_intermediate=False)
    np.testing.assert_allclose(false_rate, expected_false)
    np.testing.assert_allclose(true_rate, expected_true)
