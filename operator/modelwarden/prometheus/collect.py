"""Fetch what a DriftPolicy needs from a MetricProvider, then evaluate it (the I/O half).

``plan_queries`` (pure) lists the PromQL per part; ``collect`` runs them and decodes the results
into :class:`modelwarden.analysis.judge.Observations`; ``evaluate`` = collect +
``judge``, timed as query (HTTP round trips, including the backend's work), parse
(JSON to arrays) and statistics.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from modelwarden.analysis.judge import EvaluationReport, judge
from modelwarden.analysis.observations import (
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
)
from modelwarden.analysis.histograms import BucketMatrix, SampleLayout
from modelwarden.api.checks import PerformanceMetric
from modelwarden.api.driftpolicy import DriftPolicySpec
from modelwarden.api.duration import format_duration
from modelwarden.contract.metrics import ACTUAL, CLASS, FEATURE, LE, PAIRED_PREDICTED, PREDICTED
from modelwarden.prometheus import queries
from modelwarden.prometheus.errors import MetricsError, NoData
from modelwarden.prometheus.provider import InstantVector, MetricProvider
from modelwarden.prometheus.scope import foreign_selectors


@dataclass(frozen=True)
class Target:
    """The judged model: its metric labels and the version each track serves (if known)."""

    model: str
    namespace: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)  # track -> version; absent: any version
    namespace_label: str | None = None
    restrict_custom_queries: bool = False  # custom checks may only select series of `namespace` (the operator's default)

    def selector(self, track: str, any_version: bool = False) -> queries.Selector:
        version = None if any_version else self.versions.get(track)
        return queries.Selector(self.model, track, version, self.namespace, self.namespace_label)


@dataclass(frozen=True)
class Timings:
    """Where one evaluation's time went, in seconds."""

    query: float
    parse: float
    statistics: float

    @property
    def total(self) -> float:
        return self.query + self.parse + self.statistics


@dataclass(frozen=True)
class TimedReport:
    report: EvaluationReport
    timings: Timings


def plan_queries(spec: DriftPolicySpec, target: Target) -> dict[Part, str]:
    """PromQL per observation part (the current features, the reference features, a custom check, …)."""
    track = spec.track.value
    window = spec.window
    feedback_window = spec.feedback_window or window
    current = target.selector(track)
    planned: dict[Part, str] = {}
    metrics = {check.metric for check in spec.performance}
    comparison = set(spec.comparison.metrics) if spec.comparison else set()

    quantities = ["predictions"]
    if PerformanceMetric.ERROR_RATE in metrics or "error_rate" in comparison:
        quantities += ["requests", "errors"]
    if spec.outliers is not None:
        quantities.append("outliers")
    if metrics & REGRESSION_METRICS:
        quantities += ["squared_error_sum", "absolute_error_sum", "feedback_observations", "fourth_power_error_sum"]
    planned[WindowPart(Side.CURRENT, Kind.COUNTERS)] = queries.counters(current, window, quantities, feedback_window)
    if metrics & CLASSIFICATION_METRICS or "accuracy" in comparison:
        planned[WindowPart(Side.CURRENT, Kind.CONFUSION)] = queries.confusion(current, feedback_window)
    if metrics & set(LATENCY_QUANTILES):
        planned[WindowPart(Side.CURRENT, Kind.LATENCY)] = queries.latency_buckets(current, window)
    if spec.agreement is not None:
        planned[WindowPart(Side.CURRENT, Kind.PAIRED)] = queries.paired(current, window, target.versions.get("stable"))
    if metrics & ESTIMATED_METRICS:  # the score histogram over the window (the same query drift's predictions use)
        planned[WindowPart(Side.CURRENT, Kind.PREDICTION)] = queries.prediction_buckets(current, window)

    if spec.drift is not None and spec.reference is not None:
        reference = spec.reference
        parts = [(Kind.FEATURES, queries.feature_buckets)]
        if spec.drift.predictions:  # scores, and the predicted classes for a classifier without scores
            parts += [(Kind.PREDICTION, queries.prediction_buckets), (Kind.CLASSES, queries.predicted_classes)]
        for kind, build in parts:
            planned[WindowPart(Side.CURRENT, kind)] = build(current, window)
            if reference.track is not None:
                planned[WindowPart(Side.REFERENCE, kind)] = build(target.selector(reference.track.value), window)
            elif reference.offset is not None:
                planned[WindowPart(Side.REFERENCE, kind)] = build(target.selector(track, any_version=True), window, reference.offset)

    if spec.comparison is not None:
        baseline = target.selector(spec.comparison.track.value)
        baseline_quantities = ["requests", "errors"] if "error_rate" in comparison else ["predictions"]
        planned[WindowPart(Side.BASELINE, Kind.COUNTERS)] = queries.counters(baseline, window, baseline_quantities)
        if "accuracy" in comparison:
            planned[WindowPart(Side.BASELINE, Kind.CONFUSION)] = queries.confusion(baseline, feedback_window)

    for check in spec.checks:
        try:
            rendered = queries.render_template(check.query, current, window)
            if target.restrict_custom_queries:
                _within_namespace(rendered, target)
            planned[CustomPart(check.name)] = rendered
        except ValueError as exc:
            planned[CustomPart(check.name)] = _Invalid(str(exc))
    return planned


