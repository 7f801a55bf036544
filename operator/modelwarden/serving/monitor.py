"""The metrics contract as a reusable instrumentation module.

Any Python model server can export what the operator reads::

    monitor = ModelMonitor("fraud", "7", "canary", Profile.from_json(open("profile.json").read()))
    monitor.record_prediction(rows, labels, latency=0.004, scores=positive_class_probabilities)
    monitor.record_feedback(predicted=labels_then, actual=ground_truth)
    monitor.record_error("invalid_payload", status=400)

Why a custom collector instead of prometheus_client metrics: the feature histogram needs a
different bucket set per feature (prometheus_client's Histogram has one per metric), and a
batch of 32 rows × N features must not cost 32·N ``observe()`` calls. Recording only copies the
batch and appends it to a list (a few microseconds); pending rows are counted together,
vectorised and branch-free (serving.buckets), when ``flush_rows`` rows are pending or a scrape
arrives, so every scrape is exact. State is plain numpy arrays behind one lock; a scrape copies
them and serving.exposition turns the copy into the contract's metric families.

``le`` strings are produced by :func:`format_le` (modelwarden.contract.metrics:
prometheus_client's float formatting, Python ``repr`` of the float, e.g. ``0.5``, ``12.0``,
``-3.25``, ``1e+07`` above 1e6). The analysis engine can reproduce them from the profile edges, or
parse ``le`` with ``float()`` and compare exactly: the strings round-trip to the very same floats.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric

from modelwarden.contract.metrics import (
    LATENCY_BUCKETS,
    MODEL,
    REJECTED_INPUTS,
    TRACK,
    VERSION,
    level_key,
)
from modelwarden.contract.profile import Distribution, Profile
from modelwarden.contract.reasons import (
    CLIENT_ERROR_REASONS,
    KNOWN_ERROR_REASONS,
    ROUTING_REASONS,
    SERVER_ERROR_REASONS,
    VALUE_REJECTION_REASONS,
    ErrorReason,
)
from modelwarden.serving.buckets import (
    CategoricalCoder,
    Histograms,
    LatencyHistogram,
    tally,
)
from modelwarden.serving.exposition import Scrape, metric_families
from modelwarden.serving.limits import MAX_MAGNITUDE

FLUSH_VALUES = 8192  # buffered rows × columns that trigger bucketing: ~1000 rows for a handful of features


def _owned_column(column: np.ndarray, rows: int, name: str) -> np.ndarray:
    """The caller's new array as one value per row, checked against the row count (ravel only when
    needed: each numpy call costs here)."""
    if column.ndim != 1:
        column = column.ravel()
    if len(column) != rows:
        raise ValueError(f"{rows} rows but {len(column)} {name} values")
    return column


class ModelMonitor:
    """Records predictions, feedback and errors of one (model, version, track) for Prometheus.

    ``registry=None`` registers with prometheus_client's default ``REGISTRY`` (what a server's
    existing ``/metrics`` exposes); pass a ``CollectorRegistry`` to keep it separate. One monitor
    per registry: two would export the same metric families twice. Requests are counted once
    ``flush_rows`` rows are pending (default: about 8192 values' worth), so at most
    ``flush_rows - 1`` rows plus one request wait in memory.

    ``profile=None`` (a model served without a reference profile; then give ``task`` and the
    model's ``classes``) counts predictions, classes, errors, latency and feedback, and exports
    ``modelwarden_profile_loaded`` 0 instead of the feature and prediction histograms and the
    outlier counter, which all need the profile.
    """

    def __init__(
        self,
        name: str,
        version: str,
        track: str,
        profile: Profile | None,
        registry: CollectorRegistry | None = None,
        latency_buckets: Sequence[float] = LATENCY_BUCKETS,
        flush_rows: int | None = None,
        *,
        task: str | None = None,
        classes: Sequence[Any] = (),
    ):
        self.labels = {MODEL: name, VERSION: str(version), TRACK: track}
        self.profile = profile
        if profile is None and task not in ("classification", "regression"):
            raise ValueError("a monitor without a profile needs task='classification' or 'regression'")
        self.task = profile.prediction.task if profile is not None else task
        self.feature_names = profile.feature_names if profile is not None else []
        self.classes = profile.classes if profile is not None else [level_key(c) for c in classes]
        self._lock = threading.Lock()
        features = profile.features if profile is not None else []
        self._coders = {i: CategoricalCoder(f.levels or []) for i, f in enumerate(features) if f.kind == "categorical"}
        value_distribution = profile.prediction.value_distribution() if profile is not None else None
        self._has_value = value_distribution is not None
        columns = [*features, *([value_distribution] if value_distribution else [])]
        self._columns = Histograms([c.edges for c in columns])  # the features, then prediction_value
        self._latency = LatencyHistogram(latency_buckets)
        self._z_mean, self._z_limit = self._outlier_bounds(columns, profile.z_score if profile is not None else 0.0)
        self._flush_rows = flush_rows or max(16, FLUSH_VALUES // max(len(columns), 1))
        # Requests wait here, as the copies record_prediction made, until flush_rows rows or a scrape.
        self._pending: list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]] = []
        self._pending_rows = 0
        self._predictions = 0
        self._outliers = 0
        self._errors = dict.fromkeys(KNOWN_ERROR_REASONS, 0)  # every rejected or failed request (4xx and 5xx)
        self._client_errors = dict.fromkeys(CLIENT_ERROR_REASONS, 0)
        self._server_errors = dict.fromkeys(SERVER_ERROR_REASONS, 0)
        self._rejected = {(kind, reason): 0 for kind in REJECTED_INPUTS for reason in VALUE_REJECTION_REASONS}
        self._classes = dict.fromkeys(self.classes, 0)
        # Feedback by the (version, track) that made the prediction: this server's own, and the
        # predicting track a feedback token names (feedback may reach any replica of any track).
        own = (self.labels[VERSION], track)
        self._confusion = {(*own, p, a): 0 for p in self.classes for a in self.classes}
        self._regression = {own: [0.0, 0.0, 0, 0.0]}  # squared error, absolute error, observations, fourth power
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
        if self.profile is None:  # nothing to histogram: only the outputs are counted
            x = None
            rows = len(output)
        else:
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
        if self.profile is not None:
            self._count_columns(pending, rows)
        if self.task == "classification":
            for key, n in tally(labels for _, _, labels in pending if labels is not None).items():
                self._classes[key] = self._classes.get(key, 0) + n

    def _count_columns(self, pending: list[tuple[Any, np.ndarray | None, np.ndarray | None]], rows: int) -> None:
        """Bucket the pending requests' features (and prediction value) and count outliers. Caller holds the lock."""
        block = np.empty((len(self._z_mean), rows))  # column-major: each column bucketed as one contiguous run
        width = len(self.feature_names)
        block[:width] = np.concatenate([x for x, _, _ in pending]).T
        if self._has_value:
            block[width] = np.concatenate([np.full(len(x), np.nan) if v is None else v for x, v, _ in pending])
        self._columns.add(block)
        self._outliers += int(np.count_nonzero((np.abs(block - self._z_mean) > self._z_limit).any(axis=0)))  # NaN: False

    def record_feedback(self, predicted: Any, actual: Any, version: str | None = None, track: str | None = None) -> None:
        """Ground truth for earlier predictions (scalars or equal-length sequences), counted under
        the version and track that made them (default: this server's)."""
        made_by = (self.labels[VERSION] if version is None else str(version), self.labels[TRACK] if track is None else track)
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
        if not (np.abs(error) <= 2 * MAX_MAGNITUDE).all():  # NaN too: one such value would poison the sums for good
            self.record_rejected_value("feedback", ErrorReason.NON_FINITE if not np.isfinite(error).all()
                                       else ErrorReason.OUT_OF_RANGE)
            raise ValueError(f"feedback errors must be finite and at most {2 * MAX_MAGNITUDE:g} (nothing was recorded)")
        squared, absolute = float((error**2).sum()), float(np.abs(error).sum())
        fourth = float(((error**2) ** 2).sum())
        with self._lock:
            self._add_feedback_set(made_by)
            sums = self._regression[made_by]
            sums[0] += squared
            sums[1] += absolute
            sums[2] += error.size
            sums[3] += fourth

    def _add_feedback_set(self, made_by: tuple[str, str]) -> None:
        """Every series of a new (version, track) at once, at 0 (under the lock)."""
        if made_by in self._feedback_sets:
            return
        self._feedback_sets.add(made_by)
        self._unexported.add(made_by)
        if self.task == "classification":
            for p in self.classes:
                for a in self.classes:
                    self._confusion.setdefault((*made_by, p, a), 0)
        else:
            self._regression[made_by] = [0.0, 0.0, 0, 0.0]

    def knows_feedback_of(self, version: str, track: str) -> bool:
        """Whether feedback of (version, track) already has its series here."""
        with self._lock:
            return (version, track) in self._feedback_sets

    def feedback_label_sets(self) -> int:
        """How many (version, track) pairs besides this server's own have feedback series."""
        with self._lock:
            return len(self._feedback_sets) - 1

    def record_error(self, reason: ErrorReason | str, status: int | None = None) -> None:
        """One request answered with an error, by ``reason``. The HTTP ``status`` decides whether it
        is the client's (4xx) or the server's (5xx, what the operator's error_rate counts); without
        it the reason does (``model_error`` and ``internal_error`` are the server's)."""
        server = status >= 500 if status is not None else reason in SERVER_ERROR_REASONS
        with self._lock:
            if reason not in ROUTING_REASONS:
                self._errors[reason] = self._errors.get(reason, 0) + 1
            by_reason = self._server_errors if server else self._client_errors
            by_reason[reason] = by_reason.get(reason, 0) + 1

    def record_rejected_value(self, input: str, reason: ErrorReason | str) -> None:
        """A request refused for a value that would poison the sums; ``input`` is features or feedback."""
        with self._lock:
            self._rejected[(input, reason)] = self._rejected.get((input, reason), 0) + 1

    # -- exposition --------------------------------------------------------------------------

    def describe(self) -> list[Metric]:
        return [Metric(m.name, m.documentation, m.type) for m in self.collect()]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._flush()
            scrape = Scrape(
                labels=self.labels,
                task=self.task,
                feature_names=self.feature_names,
                columns=self._columns,
                has_value=self._has_value,
                latency_le=self._latency.le,
                predictions=self._predictions,
                outliers=self._outliers,
                errors=dict(self._errors),
                client_errors=dict(self._client_errors),
                server_errors=dict(self._server_errors),
                rejected_values=dict(self._rejected),
                classes=dict(self._classes),
                confusion={key: 0 if key[:2] in self._unexported else n for key, n in self._confusion.items()},
                regression={made_by: tuple(0 * x for x in sums) if made_by in self._unexported else tuple(sums)
                            for made_by, sums in self._regression.items()},
                column_counts=self._columns.cumulative.copy(),
                column_sums=self._columns.sums.copy(),
                latency_counts=self._latency.cumulative(),
                latency_sum=self._latency.total,
                profile_loaded=self.profile is not None,
            )
            self._unexported.clear()
        yield from metric_families(scrape)


class NullMonitor:
    """The same interface doing nothing: ``modelwarden serve --no-metrics``."""

    def record_prediction(self, features: Any, output: Any, latency: float | None = None, scores: Any = None) -> None:
        """Metrics are off."""

    def record_feedback(self, predicted: Any, actual: Any, version: str | None = None, track: str | None = None) -> None:
        """Metrics are off."""

    def record_error(self, reason: ErrorReason | str, status: int | None = None) -> None:
        """Metrics are off."""

    def record_rejected_value(self, input: str, reason: ErrorReason | str) -> None:
        """Metrics are off."""
