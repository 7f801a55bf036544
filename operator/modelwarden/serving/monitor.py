"""The metrics contract as a reusable instrumentation module.

Any Python model server can export what the operator reads::

    monitor = ModelMonitor("fraud", "7", "canary", Profile.from_json(open("profile.json").read()))
    monitor.record_prediction(rows, labels, latency=0.004, scores=positive_class_probabilities)
    monitor.record_feedback(predicted=labels_then, actual=ground_truth)
    monitor.record_error("invalid_payload")

Why a custom collector instead of prometheus_client metrics: the feature histogram needs a
different bucket set per feature (prometheus_client's Histogram has one per metric), and a
batch of 32 rows × N features must cost a handful of numpy calls, not 32·N ``observe()``
calls. State is plain numpy arrays behind one lock; scrapes turn them into metric families.

``le`` strings are produced by :func:`format_le` (prometheus_client's float formatting: Python
``repr`` of the float, e.g. ``0.5``, ``12.0``, ``-3.25``, ``1e+07`` above 1e6). The analysis
engine can reproduce them from the profile edges, or parse ``le`` with ``float()`` and compare
exactly: the strings round-trip to the very same floats.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from modelwarden.serving.profile import Distribution, Profile, level_key

LABELS = ("model", "version", "track")
TRACKS = ("stable", "canary", "shadow")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Error reasons exported at 0 from the start, so rate() and ratios work before the first error.
KNOWN_ERROR_REASONS = (
    "malformed_json",
    "invalid_payload",
    "feature_count",
    "feature_names",
    "non_numeric",
    "non_finite",
    "body_too_large",
    "unknown_model",
    "unknown_request_id",
    "unknown_class",
    "model_error",
)


def format_le(edge: float) -> str:
    """The ``le`` label value of a bucket upper bound, as exported by this module."""
    return floatToGoString(edge)


class _Histogram:
    """Non-cumulative bucket counts and a sum; cumulated only when scraped."""

    def __init__(self, edges: Sequence[float]):
        self.edges = [float(edge) for edge in edges]
        self.le = [format_le(edge) for edge in self.edges] + ["+Inf"]
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.total = 0.0

    def bucket_indices(self, values: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.edges, values, side="left")

    def add(self, indices: np.ndarray, total: float) -> None:
        self.counts += np.bincount(indices, minlength=self.counts.size)
        self.total += total

    def observe_one(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.edges, value)] += 1
        self.total += value


class _FeatureHistograms:
    """All features' histograms in one flat counts array, bucketed with one vectorised pass.

    The bucket of x for a feature is the number of that feature's edges strictly below x
    (the same as ``np.searchsorted(edges, x, side="left")``). Edges are padded with +Inf to a
    rectangle so one broadcast comparison buckets a whole batch; non-finite values land in a
    trailing discard slot instead of a bucket.
    """

    def __init__(self, distributions: Sequence[Distribution]):
        width = max((len(d.edges) for d in distributions), default=0)
        self.padded_edges = np.full((len(distributions), width), np.inf)
        for i, d in enumerate(distributions):
            self.padded_edges[i, : len(d.edges)] = d.edges
        sizes = np.array([len(d.edges) + 1 for d in distributions], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        self.discard = int(sizes.sum())
        self.counts = np.zeros(self.discard + 1, dtype=np.int64)
        self.sums = np.zeros(len(distributions))
        self.le = [[format_le(edge) for edge in d.edges] + ["+Inf"] for d in distributions]
        self.spans = [(int(o), int(o + s)) for o, s in zip(self.offsets, sizes)]

    def bucket(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat bucket counts to add, per-feature sums to add) for a float batch (rows, features)."""
        finite = np.isfinite(x)
        buckets = (x[:, :, None] > self.padded_edges[None, :, :]).sum(axis=2) + self.offsets
        flat = np.where(finite, buckets, self.discard).ravel()
        return np.bincount(flat, minlength=self.counts.size), np.where(finite, x, 0.0).sum(axis=0)


