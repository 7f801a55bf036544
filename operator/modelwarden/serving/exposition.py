"""The writer's side of the metrics contract: one scrape of a monitor as Prometheus metric families.

``ModelMonitor`` (serving.monitor) copies its counts under its lock into a :class:`Scrape`;
:func:`metric_families` turns that into the families and samples the operator's queries read,
named and labelled by :mod:`modelwarden.contract.metrics`. Keeping the exposition apart from the
recording keeps every metric and label name of the server in this one module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client.metrics_core import Metric

from modelwarden.contract import metrics
from modelwarden.serving.buckets import Histograms


@dataclass(frozen=True)
class Scrape:
    """What one scrape exports: the monitor's layout and its counts at that moment (copies)."""

    labels: dict[str, str]  # model, version, track of this monitor
    task: str
    feature_names: Sequence[str]
    columns: Histograms  # the features, then prediction_value when has_value
    has_value: bool
    latency_le: Sequence[str]
    predictions: int
    outliers: int
    errors: dict[str, int]  # by reason: every rejected or failed request
    client_errors: dict[str, int]  # by reason: answered 4xx
    server_errors: dict[str, int]  # by reason: answered 5xx
    rejected_values: dict[tuple[str, str], int]  # by (input, reason)
    classes: dict[str, int]  # by predicted class
    confusion: dict[tuple[str, str, str, str], int]  # (version, track, predicted, actual)
    regression: dict[tuple[str, str], tuple[float, ...]]  # (version, track) -> the REGRESSION_FEEDBACK values, in order
    column_counts: np.ndarray
    column_sums: np.ndarray
    latency_counts: np.ndarray
    latency_sum: float
    profile_loaded: bool = True  # False: no reference profile, so no feature/prediction histograms nor outliers


def add_histogram(
    metric: Metric, labels: dict[str, str], le: Sequence[str], cumulative: np.ndarray, total: float
) -> None:
    """Add one labelled histogram; unlike prometheus_client's family, keeps _sum/_count for negative edges."""
    for bound, value in zip(le, cumulative.tolist()):
        metric.add_sample(metric.name + metrics.BUCKET, {**labels, metrics.LE: bound}, float(value))
    metric.add_sample(metric.name + metrics.COUNT, labels, float(cumulative[-1]))
    metric.add_sample(metric.name + metrics.SUM, labels, float(total))


def counter(name: str, documentation: str) -> Metric:
    """A family for the exact sample ``name``.

    Names ending in ``_total`` are counters. The contract's ``…_error_sum`` series only ever grow
    too, but the text format would rename a counter to ``…_sum_total``, so they are untyped.
    """
    if name.endswith("_total"):
        return Metric(name.removesuffix("_total"), documentation, "counter")
    return Metric(name, documentation, "unknown")


def single_counter(sample_name: str, documentation: str, labels: dict[str, str], value: float) -> Metric:
    metric = counter(sample_name, documentation)
    metric.add_sample(sample_name, labels, float(value))
    return metric


_REGRESSION_DOCUMENTATION = (
    "Sum of squared errors from feedback.",
    "Sum of absolute errors from feedback.",
    "Regression feedback observations.",
    "Sum of fourth powers of the errors from feedback (the spread behind an MSE's confidence bound).",
)


def feedback_cache_families(labels: dict[str, str], evictions: int, held_bytes: int) -> Iterator[Metric]:
    """The model server's feedback cache (serving.service.FeedbackCache): evictions and its size."""
    yield single_counter(
        metrics.FEEDBACK_CACHE_EVICTIONS, "Request ids dropped from the feedback cache to stay within its bounds.",
        labels, evictions,
    )
    size = Metric(metrics.FEEDBACK_CACHE_BYTES, "Estimated bytes the feedback cache holds.", "gauge")
    size.add_sample(metrics.FEEDBACK_CACHE_BYTES, labels, float(held_bytes))
    yield size


