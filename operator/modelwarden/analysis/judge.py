"""Judge a DriftPolicy on already-fetched data: pure, no I/O, deterministic given ``now``.

The DriftPolicy controller (and ``modelwarden evaluate``) fetch an :class:`Observations` with
``modelwarden.prometheus.collect`` and call :func:`judge`. A fetch that failed arrives as
an entry in ``Observations.failures`` and turns exactly the checks that needed it into Error.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from modelwarden.analysis import ab
from modelwarden.analysis import drift as drift_analysis
from modelwarden.analysis.bounds import bounded_by_confidence, budgeted_checks, clopper_pearson, f1_of_jaccard, side_level
from modelwarden.analysis.estimated import EdgeMismatch, ScoreCalibration, Uncalibrated
from modelwarden.analysis.histograms import BucketMatrix, align, class_histograms, select_names
from modelwarden.analysis.quality import (
    ConfusionMatrix,
    RegressionErrors,
    averaging,
    class_proportion,
    histogram_quantile,
    rate,
    two_proportion_test,
)
from modelwarden.analysis.observations import (  # noqa: F401  (re-exported: the tests build observations from here)
    CLASSIFICATION_METRICS,
    ESTIMATED_METRICS,
    LATENCY_QUANTILES,
    REGRESSION_METRICS,
    CustomPart,
    Kind,
    Observations,
    Part,
    Reference,
    Side,
    TrackWindow,
    WindowPart,
    failed,
    part_of,
    single_histogram,
)
from modelwarden.analysis.verdicts import aggregate, bounded, result
from modelwarden.api.checks import DEFAULT_MIN_EFFECT, P_VALUE_METHODS, ComparisonSpec, Correction, PerformanceCheck, PerformanceMetric
from modelwarden.api.driftpolicy import CheckResult, DriftPolicySpec, Evaluation, Verdict
from modelwarden.contract.metrics import FEEDBACK_FOURTH_POWER_ERROR_SUM as FOURTH_POWER_SERIES
from modelwarden.contract.metrics import PAIRED_PREDICTIONS as PAIRED_SERIES
from modelwarden.contract.metrics import PREDICTION_OUTLIERS as OUTLIER_SERIES

@dataclass(frozen=True)
class EvaluationReport:
    """The status-ready Evaluation plus per-feature numbers (for the CLI and operator metrics)."""

    evaluation: Evaluation
    drift: list[drift_analysis.FeatureDrift]
    statistics_seconds: float


def judge(spec: DriftPolicySpec, observations: Observations, now: datetime, level: float | None = None) -> EvaluationReport:
    """Run every check of the policy on the observations and aggregate the verdict.

    ``level`` is this evaluation's share of ``spec.alpha`` (planning.budget.evaluation_level); its
    statistical checks split it evenly (analysis.bounds.budgeted_checks). None: a single look,
    the whole alpha."""
    started = time.perf_counter()
    per_check = (spec.alpha if level is None else level) / budgeted_checks(spec)
    results: list[CheckResult] = []
    drifts: list[drift_analysis.FeatureDrift] = []
    if spec.drift is not None:
        for check, report in _drift_checks(spec, observations, per_check):
            results.append(check)
            if report is not None:
                drifts.append(report)
    results.extend(_performance_check(check, spec.min_samples, observations, per_check) for check in spec.performance)
    if spec.comparison is not None:
        results.extend(_comparison_checks(spec.comparison, spec.min_samples, observations, per_check))
    if spec.outliers is not None:
        results.append(_outlier_check(spec.outliers.max_rate, spec.min_samples, observations, per_check))
    if spec.agreement is not None:
        results.append(_agreement_check(spec.agreement.min_rate, spec.min_samples, observations, per_check))
    results.extend(_custom_check(check.name, check.min, check.max, observations) for check in spec.checks)
    current_counters = observations.current.counters or {}
    evaluation = Evaluation(
        time=now,
        verdict=aggregate(results),
        level=spec.alpha if level is None else level,
        samples=_count(current_counters.get("predictions")),
        results=results,
    )
    return EvaluationReport(evaluation, drifts, time.perf_counter() - started)


def _drift_checks(spec: DriftPolicySpec, observations: Observations, level: float,
                  ) -> list[tuple[CheckResult, drift_analysis.FeatureDrift | None]]:
    """Features and prediction: one family of tests at ``level`` (a p-value method's threshold
    can only lower it) with an effect floor; a distance method keeps its own threshold."""
    assert spec.drift is not None
    policy = spec.drift
    p_values = policy.method.value in P_VALUE_METHODS
    threshold = (min(policy.threshold, level) if policy.threshold is not None else level) if p_values else policy.threshold
    floor = (policy.min_effect if policy.min_effect is not None else DEFAULT_MIN_EFFECT) if p_values else 0.0
    reference = observations.reference
    checks: list[tuple[CheckResult, drift_analysis.FeatureDrift | None]] = []
    parts = [("drift/features", Kind.FEATURES)] + ([("drift/prediction", Kind.PREDICTION)] if policy.predictions else [])
    tested: list[tuple[drift_analysis.FeatureDrift, float | None]] = []
    for name, kind in parts:
        failure = observations.failures.get(WindowPart(Side.CURRENT, kind)) or observations.failures.get(WindowPart(Side.REFERENCE, kind))
        if failure or reference is None:
            checks.append((failed(name, failure or "no reference"), None))
            continue
        current: BucketMatrix = observations.current.part(kind) or BucketMatrix.empty()
        baseline: BucketMatrix = reference.features if kind is Kind.FEATURES else reference.prediction
        if kind is Kind.PREDICTION and not current.names and not baseline.names and (observations.current.classes or reference.classes):
            # A classifier without scores: its predicted classes are the prediction histogram.
            failure = observations.failures.get(WindowPart(Side.CURRENT, Kind.CLASSES)) or observations.failures.get(
                WindowPart(Side.REFERENCE, Kind.CLASSES))
            if failure:
                checks.append((failed(name, failure), None))
                continue
            baseline, current = class_histograms(reference.classes or {}, observations.current.classes or {})
            histograms = align(baseline, current, list(current.names))
            report = drift_analysis.detect(name, histograms, policy.method, threshold, Correction.NONE, spec.min_samples,
                                           np.ones(1, dtype=bool), policy.warn_threshold, floor)
            tested.append((report, None))
            continue
        if kind is Kind.FEATURES and policy.features == ["*"] and current.names == baseline.names:
            names = list(current.names)  # the common case: no set/sort of a thousand names per evaluation
            share = policy.drift_share
        elif kind is Kind.FEATURES:
            names = select_names({*current.names, *baseline.names}, policy.features)
            share = policy.drift_share
        else:
            names = sorted({*current.names, *baseline.names})
            share = None  # a drifted prediction fails on its own
        histograms = align(baseline, current, names)
        categorical = np.fromiter((feature in reference.categorical for feature in names), bool, len(names)) if reference.categorical else None
        report = drift_analysis.detect(name, histograms, policy.method, threshold, Correction.NONE, spec.min_samples, categorical,
                                       policy.warn_threshold, floor)
        tested.append((report, share))
    # Features and prediction are one family of tests: one correction over all of them.
    joint = drift_analysis.adjust_together([report for report, _ in tested], policy.correction)
    for report, (_, share) in zip(joint, tested):
        check = drift_analysis.verdict(report, share, spec.min_samples, policy.correction)
        checks.append((check.model_copy(update={"message": f"{check.message} [vs {reference.description}]"}), report))
    order = {name: i for i, (name, _) in enumerate(parts)}
    return sorted(checks, key=lambda pair: order[pair[0].check])


def _performance_check(check: PerformanceCheck, min_samples: int, observations: Observations, level: float) -> CheckResult:
    metric = check.metric
    name = f"performance/{metric.value}" + (f"/{check.class_label}" if check.class_label else "")
    what = metric.value.replace("_", " ") + (f" of class {check.class_label}" if check.class_label else "")
    if metric in ESTIMATED_METRICS:
        return _estimated_check(check, name, what, min_samples, observations)
    if metric in CLASSIFICATION_METRICS:
        pairs, failure = part_of(observations, Side.CURRENT, Kind.CONFUSION)
        if failure:
            return failed(name, failure)
        matrix = ConfusionMatrix.from_pairs(pairs or {})
        level = side_level(level, check.min, check.max)
        if metric is PerformanceMetric.ACCURACY:
            lower, upper = clopper_pearson(float(np.trace(matrix.counts)), matrix.total, level)
            return bounded_by_confidence(name, matrix.accuracy(), lower, upper, check.min, check.max, matrix.total, min_samples, what, level)
        classes: list[str | None] = [check.class_label]
        if check.class_label is None:
            try:
                how = averaging(matrix.classes, *_profile_classes(observations.reference))
            except ValueError as exc:
                return failed(name, f"{what}: {exc}")
            what += f" of class {how.positive} (the positive class)" if how.positive is not None else f" ({how.why})"
            classes = [how.positive] if how.positive is not None else list(matrix.classes)
        bounds = [clopper_pearson(*class_proportion(matrix, metric.value, label), level / len(classes)) for label in classes if label]
        if metric is PerformanceMetric.F1:
            bounds = [(f1_of_jaccard(low), f1_of_jaccard(high)) for low, high in bounds]
        lower, upper = (float(np.mean(side)) for side in zip(*bounds)) if bounds else (0.0, 1.0)
        if not classes:  # a multiclass model without feedback in the window: nothing to score
            value = None
        else:
            value = matrix.score(metric.value, None if check.class_label is None and len(classes) > 1 else classes[0])
        return bounded_by_confidence(name, value, lower, upper, check.min, check.max, matrix.total, min_samples, what, level)
    if metric in LATENCY_QUANTILES:
        latency, failure = part_of(observations, Side.CURRENT, Kind.LATENCY)
        if failure:
            return failed(name, failure)
        le, counts = single_histogram(latency)
        value = histogram_quantile(LATENCY_QUANTILES[metric], le, counts) if counts.size else None
        return bounded(name, value, check.min, check.max, float(counts.sum()), min_samples, what + " (seconds)")
    counters, failure = part_of(observations, Side.CURRENT, Kind.COUNTERS)
    if failure:
        return failed(name, failure)
    counters = counters or {}
    if metric in REGRESSION_METRICS:
        errors = RegressionErrors(
            counters.get("squared_error_sum", 0.0), counters.get("absolute_error_sum", 0.0), counters.get("feedback_observations", 0.0),
            counters.get("fourth_power_error_sum"),
        )
        value, side = errors.metric(metric.value), side_level(level, check.min, check.max)
        bounds = errors.bounds(metric.value, side)
        if bounds is None and value is not None and errors.observations >= min_samples:
            why = ("it needs 2 observations" if errors.observations < 2 else
                   f"no finite {FOURTH_POWER_SERIES} consistent with the squared errors (servers older than this operator?)")
            return result(name, Verdict.INSUFFICIENT_DATA, f"{what} {value:.4g} has no confidence bound: {why}", value,
                          check.max if check.max is not None else check.min, errors.observations)
        lower, upper = bounds or (0.0, math.inf)
        return bounded_by_confidence(name, value, lower, upper, check.min, check.max, errors.observations, min_samples, what, level)
    # error rate: failed requests over all requests (successful requests are the timed ones)
    errors = max(counters.get("errors", 0.0), 0.0)
    requests = counters.get("requests", 0.0) + errors
    lower, upper = clopper_pearson(errors, requests, side_level(level, check.min, check.max))
    return bounded_by_confidence(name, rate(errors, requests), lower, upper, check.min, check.max, requests, min_samples, what, level)


def _profile_classes(reference: Reference | None) -> tuple[list[str] | None, str | None]:
    """A classifier profile's classes and positive class, when the policy's reference has one."""
    prediction = reference.profile.prediction if reference is not None and reference.profile is not None else None
    if prediction is None or prediction.task != "classification" or not prediction.levels:
        return None, None
    return list(prediction.levels), prediction.positive_class


def _estimated_check(check: PerformanceCheck, name: str, what: str, min_samples: int, observations: Observations) -> CheckResult:
    """A metric estimated from the current score histogram and the profile's calibration
    (analysis.estimated). Error, never a verdict, when the profile cannot back an estimate: no
    profile, no calibration, scores not calibrated enough on the profile's own rows (the metric,
    precision or the negative predictive value off by more than maxCalibrationError), or live
    buckets that are not the profile's. Fewer than ``min_samples`` predictions: InsufficientData."""
    reference = observations.reference
    if reference is None or reference.profile is None:
        return failed(name, f"{what}: the reference profile was not provided (estimated metrics need the profile of "
                             "spec.reference.profileRef, or `modelwarden evaluate --profile`)")
    try:
        calibration = ScoreCalibration.from_profile(reference.profile)
    except Uncalibrated as exc:
        return failed(name, f"{what}: {exc}")
    base = check.metric.value.removeprefix("estimated_")
    tolerance = check.calibration_tolerance
    refusals = calibration.refusals(base, tolerance)
    if refusals:
        gaps = "; ".join(
            f"{gap.metric} is undefined on them" if gap.difference is None else
            f"{gap.metric} {gap.expected:.4f} from the scores, {gap.realised:.4f} from the labels "
            f"(|difference| {gap.difference:.4f} > maxCalibrationError {tolerance:g})"
            for gap in refusals
        )
        return failed(name, f"{what}: refused, the model's scores are not calibrated enough on the profile's "
                             f"{calibration.reference_rows} rows: {gaps}")
    prediction, failure = part_of(observations, Side.CURRENT, Kind.PREDICTION)
    if failure:
        return failed(name, failure)
    le, counts = single_histogram(prediction)
    if counts.size:
        try:
            calibration.check_edges(le)
        except EdgeMismatch as exc:
            return failed(name, f"{what}: {exc}")
    value = calibration.estimate(counts).metric(base) if counts.size else None
    return bounded(name, value, check.min, check.max, float(counts.sum()), min_samples, what)


