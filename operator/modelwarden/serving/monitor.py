"""The metrics contract as a reusable instrumentation module.

Any Python model server can export what the operator reads::

    monitor = ModelMonitor("fraud", "7", "canary", Profile.from_json(open("profile.json").read()))
    monitor.record_prediction(rows, labels, latency=0.004, scores=positive_class_probabilities)
    monitor.record_feedback(predicted=labels_then, actual=ground_truth)
    monitor.record_error("invalid_payload")

Why a custom collector instead of prometheus_client metrics: the feature histogram needs a
different bucket set per feature (prometheus_client's Histogram has one per metric), and a
batch of 32 rows × N features must not cost 32·N ``observe()`` calls. Recording only copies the
batch and appends it to a list (a few microseconds); pending rows are counted together,
vectorised and branch-free, when ``flush_rows`` rows are pending or a scrape arrives, so every
scrape is exact. State is plain numpy arrays behind one lock; scrapes turn them into metric
families.

``le`` strings are produced by :func:`format_le` (prometheus_client's float formatting: Python
``repr`` of the float, e.g. ``0.5``, ``12.0``, ``-3.25``, ``1e+07`` above 1e6). The analysis
engine can reproduce them from the profile edges, or parse ``le`` with ``float()`` and compare
exactly: the strings round-trip to the very same floats.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from modelwarden.serving.profile import Distribution, Profile, level_key
from modelwarden.serving.tokens import TOKEN_ERROR_REASONS

LABELS = ("model", "version", "track")
FLUSH_VALUES = 8192  # buffered rows × columns that trigger bucketing: ~1000 rows for a handful of features
TRACKS = ("stable", "canary", "shadow")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Error reasons exported at 0 from the start, so rate() and ratios work before the first error.
KNOWN_ERROR_REASONS = (
    *TOKEN_ERROR_REASONS,
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
    "internal_error",
)


def format_le(edge: float) -> str:
    """The ``le`` label value of a bucket upper bound, as exported by this module."""
    return floatToGoString(edge)


LANE_ROWS = 255 * 8  # rows per counting pass: a byte lane of a uint64 word counts at most 255


def count_at_or_below(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``counts[c, k]`` = how many of ``values[c, :]`` are ``<= edges[c, k]`` (NaN never counts).

    These are Prometheus's cumulative ``le`` buckets. Computed without branches: one broadcast
    comparison, then the booleans summed eight at a time as the bytes of uint64 words (each byte
    lane holds at most 255, so nothing carries into the next lane). A binary search per value
    (``np.searchsorted``) looks cheaper, and is when a benchmark repeats the same values, but on
    fresh values it mispredicts a branch at almost every step: 276 vs 92 µs for 1170 rows ×
    7 columns × 20 edges, fresh values each call (benchmarks.md, "Model server").
    """
    columns, rows = values.shape
    counts = np.zeros(edges.shape, dtype=np.int64)
    for start in range(0, rows, LANE_ROWS):
        chunk = values[:, start : start + LANE_ROWS]
        n = chunk.shape[1]
        at_or_below = np.zeros((columns, edges.shape[1], -(-n // 8) * 8), dtype=bool)  # padded to whole words
        np.less_equal(chunk[:, np.newaxis, :], edges[:, :, np.newaxis], out=at_or_below[:, :, :n])
        lanes = at_or_below.view(np.uint64).sum(axis=2, dtype=np.uint64)
        counts += lanes.view(np.uint8).reshape(*edges.shape, 8).sum(axis=2, dtype=np.int64)
    return counts


class _Histograms:
    """Cumulative histograms of several columns, each with its own bucket edges.

    Edges are padded with +Inf to a rectangle and a final +Inf edge is added for every column,
    so ``cumulative[c, -1]`` is the column's ``+Inf`` bucket. Non-finite values are not counted
    (not in any bucket, nor in ``_count`` or ``_sum``).
    """

    def __init__(self, edge_lists: Sequence[Sequence[float]]):
        width = max((len(edges) for edges in edge_lists), default=0) + 1
        self.padded_edges = np.full((len(edge_lists), width), np.inf)
        for i, edges in enumerate(edge_lists):
            self.padded_edges[i, : len(edges)] = edges
        self.sizes = [len(edges) for edges in edge_lists]
        self.le = [[format_le(edge) for edge in edges] + ["+Inf"] for edges in edge_lists]
        self.cumulative = np.zeros(self.padded_edges.shape, dtype=np.int64)
        self.sums = np.zeros(len(edge_lists))

    def add(self, values: np.ndarray) -> None:
        """Count a float block shaped (columns, rows)."""
        finite = np.isfinite(values)
        if not finite.all():
            values = np.where(finite, values, np.nan)
            self.sums += np.nansum(values, axis=1)
        else:
            self.sums += values.sum(axis=1)
        self.cumulative += count_at_or_below(values, self.padded_edges)

    def column(self, cumulative: np.ndarray, i: int) -> np.ndarray:
        """Column i's cumulative counts for its own ``le`` values (its edges, then +Inf)."""
        return np.append(cumulative[i, : self.sizes[i]], cumulative[i, -1])


class _LatencyHistogram:
    """One value per request, so plain Python: a bisect and a list increment cost less than any numpy call."""

    def __init__(self, edges: Sequence[float]):
        self.edges = [float(edge) for edge in edges]
        self.le = [format_le(edge) for edge in self.edges] + ["+Inf"]
        self.counts = [0] * (len(self.edges) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.edges, value)] += 1
        self.total += value

    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.counts)


class _CategoricalCoder:
    """Maps categorical values to their level index (unseen levels to k, the +Inf bucket)."""

    def __init__(self, levels: Sequence[str]):
        self.index = {level: float(i) for i, level in enumerate(levels)}
        self.unseen = float(len(levels))

    def codes(self, column: Iterable[Any]) -> np.ndarray:
        return np.fromiter((self.index.get(level_key(v), self.unseen) for v in column), dtype=float)


def _owned_column(column: np.ndarray, rows: int, name: str) -> np.ndarray:
    """The caller's new array as one value per row, checked against the row count (ravel only when
    needed: each numpy call costs here)."""
    if column.ndim != 1:
        column = column.ravel()
    if len(column) != rows:
        raise ValueError(f"{rows} rows but {len(column)} {name} values")
    return column


def _tally(label_arrays: Iterable[np.ndarray]) -> Counter[str]:
    """Predicted-class counts by :func:`level_key`, over many requests' label arrays.

    Arrays are joined only with others of the same dtype: joining ints with strings would turn
    1.0 into "1.0" (not "1") and True into "True" (not "true"), so a class's key would depend on
    which requests happened to be pending together. Per dtype: small non-negative integers (class
    indices) are counted with ``bincount``, other orderable labels by sorting (both much faster
    than hashing each label), anything else is hashed."""
    by_dtype: dict[np.dtype, list[np.ndarray]] = {}
    for labels in label_arrays:
        by_dtype.setdefault(labels.dtype, []).append(labels)
    tallies: Counter[str] = Counter()
    for arrays in by_dtype.values():
        labels = np.concatenate(arrays)
        if not labels.size:
            continue
        pairs: Iterable[tuple[Any, int]]
        if labels.dtype.kind in "iu" and 0 <= labels.min() and labels.max() < 4096:
            counts = np.bincount(labels.astype(np.intp, copy=False))
            present = np.flatnonzero(counts)
            pairs = zip(present.tolist(), counts[present].tolist())
        else:
            try:
                levels, counts = np.unique(labels, return_counts=True)
                pairs = zip(levels.tolist(), counts.tolist())
            except Exception:  # noqa: BLE001 - unorderable (None and 1, Decimal NaN, ...): hash instead
                pairs = Counter(labels.tolist()).items()
        for label, n in pairs:
            tallies[level_key(label)] += n
    return tallies


def _add_histogram(
    metric: Metric, labels: dict[str, str], le: Sequence[str], cumulative: np.ndarray, total: float
) -> None:
    """Add one labelled histogram; unlike prometheus_client's family, keeps _sum/_count for negative edges."""
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
    per registry: two would export the same metric families twice. Requests are counted once
    ``flush_rows`` rows are pending (default: about 8192 values' worth), so at most
    ``flush_rows - 1`` rows plus one request wait in memory.
    """

    def __init__(
        self,
        name: str,
        version: str,
        track: str,
        profile: Profile,
        registry: CollectorRegistry | None = None,
        latency_buckets: Sequence[float] = LATENCY_BUCKETS,
        flush_rows: int | None = None,
    ):
        self.labels = {"model": name, "version": str(version), "track": track}
        self.profile = profile
        self.task = profile.prediction.task
        self.feature_names = profile.feature_names
        self._lock = threading.Lock()
        self._coders = {
            i: _CategoricalCoder(f.levels or []) for i, f in enumerate(profile.features) if f.kind == "categorical"
        }
        value_distribution = profile.prediction.value_distribution()
        self._has_value = value_distribution is not None
        columns = [*profile.features, *([value_distribution] if value_distribution else [])]
        self._columns = _Histograms([c.edges for c in columns])  # the features, then prediction_value
        self._latency = _LatencyHistogram(latency_buckets)
        self._z_mean, self._z_limit = self._outlier_bounds(columns, profile.z_score)
        self._flush_rows = flush_rows or max(16, FLUSH_VALUES // max(len(columns), 1))
        # Requests wait here, as the copies record_prediction made, until flush_rows rows or a scrape.
        self._pending: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        self._pending_rows = 0
        self._predictions = 0
        self._outliers = 0
        self._errors = dict.fromkeys(KNOWN_ERROR_REASONS, 0)
        self._classes = dict.fromkeys(profile.classes, 0)
        # Feedback by the (version, track) that made the prediction: this server's own, and the
        # predicting track a feedback token names (feedback may reach any replica of any track).
        own = (self.labels["version"], track)
        self._confusion = {(*own, p, a): 0 for p in profile.classes for a in profile.classes}
        self._regression = {own: [0.0, 0.0, 0]}  # squared error, absolute error, observations
        self._feedback_sets = {own}
        # Label sets first seen since the last scrape are exported at 0 once: increase() and rate()
        # take a series' first sample as its start, so counts in it would never be seen.
        self._unexported: set[tuple[str, str]] = set()
        (REGISTRY if registry is None else registry).register(self)

    @staticmethod
    def _outlier_bounds(columns: Sequence[Distribution], z_score: float) -> tuple[np.ndarray, np.ndarray]:
        """Per column: |x - mean| > limit marks an outlier. Columns without a usable std (categorical,
        constant) get an infinite limit, so one comparison covers the whole batch."""
        usable = [c.kind == "numeric" and bool(c.std) and c.mean is not None for c in columns]
        mean = np.array([c.mean if ok else 0.0 for c, ok in zip(columns, usable)], dtype=float)
        limit = np.array([c.std * z_score if ok else np.inf for c, ok in zip(columns, usable)], dtype=float)  # type: ignore[operator]
        return mean[:, np.newaxis], limit[:, np.newaxis]

    # -- recording ---------------------------------------------------------------------------

    def encode_features(self, features: Any) -> np.ndarray:
        """Rows (arrays, lists or feature-name dicts) as a new float matrix; categorical as level codes.

        Always a copy the monitor owns, so a caller may reuse its buffer as soon as this returns."""
        width = len(self.feature_names)
        matrix = None
        numeric_rows = type(features) is np.ndarray or (type(features) is list and features and type(features[0]) is list)
        if numeric_rows and not self._coders:
            try:
                matrix = np.array(features, dtype=float, ndmin=2)  # numeric rows: one call converts and copies
            except (TypeError, ValueError):
                matrix = None  # ragged or non-numeric: the general path below says what is wrong
        if matrix is None:
            rows = [
                [row[name] for name in self.feature_names] if isinstance(row, dict) else list(row) for row in features
            ]
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

        Only copies and appends: inside a server, between requests that run a model, every numpy
        call here is cache-cold and costs several times what a tight loop shows, so all counting
        waits for :meth:`_flush` (see docs/benchmarks.md, "Model server").
        """
        x = self.encode_features(features)
        rows = len(x)
        value = (output if self.task == "regression" else scores) if self._has_value else None
        if value is not None:
            value = _owned_column(np.array(value, dtype=float), rows, "output/scores")
        labels = _owned_column(np.array(output), rows, "output") if self.task == "classification" else None
        with self._lock:
            self._pending.append((x, value, labels))
            if latency is not None and math.isfinite(latency):  # like every value: non-finite is not counted
                self._latency.observe(latency)
            self._pending_rows += rows
            if self._pending_rows >= self._flush_rows:
                self._flush()

    def _flush(self) -> None:
        """Count every pending request in one vectorised pass. Caller holds the lock."""
        if not self._pending:
            return
        pending, rows = self._pending, self._pending_rows
        self._pending, self._pending_rows = [], 0
        self._predictions += rows
        block = np.empty((len(self._z_mean), rows))  # column-major: each column bucketed as one contiguous run
        width = len(self.feature_names)
        block[:width] = np.concatenate([x for x, _, _ in pending]).T
        if self._has_value:
            block[width] = np.concatenate([np.full(len(x), np.nan) if v is None else v for x, v, _ in pending])
        self._columns.add(block)
        self._outliers += int(np.count_nonzero((np.abs(block - self._z_mean) > self._z_limit).any(axis=0)))  # NaN: False
        if self.task == "classification":
            for key, n in _tally(labels for _, _, labels in pending if labels is not None).items():
                self._classes[key] = self._classes.get(key, 0) + n

    def record_feedback(self, predicted: Any, actual: Any, version: str | None = None, track: str | None = None) -> None:
        """Ground truth for earlier predictions (scalars or equal-length sequences), counted under
        the version and track that made them (default: this server's)."""
        made_by = (self.labels["version"] if version is None else str(version), self.labels["track"] if track is None else track)
        predicted_seq = list(predicted) if isinstance(predicted, (list, tuple, np.ndarray)) else [predicted]
        actual_seq = list(actual) if isinstance(actual, (list, tuple, np.ndarray)) else [actual]
        if len(predicted_seq) != len(actual_seq):
            raise ValueError(f"{len(predicted_seq)} predictions but {len(actual_seq)} actual values")
        if self.task == "classification":
            keys = [(*made_by, level_key(p), level_key(a)) for p, a in zip(predicted_seq, actual_seq)]
            with self._lock:
                self._add_feedback_set(made_by)
                for key in keys:
                    self._confusion[key] = self._confusion.get(key, 0) + 1
            return
        error = np.asarray(predicted_seq, dtype=float) - np.asarray(actual_seq, dtype=float)
        squared, absolute = float((error**2).sum()), float(np.abs(error).sum())
        with self._lock:
            self._add_feedback_set(made_by)
            sums = self._regression[made_by]
            sums[0] += squared
            sums[1] += absolute
            sums[2] += error.size

    def _add_feedback_set(self, made_by: tuple[str, str]) -> None:
        """Every series of a new (version, track) at once, at 0 (under the lock)."""
        if made_by in self._feedback_sets:
            return
        self._feedback_sets.add(made_by)
        self._unexported.add(made_by)
        if self.task == "classification":
            for p in self.profile.classes:
                for a in self.profile.classes:
                    self._confusion.setdefault((*made_by, p, a), 0)
        else:
            self._regression[made_by] = [0.0, 0.0, 0]

    def knows_feedback_of(self, version: str, track: str) -> bool:
        """Whether feedback of (version, track) already has its series here."""
        with self._lock:
            return (version, track) in self._feedback_sets

    def feedback_label_sets(self) -> int:
        """How many (version, track) pairs besides this server's own have feedback series."""
        with self._lock:
            return len(self._feedback_sets) - 1

    def record_error(self, reason: str) -> None:
        with self._lock:
            self._errors[reason] = self._errors.get(reason, 0) + 1

    # -- exposition --------------------------------------------------------------------------

    def describe(self) -> list[Metric]:
        return [Metric(m.name, m.documentation, m.type) for m in self.collect()]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._flush()
            snapshot = {
                "predictions": self._predictions,
                "outliers": self._outliers,
                "errors": dict(self._errors),
                "classes": dict(self._classes),
                "confusion": {key: 0 if key[:2] in self._unexported else n for key, n in self._confusion.items()},
                "column_counts": self._columns.cumulative.copy(),
                "column_sums": self._columns.sums.copy(),
                "latency": (self._latency.cumulative(), self._latency.total),
                "regression": {made_by: (0.0, 0.0, 0) if made_by in self._unexported else tuple(sums)
                               for made_by, sums in self._regression.items()},
            }
            self._unexported.clear()
        labels = self.labels
        yield self._single_counter(
            "modelwarden_predictions_total", "Predictions made (rows, not requests).", snapshot["predictions"]
        )
        errors = _counter("modelwarden_prediction_errors_total", "Rejected or failed requests by reason.")
        for reason, n in snapshot["errors"].items():
            errors.add_sample(errors.name + "_total", {**labels, "reason": reason}, float(n))
        yield errors
        latency = Metric(
            "modelwarden_inference_latency_seconds", "Server-side request latency (parse + predict).", "histogram"
        )
        _add_histogram(latency, labels, self._latency.le, *snapshot["latency"])
        yield latency
        features = Metric(
            "modelwarden_feature_value", "Feature values; bucket edges from the reference profile.", "histogram"
        )
        histograms, counts, sums = self._columns, snapshot["column_counts"], snapshot["column_sums"]
        for i, name in enumerate(self.feature_names):
            _add_histogram(
                features, {**labels, "feature": name}, histograms.le[i], histograms.column(counts, i), float(sums[i])
            )
        yield features
        if self._has_value:
            value = Metric("modelwarden_prediction_value", "Regression output or classifier score.", "histogram")
            _add_histogram(value, labels, histograms.le[-1], histograms.column(counts, -1), float(sums[-1]))
            yield value
        yield self._single_counter(
            "modelwarden_prediction_outliers_total",
            "Predictions with a feature or score beyond the profile's z-score.",
            snapshot["outliers"],
        )
        if self.task == "classification":
            classes = _counter("modelwarden_predicted_class_total", "Predictions per predicted class.")
            for label, n in snapshot["classes"].items():
                classes.add_sample(classes.name + "_total", {**labels, "class": label}, float(n))
            yield classes
            confusion = _counter("modelwarden_feedback_total", "Ground-truth feedback: confusion counts.")
            for (version, track, predicted, actual), n in snapshot["confusion"].items():
                confusion.add_sample(confusion.name + "_total", {
                    **labels, "version": version, "track": track, "predicted": predicted, "actual": actual}, float(n))
            yield confusion
        else:
            samples = [("modelwarden_feedback_squared_error_sum", "Sum of squared errors from feedback."),
                       ("modelwarden_feedback_absolute_error_sum", "Sum of absolute errors from feedback."),
                       ("modelwarden_feedback_observations_total", "Regression feedback observations.")]
            families = [_counter(name, documentation) for name, documentation in samples]
            for (version, track), sums in snapshot["regression"].items():
                for (name, _), family, value in zip(samples, families, sums):
                    family.add_sample(name, {**labels, "version": version, "track": track}, float(value))
            yield from families

    def _single_counter(self, sample_name: str, documentation: str, value: float) -> Metric:
        metric = _counter(sample_name, documentation)
        metric.add_sample(sample_name, self.labels, float(value))
        return metric


class NullMonitor:
    """The same interface doing nothing: ``modelwarden serve --no-metrics``."""

    def record_prediction(self, features: Any, output: Any, latency: float | None = None, scores: Any = None) -> None:
        """Metrics are off."""

    def record_feedback(self, predicted: Any, actual: Any, version: str | None = None, track: str | None = None) -> None:
        """Metrics are off."""

    def record_error(self, reason: str) -> None:
        """Metrics are off."""