def metric_families(scrape: Scrape) -> Iterator[Metric]:
    """Every family of the contract for one scrape, in a fixed order."""
    labels = scrape.labels
    yield single_counter(metrics.PREDICTIONS, "Predictions made (rows, not requests).", labels, scrape.predictions)
    errors = counter(metrics.PREDICTION_ERRORS, "Rejected or failed requests by reason.")
    for reason, n in scrape.errors.items():
        errors.add_sample(metrics.PREDICTION_ERRORS, {**labels, metrics.REASON: reason}, float(n))
    yield errors
    for name, documentation, by_reason in (
        (metrics.CLIENT_ERRORS, "Requests answered with a client error (4xx), by reason.", scrape.client_errors),
        (metrics.SERVER_ERRORS, "Requests answered with a server error (5xx), by reason.", scrape.server_errors),
    ):
        family = counter(name, documentation)
        for reason, n in by_reason.items():
            family.add_sample(name, {**labels, metrics.REASON: reason}, float(n))
        yield family
    rejected = counter(metrics.REJECTED_VALUES, "Requests refused for a non-finite or implausible value, by input and reason.")
    for (part, reason), n in scrape.rejected_values.items():
        rejected.add_sample(metrics.REJECTED_VALUES, {**labels, metrics.INPUT: part, metrics.REASON: reason}, float(n))
    yield rejected
    latency = Metric(metrics.INFERENCE_LATENCY, "Server-side request latency (parse + predict).", "histogram")
    add_histogram(latency, labels, scrape.latency_le, scrape.latency_counts, scrape.latency_sum)
    yield latency
    loaded = Metric(metrics.PROFILE_LOADED, "1 when a reference profile is loaded; 0: no drift histograms.", "gauge")
    loaded.add_sample(metrics.PROFILE_LOADED, labels, 1.0 if scrape.profile_loaded else 0.0)
    yield loaded
    if scrape.profile_loaded:
        yield from _profile_families(scrape)
    if scrape.task == "classification":
        classes = counter(metrics.PREDICTED_CLASS, "Predictions per predicted class.")
        for label, n in scrape.classes.items():
            classes.add_sample(metrics.PREDICTED_CLASS, {**labels, metrics.CLASS: label}, float(n))
        yield classes
        confusion = counter(metrics.FEEDBACK, "Ground-truth feedback: confusion counts.")
        for (version, track, predicted, actual), n in scrape.confusion.items():
            confusion.add_sample(metrics.FEEDBACK, {
                **labels, metrics.VERSION: version, metrics.TRACK: track,
                metrics.PREDICTED: predicted, metrics.ACTUAL: actual}, float(n))
        yield confusion
    else:
        families = [counter(name, documentation)
                    for name, documentation in zip(metrics.REGRESSION_FEEDBACK, _REGRESSION_DOCUMENTATION)]
        for (version, track), sums_of_track in scrape.regression.items():
            for name, family, value in zip(metrics.REGRESSION_FEEDBACK, families, sums_of_track):
                family.add_sample(name, {**labels, metrics.VERSION: version, metrics.TRACK: track}, float(value))
        yield from families


def _profile_families(scrape: Scrape) -> Iterator[Metric]:
    """What needs the reference profile (its bucket edges, its z-score). Without one these series
    are absent rather than 0: a server that cannot tell must not look like "nothing drifted"."""
    labels = scrape.labels
    features = Metric(metrics.FEATURE_VALUE, "Feature values; bucket edges from the reference profile.", "histogram")
    histograms, counts, sums = scrape.columns, scrape.column_counts, scrape.column_sums
    for i, name in enumerate(scrape.feature_names):
        add_histogram(
            features, {**labels, metrics.FEATURE: name}, histograms.le[i], histograms.column(counts, i), float(sums[i])
        )
    yield features
    if scrape.has_value:
        value = Metric(metrics.PREDICTION_VALUE, "Regression output or classifier score.", "histogram")
        add_histogram(value, labels, histograms.le[-1], histograms.column(counts, -1), float(sums[-1]))
        yield value
    yield single_counter(
        metrics.PREDICTION_OUTLIERS,
        "Predictions with a feature or score beyond the profile's z-score.",
        labels,
        scrape.outliers,
    )