class _CategoricalCoder:
    """Maps categorical values to their level index (unseen levels to k, the +Inf bucket)."""

    def __init__(self, levels: Sequence[str]):
        self.index = {level: float(i) for i, level in enumerate(levels)}
        self.unseen = float(len(levels))

    def codes(self, column: Iterable[Any]) -> np.ndarray:
        return np.fromiter((self.index.get(level_key(v), self.unseen) for v in column), dtype=float)


def _add_histogram(metric: Metric, labels: dict[str, str], le: Sequence[str], counts: np.ndarray, total: float) -> None:
    """Add one labelled histogram; unlike prometheus_client's family, keeps _sum/_count for negative edges."""
    cumulative = np.cumsum(counts)
    for bound, value in zip(le, cumulative.tolist()):
        metric.add_sample(metric.name + "_bucket", {**labels, "le": bound}, float(value))
    metric.add_sample(metric.name + "_count", labels, float(cumulative[-1]))
    metric.add_sample(metric.name + "_sum", labels, float(total))


def _counter(name: str, documentation: str) -> Metric:
    """A family for the exact sample ``name``.

    Names ending in ``_total`` are counters. The contract's ``…_error_sum`` series only ever grow
    too, but the text format would rename a counter to ``…_sum_total``, so they are untyped.
    """
    if name.endswith("_total"):
        return Metric(name.removesuffix("_total"), documentation, "counter")
    return Metric(name, documentation, "unknown")