def _outlier_check(max_rate: float, min_samples: int, observations: Observations, level: float) -> CheckResult:
    """The outlier rate. A missing outlier series is InsufficientData, never a rate of 0: a server
    without a reference profile does not export the counter at all, while one with a profile
    exports it from the start (0 until an outlier), so only a present series is evidence."""
    name = "outliers/rate"
    counters, failure = part_of(observations, Side.CURRENT, Kind.COUNTERS)
    if failure:
        return failed(name, failure)
    counters = counters or {}
    predictions = counters.get("predictions")
    if "outliers" not in counters:
        if predictions is None:
            message = "outlier rate: neither predictions nor an outlier count were exported for this track in the window"
        else:
            message = (
                f"outlier rate: the outlier count is not exported (no {OUTLIER_SERIES} series beside "
                f"{int(predictions)} predictions; e.g. the model is served without a reference profile)"
            )
        return result(name, Verdict.INSUFFICIENT_DATA, message, None, max_rate, predictions)
    lower, upper = clopper_pearson(max(counters["outliers"], 0.0), predictions or 0.0, level)
    return bounded_by_confidence(
        name, rate(counters["outliers"], predictions or 0.0), lower, upper, None, max_rate, predictions, min_samples, "outlier rate", level
    )


def _agreement_check(min_rate: float, min_samples: int, observations: Observations, level: float) -> CheckResult:
    """The share of rows on which the served and the paired (stable's) model chose the same class.
    No paired series is InsufficientData: the shadow is not paired, or the model is no classifier."""
    name = "agreement/rate"
    pairs, failure = part_of(observations, Side.CURRENT, Kind.PAIRED)
    if failure:
        return failed(name, failure)
    if not pairs:
        return result(name, Verdict.INSUFFICIENT_DATA, f"agreement: no paired predictions ({PAIRED_SERIES}) for this "
                      "track in the window: serve it with pairWithStable (candidates are), a classifier", None, min_rate, 0)
    total = float(sum(max(n, 0.0) for n in pairs.values()))
    agreed = float(sum(max(n, 0.0) for (mine, theirs), n in pairs.items() if mine == theirs))
    lower, upper = clopper_pearson(agreed, total, level)
    checked = bounded_by_confidence(name, rate(agreed, total), lower, upper, min_rate, None, total, min_samples,
                                    "agreement with the stable's model", level)
    disagreements = sorted(((n, pair) for pair, n in pairs.items() if pair[0] != pair[1] and n > 0), reverse=True)
    if disagreements and checked.verdict is not Verdict.INSUFFICIENT_DATA:
        n, (mine, theirs) = disagreements[0]
        checked = checked.model_copy(update={"message": f"{checked.message}; most often {mine!r} where stable said "
                                                        f"{theirs!r} ({int(n)} rows)"})
    return checked


