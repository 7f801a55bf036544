"""The reference profile: what a model's inputs and outputs looked like on its training data.

The profile fixes the histogram bucket edges the model server exports (so every replica and
every version of a model shares them) and is the reference distribution the drift analysis
compares live histograms against. The format is documented in docs/profile.md.

Conventions shared with the metrics contract:

* ``edges`` are finite, strictly increasing *upper bounds*; each becomes a Prometheus ``le``
  value and one more bucket (``le="+Inf"``) follows the last edge, so ``counts`` has
  ``len(edges) + 1`` entries. ``counts[i]`` holds the values ``edges[i-1] < x <= edges[i]``
  (not cumulative), exactly what ``np.searchsorted(edges, x, side="left")`` assigns.
* A categorical column is coded by the index of its level in ``levels`` (sorted), so its
  edges are ``0.0, 1.0, …, k-1`` and the ``+Inf`` bucket counts levels never seen in training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

FORMAT_VERSION = 1
DEFAULT_BINS = 20
DEFAULT_Z_SCORE = 3.0
EDGE_SIGNIFICANT_DIGITS = 6
DEFAULT_MAX_SERIES = 20_000  # `modelwarden serve --max-series`: a profile above it is refused at startup

Kind = Literal["numeric", "categorical"]
Task = Literal["classification", "regression"]


class ProfileError(ValueError):
    """The data cannot be profiled (empty, non-finite, or inconsistent)."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Distribution(_Model):
    """One column's reference histogram plus the moments needed for z-scores."""

    name: str
    kind: Kind
    edges: list[float] = Field(description="finite, increasing bucket upper bounds (Prometheus le); +Inf follows")
    counts: list[int] = Field(description="observations per bucket, len(edges)+1, last is the +Inf bucket")
    count: int
    mean: float | None = None
    std: float | None = Field(default=None, description="population standard deviation (ddof=0)")
    levels: list[str] | None = Field(default=None, description="categorical only: level i is coded as i")

    @model_validator(mode="after")
    def _consistent(self) -> "Distribution":
        if any(not math.isfinite(edge) for edge in self.edges):
            raise ValueError(f"{self.name}: edges must be finite")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"{self.name}: edges must be strictly increasing")
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(f"{self.name}: counts needs len(edges)+1 entries (the last is the +Inf bucket)")
        if sum(self.counts) != self.count:
            raise ValueError(f"{self.name}: counts sum to {sum(self.counts)}, not count={self.count}")
        if self.kind == "categorical":
            if self.levels is None or self.edges != [float(i) for i in range(len(self.levels))]:
                raise ValueError(f"{self.name}: a categorical column needs levels and edges 0..k-1")
        return self


class PredictionProfile(Distribution):
    """The model's output on the training data (or the target column when no model was given).

    Classification: ``kind`` is categorical over the classes, and ``score`` is the histogram
    behind ``modelwarden_prediction_value`` (probability of ``positiveClass`` for a binary
    classifier, probability of the predicted class otherwise; absent without predict_proba).
    Regression: ``kind`` is numeric and the distribution itself is the prediction_value one.
    """

    task: Task
    source: Literal["model", "target"]
    score: Distribution | None = None
    score_meaning: str | None = None
    positive_class: str | None = None

    def value_distribution(self) -> Distribution | None:
        """The distribution exported as ``modelwarden_prediction_value``."""
        return self.score if self.task == "classification" else self


class Profile(_Model):
    """A versioned reference profile (``formatVersion`` 1)."""

    format_version: Literal[1] = FORMAT_VERSION
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    target: str
    rows: int
    bins: int
    z_score: float = DEFAULT_Z_SCORE
    features: list[Distribution]
    prediction: PredictionProfile

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def classes(self) -> list[str]:
        return list(self.prediction.levels or []) if self.prediction.task == "classification" else []

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2, exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Profile":
        return cls.model_validate_json(text)


def level_key(value: Any) -> str:
    """The canonical string of a categorical value or class label (1, 1.0 and "1" agree)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isfinite(number) and number == int(number):
            return str(int(number))
        return repr(number)
    return str(value)


def round_edge(value: float) -> float:
    """Edges keep a few significant digits so that their ``le`` strings stay short and stable."""
    return float(f"{value:.{EDGE_SIGNIFICANT_DIGITS}g}") + 0.0  # + 0.0 turns -0.0 into 0.0


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Upper bucket bounds at the interior quantiles (observed values, so ties collapse), rounded, deduplicated."""
    quantiles = np.quantile(values, np.arange(1, bins) / bins, method="inverted_cdf")
    return np.unique([round_edge(q) for q in quantiles])


def numeric_distribution(name: str, values: Sequence[float] | np.ndarray, bins: int = DEFAULT_BINS) -> Distribution:
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ProfileError(f"{name}: no values to profile")
    if not np.isfinite(x).all():
        raise ProfileError(f"{name}: values must be finite (found NaN or infinity)")
    if bins < 2:
        raise ProfileError("bins must be at least 2")
    edges = quantile_edges(x, bins)
    counts = np.bincount(np.searchsorted(edges, x, side="left"), minlength=edges.size + 1)
    return Distribution(
        name=name,
        kind="numeric",
        edges=edges.tolist(),
        counts=counts.tolist(),
        count=int(x.size),
        mean=float(x.mean()),
        std=float(x.std()),
    )