class ModelMonitor:
    """Records predictions, feedback and errors of one (model, version, track) for Prometheus.

    ``registry=None`` registers with prometheus_client's default ``REGISTRY`` (what a server's
    existing ``/metrics`` exposes); pass a ``CollectorRegistry`` to keep it separate. One monitor
    per registry: two would export the same metric families twice.
    """

    def __init__(
        self,
        name: str,
        version: str,
        track: str,
        profile: Profile,
        registry: CollectorRegistry | None = None,
        latency_buckets: Sequence[float] = LATENCY_BUCKETS,
    ):
        self.labels = {"model": name, "version": str(version), "track": track}
        self.profile = profile
        self.task = profile.prediction.task
        self.feature_names = profile.feature_names
        self._lock = threading.Lock()
        self._coders = {
            i: _CategoricalCoder(f.levels or []) for i, f in enumerate(profile.features) if f.kind == "categorical"
        }
        self._features = _FeatureHistograms(profile.features)
        self._latency = _Histogram(latency_buckets)
        value_distribution = profile.prediction.value_distribution()
        self._prediction_value = _Histogram(value_distribution.edges) if value_distribution else None
        self._prepare_outliers(profile)
        self._predictions = 0
        self._outliers = 0
        self._errors = dict.fromkeys(KNOWN_ERROR_REASONS, 0)
        self._classes = dict.fromkeys(profile.classes, 0)
        self._confusion = {(p, a): 0 for p in profile.classes for a in profile.classes}
        self._squared_error = 0.0
        self._absolute_error = 0.0
        self._observations = 0
        (REGISTRY if registry is None else registry).register(self)

    def _prepare_outliers(self, profile: Profile) -> None:
        """Columns (and the score) with a usable std: |x - mean| / std > zScore marks an outlier row."""
        numeric = [
            (i, f.mean, f.std) for i, f in enumerate(profile.features) if f.kind == "numeric" and f.std and f.mean is not None
        ]
        self._z_columns = np.array([i for i, _, _ in numeric], dtype=np.int64)
        self._z_mean = np.array([m for _, m, _ in numeric], dtype=float)
        self._z_limit = np.array([s for _, _, s in numeric], dtype=float) * profile.z_score
        score = profile.prediction.value_distribution()
        self._score_z = (score.mean, score.std * profile.z_score) if score and score.std and score.mean is not None else None

    # -- recording ---------------------------------------------------------------------------

    def encode_features(self, features: Any) -> np.ndarray:
        """Rows (arrays, lists or feature-name dicts) as a float matrix; categorical as level codes."""
        width = len(self.feature_names)
        if isinstance(features, np.ndarray) and features.dtype.kind in "fiu" and not self._coders:
            matrix = np.atleast_2d(features.astype(float, copy=False))
        else:
            rows = [[row[name] for name in self.feature_names] if isinstance(row, dict) else list(row) for row in features]
            table = np.array(rows, dtype=object) if rows else np.empty((0, width), dtype=object)
            if table.ndim != 2 or table.shape[1] != width:
                raise ValueError(f"expected rows of {width} features, got an array of shape {table.shape}")
            matrix = np.empty(table.shape, dtype=float)
            for i in range(width):
                coder = self._coders.get(i)
                matrix[:, i] = coder.codes(table[:, i]) if coder else table[:, i].astype(float)
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise ValueError(f"expected rows of {width} features, got an array of shape {matrix.shape}")
        return matrix

    def record_prediction(
        self,
        features: Any,
        output: Sequence[Any] | np.ndarray,
        latency: float | None = None,
        scores: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """One request: a batch of feature rows, the model's output per row, optional scores.

        ``output`` holds class labels (classification) or values (regression); ``scores`` is the
        classifier score histogrammed as ``prediction_value`` (see the profile's scoreMeaning).
        ``latency`` (seconds) is observed once per call, i.e. per request.
        """
        x = self.encode_features(features)
        feature_counts, feature_sums = self._features.bucket(x)
        value = np.asarray(output if self.task == "regression" else (scores if scores is not None else []), dtype=float)
        value_indices = self._prediction_value.bucket_indices(value) if self._prediction_value and value.size else None
        outlier_rows = self._outlier_rows(x, value)
        class_counts: list[tuple[str, int]] = []
        if self.task == "classification":
            labels, counts = np.unique(np.asarray(output), return_counts=True)
            class_counts = [(level_key(label), int(n)) for label, n in zip(labels.tolist(), counts.tolist())]
        with self._lock:
            self._predictions += x.shape[0]
            self._features.counts += feature_counts
            self._features.sums += feature_sums
            if value_indices is not None and self._prediction_value is not None:
                self._prediction_value.add(value_indices, float(value.sum()))
            for label, n in class_counts:
                self._classes[label] = self._classes.get(label, 0) + n
            self._outliers += outlier_rows
            if latency is not None:
                self._latency.observe_one(latency)

    def _outlier_rows(self, x: np.ndarray, value: np.ndarray) -> int:
        beyond = np.zeros(x.shape[0], dtype=bool)
        if self._z_columns.size:
            beyond |= (np.abs(x[:, self._z_columns] - self._z_mean) > self._z_limit).any(axis=1)
        if self._score_z is not None and value.size == x.shape[0]:
            mean, limit = self._score_z
            beyond |= np.abs(value - mean) > limit
        return int(beyond.sum())

    def record_feedback(self, predicted: Any, actual: Any) -> None:
        """Ground truth for earlier predictions (scalars or equal-length sequences)."""
        predicted_seq = list(predicted) if isinstance(predicted, (list, tuple, np.ndarray)) else [predicted]
        actual_seq = list(actual) if isinstance(actual, (list, tuple, np.ndarray)) else [actual]
        if len(predicted_seq) != len(actual_seq):
            raise ValueError(f"{len(predicted_seq)} predictions but {len(actual_seq)} actual values")
        if self.task == "classification":
            pairs = [(level_key(p), level_key(a)) for p, a in zip(predicted_seq, actual_seq)]
            with self._lock:
                for pair in pairs:
                    self._confusion[pair] = self._confusion.get(pair, 0) + 1
            return
        error = np.asarray(predicted_seq, dtype=float) - np.asarray(actual_seq, dtype=float)
        squared, absolute = float((error**2).sum()), float(np.abs(error).sum())
        with self._lock:
            self._squared_error += squared
            self._absolute_error += absolute
            self._observations += error.size

    def record_error(self, reason: str) -> None:
        with self._lock:
            self._errors[reason] = self._errors.get(reason, 0) + 1

    # -- exposition --------------------------------------------------------------------------

    def describe(self) -> list[Metric]:
        return [Metric(m.name, m.documentation, m.type) for m in self.collect()]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = {
                "predictions": self._predictions,
                "outliers": self._outliers,
                "errors": dict(self._errors),
                "classes": dict(self._classes),
                "confusion": dict(self._confusion),
                "feature_counts": self._features.counts.copy(),
                "feature_sums": self._features.sums.copy(),
                "latency": (self._latency.counts.copy(), self._latency.total),
                "value": (self._prediction_value.counts.copy(), self._prediction_value.total)
                if self._prediction_value
                else None,
                "regression": (self._squared_error, self._absolute_error, self._observations),
            }
        labels = self.labels
        yield self._single_counter("modelwarden_predictions_total", "Predictions made (rows, not requests).", snapshot["predictions"])
        errors = _counter("modelwarden_prediction_errors_total", "Rejected or failed requests by reason.")
        for reason, n in snapshot["errors"].items():
            errors.add_sample(errors.name + "_total", {**labels, "reason": reason}, float(n))
        yield errors
        latency = Metric("modelwarden_inference_latency_seconds", "Server-side request latency (parse + predict).", "histogram")
        _add_histogram(latency, labels, self._latency.le, *snapshot["latency"])
        yield latency
        features = Metric("modelwarden_feature_value", "Feature values; bucket edges from the reference profile.", "histogram")
        for name, (start, stop), le, total in zip(self.feature_names, self._features.spans, self._features.le, snapshot["feature_sums"]):
            _add_histogram(features, {**labels, "feature": name}, le, snapshot["feature_counts"][start:stop], float(total))
        yield features
        if snapshot["value"] is not None and self._prediction_value is not None:
            value = Metric("modelwarden_prediction_value", "Regression output or classifier score.", "histogram")
            _add_histogram(value, labels, self._prediction_value.le, *snapshot["value"])
            yield value
        yield self._single_counter(
            "modelwarden_prediction_outliers_total", "Predictions with a feature or score beyond the profile's z-score.", snapshot["outliers"]
        )
        if self.task == "classification":
            classes = _counter("modelwarden_predicted_class_total", "Predictions per predicted class.")
            for label, n in snapshot["classes"].items():
                classes.add_sample(classes.name + "_total", {**labels, "class": label}, float(n))
            yield classes
            confusion = _counter("modelwarden_feedback_total", "Ground-truth feedback: confusion counts.")
            for (predicted, actual), n in snapshot["confusion"].items():
                confusion.add_sample(confusion.name + "_total", {**labels, "predicted": predicted, "actual": actual}, float(n))
            yield confusion
        else:
            squared, absolute, observations = snapshot["regression"]
            yield self._single_counter("modelwarden_feedback_squared_error_sum", "Sum of squared errors from feedback.", squared)
            yield self._single_counter("modelwarden_feedback_absolute_error_sum", "Sum of absolute errors from feedback.", absolute)
            yield self._single_counter("modelwarden_feedback_observations_total", "Regression feedback observations.", observations)

    def _single_counter(self, sample_name: str, documentation: str, value: float) -> Metric:
        metric = _counter(sample_name, documentation)
        metric.add_sample(sample_name, self.labels, float(value))
        return metric


class NullMonitor:
    """The same interface doing nothing: ``modelwarden serve --no-metrics``."""

    def record_prediction(self, features: Any, output: Any, latency: float | None = None, scores: Any = None) -> None:
        """Metrics are off."""

    def record_feedback(self, predicted: Any, actual: Any) -> None:
        """Metrics are off."""

    def record_error(self, reason: str) -> None:
        """Metrics are off."""