def _comparison_checks(comparison: ComparisonSpec, min_samples: int, observations: Observations, level: float) -> list[CheckResult]:
    """One-sided two-proportion tests at the lower of comparison.alpha and the budget's level (the
    gate), each with the effect's two-sided interval at that level (the A/B winner, analysis.ab)."""
    alpha = min(comparison.alpha, level)
    checks = []
    for metric in comparison.metrics:
        name = f"comparison/{metric}"
        try:
            candidate = _successes(metric, observations, Side.CURRENT)
            baseline = _successes(metric, observations, Side.BASELINE)
        except _Missing as missing:
            checks.append(failed(name, str(missing)))
            continue
        fewest = min(candidate[1], baseline[1])
        if fewest < min_samples:
            message = f"{metric}: {int(fewest)} observations on the smaller track, need {min_samples}"
            checks.append(result(name, Verdict.INSUFFICIENT_DATA, message, None, alpha, fewest))
            continue
        test = two_proportion_test(*candidate, *baseline, higher_is_worse=metric == "error_rate")
        worse = test.p_value < alpha
        interval = ab.difference(*candidate, *baseline, alpha)
        message = (
            f"{metric} {test.candidate:.4g} vs {comparison.track.value} {test.baseline:.4g}: "
            f"z={test.z:.3g}, one-sided p={test.p_value:.3g} {'<' if worse else '>='} {alpha:.3g}"
            + (" (significantly worse)" if worse else "")
            + f"; difference {interval.effect:+.3g} in [{interval.lower:+.3g}, {interval.upper:+.3g}]"
        )
        checked = result(name, Verdict.FAIL if worse else Verdict.PASS, message, test.p_value, alpha, fewest,
                         (interval.lower, interval.upper))
        checks.append(checked.model_copy(update={"effect": interval.effect}))
    return checks


