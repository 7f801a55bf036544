"""Quality metrics from counters agree with scikit-learn and PromQL semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics

from modelwarden.analysis.quality import Averaging, ConfusionMatrix, RegressionErrors, averaging, histogram_quantile, rate, two_proportion_test


@pytest.mark.parametrize("seed", range(10))
def test_classification_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    classes = ["cat", "dog", "eel", "fox"][: int(rng.integers(2, 5))]
    actual = rng.choice(classes, 500)
    predicted = np.where(rng.uniform(size=500) < 0.7, actual, rng.choice(classes, 500))
    pairs: dict[tuple[str, str], float] = {}
    for p, a in zip(predicted, actual):
        pairs[(str(p), str(a))] = pairs.get((str(p), str(a)), 0) + 1
    matrix = ConfusionMatrix.from_pairs(pairs)
    assert matrix.accuracy() == pytest.approx(metrics.accuracy_score(actual, predicted))
    labels = list(matrix.classes)
    for name, function in (("precision", metrics.precision_score), ("recall", metrics.recall_score), ("f1", metrics.f1_score)):
        expected = function(actual, predicted, labels=labels, average="macro", zero_division=0)
        assert matrix.score(name, None) == pytest.approx(expected)
        per_class = function(actual, predicted, labels=labels, average=None, zero_division=0)
        for label, value in zip(labels, per_class):
            assert matrix.score(name, label) == pytest.approx(value)


def test_empty_feedback_has_no_value():
    matrix = ConfusionMatrix.from_pairs({})
    assert matrix.accuracy() is None and matrix.score("f1", None) is None


def test_regression_metrics():
    errors = RegressionErrors(squared_error_sum=40.0, absolute_error_sum=10.0, observations=10)
    assert (errors.metric("mse"), errors.metric("rmse"), errors.metric("mae")) == (4.0, 2.0, 1.0)
    assert RegressionErrors(1.0, 1.0, 0).metric("mse") is None


@pytest.mark.parametrize(
    ("quantile", "expected"),
    [(0.5, 0.175), (0.9, 0.5 + 0.5 * (9 - 8) / 1.5), (0.1, 0.05), (0.999, 1.0)],
)
def test_histogram_quantile_interpolates_like_promql(quantile, expected):
    le = np.array([0.1, 0.2, 0.5, 1.0, np.inf])
    counts = np.array([2.0, 4.0, 2.0, 1.5, 0.5])  # total 10
    assert histogram_quantile(quantile, le, counts) == pytest.approx(expected)


def test_histogram_quantile_without_data():
    assert histogram_quantile(0.99, np.array([1.0, np.inf]), np.zeros(2)) is None


def test_rate():
    assert rate(5, 100) == 0.05 and rate(5, 0) is None and rate(-1, 10) == 0.0


def test_two_proportion_test_matches_the_textbook_z():
    test = two_proportion_test(700, 1000, 800, 1000, higher_is_worse=False)  # accuracy 0.70 vs 0.80
    pooled = 0.75
    z = 0.1 / math.sqrt(pooled * 0.25 * 2 / 1000)
    assert test.z == pytest.approx(z) and test.p_value == pytest.approx(stats.norm.sf(z))
    better = two_proportion_test(850, 1000, 800, 1000, higher_is_worse=False)
    assert better.p_value > 0.5
    errors = two_proportion_test(50, 1000, 10, 1000, higher_is_worse=True)
    assert errors.p_value < 1e-6
    assert two_proportion_test(0, 100, 0, 100, higher_is_worse=True).p_value == 0.5


def _matrix(actual, predicted) -> ConfusionMatrix:
    pairs: dict[tuple[str, str], float] = {}
    for p, a in zip(predicted, actual):
        pairs[(str(p), str(a))] = pairs.get((str(p), str(a)), 0) + 1
    return ConfusionMatrix.from_pairs(pairs)


@pytest.mark.parametrize("seed", range(5))
def test_a_binary_model_is_judged_on_its_positive_class_as_scikit_learn(seed):
    # 3 % positives: the macro average would hide how poorly the rare class is found.
    rng = np.random.default_rng(seed)
    actual = (rng.uniform(size=4000) < 0.03).astype(int)
    predicted = np.where(rng.uniform(size=4000) < 0.6, actual, rng.integers(0, 2, 4000))
    matrix = _matrix(actual, predicted)
    how = averaging(matrix.classes, None, None)
    assert how.positive == "1"
    for name, function in (("precision", metrics.precision_score), ("recall", metrics.recall_score), ("f1", metrics.f1_score)):
        assert matrix.score(name, how.positive) == pytest.approx(function(actual, predicted, zero_division=0))
        assert matrix.score(name, how.positive) != pytest.approx(matrix.score(name, None))


def test_which_class_is_positive():
    assert averaging(["0"], None, None).positive == "1"  # a window without a positive is still binary
    assert averaging(["False", "True"], None, None).positive == "True"
    assert averaging(["cat", "dog", "eel"], None, None) == Averaging(None, "macro average over the 3 classes seen")
    # the profile knows the classes a window may not show, and names the positive one
    assert averaging(["fraud"], ["fraud", "legit"], "fraud").positive == "fraud"
    assert averaging(["0", "1"], ["0", "1", "2"], None).positive is None
    assert averaging(["1"], ["0", "1"], None).positive == "1"
    with pytest.raises(ValueError, match=r"labels \['fraud', 'legit'\] may be a binary model's: set class"):
        averaging(["legit", "fraud"], None, None)
    with pytest.raises(ValueError, match="the profile's labels"):
        averaging(["legit"], ["fraud", "legit"], None)