def _within_namespace(promql: str, target: Target) -> None:
    """Refuse (ValueError) a custom query that could read another namespace's series."""
    label = target.namespace_label
    if not label:
        raise ValueError("custom checks are restricted to the policy's namespace, but no namespace label is configured "
                         "(the operator's --namespace-label, or spec.prometheus.namespaceLabel)")
    outside = foreign_selectors(promql, target.namespace, label)
    if outside:
        raise ValueError(f"custom checks may only read the policy's namespace: {outside[0]} has no {label}=\"{target.namespace}\" "
                         "matcher (add {{ selector }} or " + label + '="{{ namespace }}" to every selector)')


class _Invalid(str):
    """A query that could not be built; reported as the check's Error without being sent."""


def collect(
    spec: DriftPolicySpec,
    target: Target,
    provider: MetricProvider,
    now: datetime,
    profile_reference: Reference | None = None,
) -> tuple[Observations, float, float]:
    """Run the planned queries at ``now``; returns (observations, query seconds, parse seconds).

    Queries run one after another: the feature histograms dominate and decoding them is
    CPU-bound, so threads would not shorten an evaluation, and the operator already evaluates
    many policies concurrently.
    """
    fetched: dict[Part, Any] = {}
    failures: dict[Part, str] = {}
    query_seconds = parse_seconds = 0.0
    for part, promql in plan_queries(spec, target).items():
        if isinstance(promql, _Invalid):
            failures[part] = f"invalid query template: {promql}"
            continue
        try:
            vector = provider.query(promql, at=now)
        except NoData:
            fetched[part] = None
            continue
        except MetricsError as exc:
            failures[part] = f"{type(exc).__name__}: {exc}"
            continue
        started = time.perf_counter()
        try:
            fetched[part] = _single_value(vector) if isinstance(part, CustomPart) else _DECODERS[part.kind](vector)
        except InvalidData as exc:
            failures[part] = f"invalid data from Prometheus: {exc}"
        except (KeyError, ValueError) as exc:
            failures[part] = f"unexpected result shape: {exc}"
        parse_seconds += vector.decode_seconds + time.perf_counter() - started
        query_seconds += vector.fetch_seconds

    def window(side: Side) -> TrackWindow:
        return TrackWindow(
            features=fetched.get(WindowPart(side, Kind.FEATURES)),
            prediction=fetched.get(WindowPart(side, Kind.PREDICTION)),
            latency=fetched.get(WindowPart(side, Kind.LATENCY)),
            confusion=fetched.get(WindowPart(side, Kind.CONFUSION)),
            counters=fetched.get(WindowPart(side, Kind.COUNTERS)),
            classes=fetched.get(WindowPart(side, Kind.CLASSES)),
            paired=fetched.get(WindowPart(side, Kind.PAIRED)),
        )

    observations = Observations(
        current=window(Side.CURRENT),
        reference=_reference(spec, fetched, failures, profile_reference),
        baseline=window(Side.BASELINE) if spec.comparison is not None else None,
        custom={part.name: value for part, value in fetched.items() if isinstance(part, CustomPart)},
        failures=failures,
    )
    return observations, query_seconds, parse_seconds


def evaluate(
    spec: DriftPolicySpec,
    target: Target,
    provider: MetricProvider,
    now: datetime,
    profile_reference: Reference | None = None,
    level: float | None = None,
) -> TimedReport:
    """Collect and evaluate once (``level``: as for judge); the Evaluation's duration covers all three phases."""
    observations, query_seconds, parse_seconds = collect(spec, target, provider, now, profile_reference)
    report = judge(spec, observations, now, level)
    timings = Timings(query_seconds, parse_seconds, report.statistics_seconds)
    evaluation = report.evaluation.model_copy(update={"duration_seconds": round(timings.total, 6)})
    return TimedReport(replace(report, evaluation=evaluation), timings)


def _reference(spec: DriftPolicySpec, fetched: dict[Part, Any], failures: dict[Part, str], profile: Reference | None) -> Reference | None:
    """Drift's reference; a profileRef's profile also without drift when an estimated_* check reads its calibration."""
    reference = spec.reference
    if reference is None:
        return None
    if spec.drift is None:
        estimated = any(check.metric in ESTIMATED_METRICS for check in spec.performance)
        return profile if estimated and reference.profile_ref is not None else None
    if reference.profile_ref is not None:
        if profile is None:
            failures[WindowPart(Side.REFERENCE, Kind.FEATURES)] = failures[WindowPart(Side.REFERENCE, Kind.PREDICTION)] = \
                "the reference profile was not provided"
        return profile
    if reference.track is not None:
        description = f"the {reference.track.value} track over the same window"
    else:
        assert reference.offset is not None
        description = f"the same track {format_duration(reference.offset)} earlier"
    return Reference(
        description,
        fetched.get(WindowPart(Side.REFERENCE, Kind.FEATURES)) or BucketMatrix.empty(),
        fetched.get(WindowPart(Side.REFERENCE, Kind.PREDICTION)) or BucketMatrix.empty(),
        classes=fetched.get(WindowPart(Side.REFERENCE, Kind.CLASSES)),
    )