class _Missing(Exception):
    """A comparison input could not be fetched."""


def _successes(metric: str, observations: Observations, side: Side) -> tuple[float, float]:
    """(events, trials) for a proportion: correct predictions for accuracy, failed requests for error_rate."""
    if metric == "accuracy":
        pairs, failure = part_of(observations, side, Kind.CONFUSION)
        if failure:
            raise _Missing(failure)
        matrix = ConfusionMatrix.from_pairs(pairs or {})
        return float(np.trace(matrix.counts)), matrix.total
    counters, failure = part_of(observations, side, Kind.COUNTERS)
    if failure:
        raise _Missing(failure)
    counters = counters or {}
    errors = max(counters.get("errors", 0.0), 0.0)
    return errors, max(counters.get("requests", 0.0), 0.0) + errors


def _custom_check(name: str, minimum: float | None, maximum: float | None, observations: Observations) -> CheckResult:
    check = f"custom/{name}"
    failure = observations.failures.get(CustomPart(name))
    if failure:
        return failed(check, failure)
    value = observations.custom.get(name)
    if value is None or not math.isfinite(value):
        threshold = maximum if maximum is not None else minimum
        return result(check, Verdict.INSUFFICIENT_DATA, f"{name}: the query returned no finite value", None, threshold)
    return bounded(check, value, minimum, maximum, None, None, name)


def _count(value: float | None) -> int | None:
    return int(value) if value is not None and math.isfinite(value) else None