def categorical_distribution(name: str, values: Sequence[Any] | np.ndarray) -> Distribution:
    keys = [level_key(value) for value in values]
    if not keys:
        raise ProfileError(f"{name}: no values to profile")
    levels, counts = np.unique(np.asarray(keys, dtype=str), return_counts=True)
    return Distribution(
        name=name,
        kind="categorical",
        edges=[float(i) for i in range(levels.size)],
        counts=[*counts.tolist(), 0],
        count=len(keys),
        levels=levels.tolist(),
    )


def distribution(name: str, values: Sequence[Any] | np.ndarray, kind: Kind, bins: int) -> Distribution:
    return categorical_distribution(name, values) if kind == "categorical" else numeric_distribution(name, values, bins)


def prediction_profile(
    task: Task,
    source: Literal["model", "target"],
    outputs: Sequence[Any] | np.ndarray,
    bins: int = DEFAULT_BINS,
    *,
    classes: Sequence[Any] | None = None,
    scores: np.ndarray | None = None,
    score_meaning: str | None = None,
    positive_class: Any = None,
) -> PredictionProfile:
    """The prediction's distribution; ``classes`` lists every class, even ones never predicted."""
    if task == "regression":
        base = numeric_distribution("prediction", outputs, bins)
        return PredictionProfile(**base.model_dump(), task=task, source=source)
    keys = [level_key(value) for value in outputs]
    levels = sorted({level_key(c) for c in classes} if classes is not None else set(keys))
    index = {level: i for i, level in enumerate(levels)}
    counts = [0] * (len(levels) + 1)
    for key in keys:
        counts[index.get(key, len(levels))] += 1
    return PredictionProfile(
        name="prediction",
        kind="categorical",
        edges=[float(i) for i in range(len(levels))],
        counts=counts,
        count=len(keys),
        levels=levels,
        task=task,
        source=source,
        score=None if scores is None else numeric_distribution("score", scores, bins),
        score_meaning=score_meaning if scores is not None else None,
        positive_class=None if positive_class is None else level_key(positive_class),
    )


@dataclass(frozen=True)
class SeriesCount:
    """The Prometheus series one model-server process exports for a profile, by metric family."""

    features: int  # modelwarden_feature_value: per feature, its edges + le="+Inf" + _sum + _count
    prediction_value: int  # modelwarden_prediction_value (0 for a classifier without scores)
    classes: int  # modelwarden_predicted_class_total: one per class
    feedback: int  # modelwarden_feedback_total (classes²), or the three regression feedback series
    latency: int  # modelwarden_inference_latency_seconds
    errors: int  # modelwarden_prediction_errors_total: one per known reason
    other: int  # modelwarden_predictions_total and modelwarden_prediction_outliers_total

    @property
    def total(self) -> int:
        return sum(self.breakdown().values())

    def breakdown(self) -> dict[str, int]:
        """Series per family group, keyed as `modelwarden profile` prints them."""
        return {
            "features": self.features,
            "prediction value": self.prediction_value,
            "classes": self.classes,
            "feedback": self.feedback,
            "latency": self.latency,
            "errors": self.errors,
            "other": self.other,
        }

    def details(self) -> str:
        """``features 132, prediction value 22, ...``"""
        return ", ".join(f"{key} {value}" for key, value in self.breakdown().items())

    def __str__(self) -> str:
        return f"{self.total} ({self.details()})"


# Families of one series each, whatever the profile (names as in docs/metrics.md).
UNLABELLED_COUNTERS = ("modelwarden_predictions_total", "modelwarden_prediction_outliers_total")
REGRESSION_FEEDBACK = (
    "modelwarden_feedback_squared_error_sum",
    "modelwarden_feedback_absolute_error_sum",
    "modelwarden_feedback_observations_total",
)


def histogram_series(edges: Sequence[float]) -> int:
    """A histogram's series: one bucket per edge, the ``+Inf`` bucket, ``_sum`` and ``_count``."""
    return len(edges) + 3


def series_count(profile: Profile, latency_buckets: Sequence[float] | None = None) -> SeriesCount:
    """How many series one ``modelwarden serve`` process (one ``ModelMonitor``) exports for ``profile``.

    Defined as the series once every family has been observed; ``ModelMonitor`` exports all of
    them at 0 from the start (every error reason, class and predicted×actual pair), so it is also
    the count of the first scrape. It assumes the model's classes are the profile's (true for a
    profile built with ``--model``): a class the profile lacks would add its own series when
    predicted. Feedback is counted under this process's own version and track; feedback for
    another (version, track)'s predictions (feedback tokens) adds the feedback series again per
    such pair. Multiply by pods × tracks (and versions) for what Prometheus stores; see
    docs/metrics.md, "How many series". ``latency_buckets`` defaults to the monitor's.
    """
    # Imported here: the monitor imports this module, and the counts must follow its constants.
    from modelwarden.serving.monitor import KNOWN_ERROR_REASONS, LATENCY_BUCKETS

    value = profile.prediction.value_distribution()
    classes = len(profile.classes)  # none for a regressor
    return SeriesCount(
        features=sum(histogram_series(feature.edges) for feature in profile.features),
        prediction_value=histogram_series(value.edges) if value is not None else 0,
        classes=classes,
        feedback=classes * classes if profile.prediction.task == "classification" else len(REGRESSION_FEEDBACK),
        latency=histogram_series(LATENCY_BUCKETS if latency_buckets is None else latency_buckets),
        errors=len(KNOWN_ERROR_REASONS),
        other=len(UNLABELLED_COUNTERS),
    )
