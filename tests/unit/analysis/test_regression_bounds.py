"""MSE, RMSE and MAE act on a confidence bound, not the point estimate, and the bound holds its level."""

from __future__ import annotations

import datetime
import math

import numpy as np
import pytest
from scipy import stats

from modelwarden.analysis.judge import Observations, TrackWindow, judge
from modelwarden.analysis.quality import RegressionErrors
from modelwarden.api.driftpolicy import DriftPolicySpec, Verdict
from modelwarden.contract.metrics import FEEDBACK_FOURTH_POWER_ERROR_SUM

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def sums(errors: np.ndarray) -> RegressionErrors:
    return RegressionErrors(float((errors**2).sum()), float(np.abs(errors).sum()), float(errors.size), float((errors**4).sum()))


def test_bounds_are_student_t_bounds_of_the_raw_errors():
    errors = np.random.default_rng(1).normal(0, 2, 400)
    for name, values in (("mse", errors**2), ("mae", np.abs(errors))):
        mean, spread = values.mean(), values.std(ddof=1) / math.sqrt(values.size)
        lower, upper = sums(errors).bounds(name, 0.01)
        t = stats.t.ppf(0.99, values.size - 1)
        assert lower == pytest.approx(mean - t * spread) and upper == pytest.approx(mean + t * spread)
    mse_lower, mse_upper = sums(errors).bounds("mse", 0.01)
    assert sums(errors).bounds("rmse", 0.01) == pytest.approx((math.sqrt(mse_lower), math.sqrt(mse_upper)))


def test_no_bound_without_the_fourth_power_sum_or_two_observations():
    assert RegressionErrors(40.0, 10.0, 10).bounds("mse", 0.01) is None
    assert RegressionErrors(40.0, 10.0, 10).bounds("mae", 0.01) is not None  # Σe² is MAE's spread
    assert RegressionErrors(4.0, 2.0, 1, 16.0).bounds("mse", 0.01) is None
    assert RegressionErrors(math.inf, 2.0, 10, math.inf).bounds("rmse", 0.01) is None


def test_sums_no_errors_could_have_give_no_bound_rather_than_a_zero_width_one():
    """Σe⁴ below (Σe²)²/n (half a fleet exporting it, or a series missing its first scrape) would
    clip the variance to 0 and make the bound the point estimate."""
    assert RegressionErrors(1030.0, 800.0, 1000, 900.0).bounds("mse", 0.001) is None
    assert RegressionErrors(1000.0, 1100.0, 1000, 2000.0).bounds("mae", 0.001) is None  # (Σ|e|)² > n·Σe²
    constant = np.full(50, 2.0)  # every error the same: consistent, and truly zero width
    assert sums(constant).bounds("mse", 0.01) == pytest.approx((4.0, 4.0))


@pytest.mark.parametrize(("errors", "name"), [("normal", "mse"), ("normal", "mae"), ("laplace", "mse"), ("laplace", "rmse")])
def test_a_model_exactly_at_its_maximum_fails_at_most_at_the_level(errors, name):
    """The false-fail rate of `max` on a model whose true error equals the maximum: the lower bound
    exceeds the truth at most about `level` of the time (right-skewed errors make it conservative)."""
    rng = np.random.default_rng(7)
    level, n, runs = 0.01, 300, 4000
    draw = {"normal": lambda size: rng.normal(0, 1, size), "laplace": lambda size: rng.laplace(0, 1 / math.sqrt(2), size)}[errors]
    truth = {"mse": 1.0, "rmse": 1.0, "mae": math.sqrt(2 / math.pi) if errors == "normal" else 1 / math.sqrt(2)}[name]
    false_fails = sum(sums(draw(n)).bounds(name, level)[0] > truth for _ in range(runs))
    assert false_fails / runs <= 1.5 * level


def spec(check: dict) -> DriftPolicySpec:
    return DriftPolicySpec.model_validate({"targetRef": {"name": "m"}, "track": "canary", "minSamples": 100, "performance": [check]})


def evaluate(check: dict, errors: RegressionErrors, level: float = 0.01):
    counters = {"squared_error_sum": errors.squared_error_sum, "absolute_error_sum": errors.absolute_error_sum,
                "feedback_observations": errors.observations, "predictions": errors.observations}
    if errors.fourth_power_error_sum is not None:
        counters["fourth_power_error_sum"] = errors.fourth_power_error_sum
    evaluation = judge(spec(check), Observations(current=TrackWindow(counters=counters)), NOW, level).evaluation
    return next(r for r in evaluation.results if r.check.startswith("performance/"))


def test_an_mse_a_little_above_its_maximum_is_not_a_fail_until_its_bound_is():
    rng = np.random.default_rng(3)
    noisy = sums(rng.normal(0, 1.05, 200))  # true MSE 1.1025, estimated from 200 labels
    close = evaluate({"metric": "mse", "max": 1.0}, noisy)
    assert close.value > 1.0 and close.verdict == Verdict.PASS and "not surely" in close.message
    assert close.lower_bound < 1.0 < close.upper_bound
    clear = evaluate({"metric": "mse", "max": 1.0}, sums(rng.normal(0, 1.5, 2000)))
    assert clear.verdict == Verdict.FAIL and clear.lower_bound > 1.0 and "at least" in clear.message


def test_an_older_server_without_the_fourth_power_series_gives_insufficient_data_for_mse_only():
    old = RegressionErrors(3000.0, 900.0, 1000.0)
    mse = evaluate({"metric": "mse", "max": 1.0}, old)
    assert mse.verdict == Verdict.INSUFFICIENT_DATA and FEEDBACK_FOURTH_POWER_ERROR_SUM in mse.message and mse.value == 3.0
    mixed = evaluate({"metric": "mse", "max": 1.0}, RegressionErrors(3000.0, 900.0, 1000.0, 4000.0))  # Σe⁴ from part of the fleet
    assert mixed.verdict == Verdict.INSUFFICIENT_DATA and "consistent" in mixed.message
    assert evaluate({"metric": "mae", "max": 0.5}, old).verdict == Verdict.FAIL


def test_regression_checks_share_the_evaluation_level():
    from modelwarden.analysis.bounds import budgeted_checks
    two = DriftPolicySpec.model_validate({"targetRef": {"name": "m"}, "track": "canary", "drift": None,
                                          "performance": [{"metric": "mse", "max": 1}, {"metric": "mae", "max": 1}]})
    assert budgeted_checks(two) == 2
