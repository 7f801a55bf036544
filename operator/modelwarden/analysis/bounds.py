"""Quality bounds on confidence, not on point estimates (pure).

An accuracy of 0.84 from 1500 labels says little about whether the model's accuracy is below
0.85: acting on the point estimate fails a model at 0.87 in 16 % of 2-hour runs. A proportion
check fails only when its exact (Clopper–Pearson) bound at the check's level is past the limit:
the upper bound below ``min``, or the lower bound above ``max``. F1 is bounded through the
Jaccard index J = TP / (TP + FP + FN), a proportion with F1 = 2J / (1 + J); a macro average
through the average of its classes' bounds, each at the level divided by the classes. MSE, RMSE
and MAE are means of errors, bounded by Student's t (analysis.quality.RegressionErrors.bounds).
"""

from __future__ import annotations

import math

from scipy import stats

from modelwarden.analysis.verdicts import result
from modelwarden.api.checks import PerformanceMetric
from modelwarden.api.driftpolicy import CheckResult, DriftPolicySpec, Verdict

# The checks that spend the policy's error budget: each has a sampling model (a proportion, a mean
# of errors, a two-sample test, the drift family). Latency quantiles, estimated metrics and custom
# PromQL act on their values as given.
PROPORTION_METRICS = frozenset({PerformanceMetric.ACCURACY, PerformanceMetric.PRECISION, PerformanceMetric.RECALL,
                                PerformanceMetric.F1, PerformanceMetric.ERROR_RATE})
ERROR_MEAN_METRICS = frozenset({PerformanceMetric.MSE, PerformanceMetric.RMSE, PerformanceMetric.MAE})


def budgeted_checks(spec: DriftPolicySpec) -> int:
    """How many checks share an evaluation's level (Bonferroni): the drift family counts once."""
    drift = 1 if spec.drift is not None else 0
    proportions = sum(check.metric in PROPORTION_METRICS | ERROR_MEAN_METRICS for check in spec.performance)
    comparisons = len(spec.comparison.metrics) if spec.comparison is not None else 0
    outliers = 1 if spec.outliers is not None else 0
    agreement = 1 if spec.agreement is not None else 0
    return max(1, drift + proportions + comparisons + outliers + agreement)


def clopper_pearson(successes: float, trials: float, level: float) -> tuple[float, float]:
    """One-sided exact bounds, each holding with probability at least 1 − level."""
    if trials <= 0:
        return 0.0, 1.0
    x = min(max(successes, 0.0), trials)
    lower = float(stats.beta.ppf(level, x, trials - x + 1)) if x > 0 else 0.0
    upper = float(stats.beta.ppf(1 - level, x + 1, trials - x)) if x < trials else 1.0
    return lower, upper


def side_level(level: float, minimum: float | None, maximum: float | None) -> float:
    """The level of each one-sided bound: a check with both a min and a max tests two sides."""
    return level / 2 if minimum is not None and maximum is not None else level


def f1_of_jaccard(j: float) -> float:
    return 2 * j / (1 + j)


def bounded_by_confidence(
    check: str, value: float | None, lower: float, upper: float, minimum: float | None, maximum: float | None,
    samples: float | None, min_samples: int, what: str, level: float,
) -> CheckResult:
    """A Fail only when the bound, not just the estimate, is past a limit; InsufficientData below
    ``min_samples`` or without a value."""
    bounds = (lower, upper)
    threshold = maximum if maximum is not None else minimum
    if samples is None or samples < min_samples:
        seen = 0 if samples is None else int(samples)
        return result(check, Verdict.INSUFFICIENT_DATA, f"{what}: {seen} observations, need {min_samples}", value, threshold, samples)
    if value is None or not math.isfinite(value):
        return result(check, Verdict.INSUFFICIENT_DATA, f"{what}: no value", None, threshold, samples)
    confidence = f"at level {level:.2g}"
    if minimum is not None and value < minimum:
        if upper < minimum:
            return result(check, Verdict.FAIL, f"{what} {value:.4g} is below the minimum {minimum:g} (at most {upper:.4g}, "
                                               f"{confidence})", value, minimum, samples, bounds)
        return result(check, Verdict.PASS, f"{what} {value:.4g} is below the minimum {minimum:g}, but not surely: it may be "
                                           f"up to {upper:.4g} ({confidence})", value, minimum, samples, bounds)
    if maximum is not None and value > maximum:
        if lower > maximum:
            return result(check, Verdict.FAIL, f"{what} {value:.4g} is above the maximum {maximum:g} (at least {lower:.4g}, "
                                               f"{confidence})", value, maximum, samples, bounds)
        return result(check, Verdict.PASS, f"{what} {value:.4g} is above the maximum {maximum:g}, but not surely: it may be "
                                           f"as low as {lower:.4g} ({confidence})", value, maximum, samples, bounds)
    return result(check, Verdict.PASS, f"{what} {value:.4g} is within bounds", value, threshold, samples, bounds)
