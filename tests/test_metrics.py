"""mura.metrics checked against scikit-learn on random data, ties and one-class edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from mura import metrics

SEEDS = [0, 1, 2, 3, 4]


def _random_case(seed: int, size: int = 60, score_decimals: int | None = None) -> tuple:
    """Return (y_true, y_score, y_pred) with scores related to the truth, so AUROC is not ~0.5."""
    generator = np.random.default_rng(seed)
    y_true = generator.integers(0, 2, size)
    y_score = np.clip(0.3 * y_true + 0.7 * generator.random(size), 0.0, 1.0)
    if score_decimals is not None:
        y_score = np.round(y_score, score_decimals)  # many tied scores
    y_pred = (y_score >= 0.5).astype(int)
    return y_true, y_score, y_pred


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("score_decimals", [None, 1, 0])
def test_roc_auc_matches_scikit_learn_with_and_without_ties(seed: int, score_decimals) -> None:
    y_true, y_score, _ = _random_case(seed, score_decimals=score_decimals)
    expected = sk_metrics.roc_auc_score(y_true, y_score)
    assert metrics.roc_auc(y_true, y_score) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_metrics_match_scikit_learn(seed: int) -> None:
    y_true, _, y_pred = _random_case(seed, score_decimals=2)
    assert metrics.cohen_kappa(y_true, y_pred) == pytest.approx(
        sk_metrics.cohen_kappa_score(y_true, y_pred), abs=1e-12
    )
    assert metrics.sensitivity(y_true, y_pred) == pytest.approx(
        sk_metrics.recall_score(y_true, y_pred, pos_label=1), abs=1e-12
    )
    assert metrics.specificity(y_true, y_pred) == pytest.approx(
        sk_metrics.recall_score(y_true, y_pred, pos_label=0), abs=1e-12
    )
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(
        sk_metrics.accuracy_score(y_true, y_pred), abs=1e-12
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_matches_scikit_learn_with_absent_classes(seed: int) -> None:
    generator = np.random.default_rng(seed)
    y_true = generator.integers(0, 5, 80)  # classes 5 and 6 never occur
    y_pred = generator.integers(0, 7, 80)
    expected = sk_metrics.confusion_matrix(y_true, y_pred, labels=list(range(7)))
    result = metrics.confusion_matrix(y_true, y_pred, 7)
    assert result.shape == (7, 7)
    np.testing.assert_array_equal(result, expected)


def test_perfect_and_inverted_scores_give_auroc_one_and_zero() -> None:
    y_true = np.array([0, 0, 1, 1])
    assert metrics.roc_auc(y_true, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.roc_auc(y_true, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.roc_auc(y_true, [0.5, 0.5, 0.5, 0.5]) == 0.5


@pytest.mark.parametrize("single_class", [0, 1])
def test_one_class_truth_gives_nan_auroc(single_class: int) -> None:
    assert math.isnan(metrics.roc_auc([single_class] * 5, [0.1, 0.2, 0.3, 0.4, 0.5]))


def test_kappa_is_nan_when_both_raters_use_one_class_and_matches_sklearn_otherwise() -> None:
    assert math.isnan(metrics.cohen_kappa([1, 1, 1], [1, 1, 1]))
    # Truth one class, predictions mixed: defined (0.0), as in scikit-learn.
    assert metrics.cohen_kappa([1, 1, 1, 1], [1, 0, 1, 1]) == pytest.approx(
        sk_metrics.cohen_kappa_score([1, 1, 1, 1], [1, 0, 1, 1])
    )


def test_sensitivity_without_positives_and_specificity_without_negatives_are_nan() -> None:
    assert math.isnan(metrics.sensitivity([0, 0, 0], [0, 1, 0]))
    assert metrics.specificity([0, 0, 0], [0, 1, 0]) == pytest.approx(2 / 3)
    assert math.isnan(metrics.specificity([1, 1], [1, 0]))
    assert metrics.sensitivity([1, 1], [1, 0]) == 0.5


def test_empty_input_gives_nan() -> None:
    for function in (metrics.cohen_kappa, metrics.sensitivity, metrics.specificity, metrics.accuracy):
        assert math.isnan(function([], []))
    assert math.isnan(metrics.roc_auc([], []))


@pytest.mark.parametrize(
    ("function", "y_true", "y_other", "message"),
    [
        (metrics.roc_auc, [0, 1, 1], [0.2, 0.4], "has 3 values"),
        (metrics.cohen_kappa, [0, 2], [0, 1], "only 0 and 1"),
        (metrics.sensitivity, [0, 1], [0, 3], "only 0 and 1"),
        (metrics.accuracy, [0, 1], [0], "has 2 values"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(function, y_true, y_other, message) -> None:
    with pytest.raises(ValueError, match=message):
        function(y_true, y_other)


def test_confusion_matrix_rejects_class_index_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside 0..2"):
        metrics.confusion_matrix([0, 1, 3], [0, 1, 2], 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_reliability_bins_match_scikit_learn_calibration_curve(seed: int) -> None:
    from sklearn.calibration import calibration_curve

    y_true, y_score, _ = _random_case(seed, size=200)
    bins = metrics.reliability_bins(y_true, y_score, num_bins=10)
    fraction, mean_score = calibration_curve(y_true, y_score, n_bins=10, strategy="uniform")
    assert [item["fraction_positive"] for item in bins] == pytest.approx(list(fraction))
    assert [item["mean_score"] for item in bins] == pytest.approx(list(mean_score))
    assert sum(item["count"] for item in bins) == 200


def test_expected_calibration_error_of_perfect_and_overconfident_scores() -> None:
    y_true = np.array([0] * 50 + [1] * 50)
    halves = np.full(100, 0.5)
    assert metrics.expected_calibration_error(y_true, halves) == pytest.approx(0.0)
    overconfident = np.where(y_true == 1, 0.95, 0.05)
    overconfident[:10] = 0.95  # ten negatives scored 0.95: the 0.9-1.0 bin is 60 studies, 50 positive
    expected = (60 * abs(50 / 60 - 0.95) + 40 * abs(0.0 - 0.05)) / 100
    assert metrics.expected_calibration_error(y_true, overconfident) == pytest.approx(expected)
    assert math.isnan(metrics.expected_calibration_error([], []))
    with pytest.raises(ValueError, match="probabilities"):
        metrics.expected_calibration_error([0, 1], [0.2, 1.5])