class InvalidData(ValueError):
    """Values no healthy series can have (NaN, infinite, negative counts, cumulative buckets that
    fall): the checks that need them are an Error naming the series, never a verdict to act on."""


def _series(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _counts(vector: InstantVector) -> np.ndarray:
    """The values, once each is a finite non-negative count (else InvalidData naming the series)."""
    values = np.asarray(vector.values, dtype=float)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        index = int(np.argmax(bad))
        raise InvalidData(f"series {_series(vector.labels[index])} has the value {values[index]!r}; counts are finite and >= 0")
    return values


@dataclass(frozen=True)
class _HistogramLayout:
    """What a histogram vector's labels alone decide: its BucketMatrix layout and the sort by
    (name, le) that the cumulative check walks."""

    samples: SampleLayout
    order: np.ndarray
    same: np.ndarray  # order[i] and order[i + 1] belong to the same histogram

    @classmethod
    def of(cls, vector: InstantVector, name_label: str | None, name: str) -> "_HistogramLayout":
        names = [labels.get(name_label, "") for labels in vector.labels] if name_label else [name] * len(vector.labels)
        le = np.array([float(labels[LE]) for labels in vector.labels])
        _, groups = np.unique(np.asarray(names, dtype=object), return_inverse=True)
        order = np.lexsort((le, groups))
        return cls(SampleLayout(names, le), order, groups[order][1:] == groups[order][:-1])


# Layouts of label lists marked as shared (InstantVector.layout: a backtest's range answer), kept
# while that answer is.
_LAYOUTS: weakref.WeakKeyDictionary[object, dict[tuple[str | None, str], _HistogramLayout]] = weakref.WeakKeyDictionary()


def _layout(vector: InstantVector, name_label: str | None, name: str) -> _HistogramLayout:
    if vector.layout is None:
        return _HistogramLayout.of(vector, name_label, name)
    known = _LAYOUTS.setdefault(vector.layout, {})
    key = (name_label, name)
    if key not in known:
        known[key] = _HistogramLayout.of(vector, name_label, name)
    return known[key]


def _histograms(vector: InstantVector, name_label: str | None = None, name: str = "") -> BucketMatrix:
    """One row per value of ``name_label`` (features), or a single row called ``name``.

    Cumulative buckets never fall as ``le`` grows; a fall beyond rounding (0.1 % or one
    observation) means the data is inconsistent, not that the distribution changed.
    """
    values = _counts(vector)
    if not len(values):
        return BucketMatrix.empty()
    layout = _layout(vector, name_label, name)
    if len(values) > 1:
        before, after = values[layout.order][:-1], values[layout.order][1:]
        falls = layout.same & (before - after > np.maximum(1.0, 1e-3 * before))
        if falls.any():
            at = int(np.argmax(falls))
            lower, upper = vector.labels[layout.order[at]], vector.labels[layout.order[at + 1]]
            raise InvalidData(f"cumulative bucket {_series(upper)} = {after[at]:g} is below {_series(lower)} = {before[at]:g}")
    return layout.samples.matrix(values)


def _quantities(vector: InstantVector, key: Callable[[dict[str, str]], Any]) -> dict[Any, float]:
    return {key(labels): float(v) for labels, v in zip(vector.labels, _counts(vector))}


def _single_value(vector: InstantVector) -> float:
    if len(vector.labels) != 1:
        raise ValueError(f"a custom check must return one series, got {len(vector.labels)}")
    return float(vector.values[0])


_DECODERS: dict[Kind, Callable[[InstantVector], Any]] = {
    Kind.FEATURES: lambda vector: _histograms(vector, name_label=FEATURE),
    Kind.PREDICTION: lambda vector: _histograms(vector, name="prediction"),
    Kind.LATENCY: lambda vector: _histograms(vector, name="latency"),
    Kind.COUNTERS: lambda vector: _quantities(vector, lambda labels: labels[queries.QUANTITY_LABEL]),
    Kind.CONFUSION: lambda vector: _quantities(vector, lambda labels: (labels[PREDICTED], labels[ACTUAL])),
    Kind.CLASSES: lambda vector: _quantities(vector, lambda labels: labels[CLASS]),
    Kind.PAIRED: lambda vector: _quantities(vector, lambda labels: (labels[PREDICTED], labels[PAIRED_PREDICTED])),
}
