"""Computing a reference profile from training data (`modelwarden profile`), and what it costs.

The schema of the profile (profile.json: ``Profile``, ``Distribution``, ``PredictionProfile``)
is part of the metrics contract and lives in :mod:`modelwarden.contract.profile`. This module turns columns of
training data into those models (quantile edges rounded so that their ``le`` strings stay short
and stable, categorical levels coded by index), builds a whole profile from a training CSV and
optionally the model (``build_profile_from_csv``: every column except the target is a feature, in
file order; columns are numeric unless listed as categorical; empty or non-finite cells are an
error rather than silently dropped, because the model would never have been trained on them), and
counts the series a profile makes a server export (``series_count``, the ``--max-series`` check).
For a binary classifier with scores, the decision threshold is made one of the score edges and,
given labels, the scores' calibration is recorded (``score_calibration``).
The format is documented in docs/profile.md.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelwarden.contract import metrics
from modelwarden.contract.metrics import LATENCY_BUCKETS, level_key
from modelwarden.contract.profile import (
    DEFAULT_Z_SCORE,
    Calibration,
    Distribution,
    Kind,
    PredictionProfile,
    Profile,
    Task,
)
from modelwarden.contract.reasons import (
    CLIENT_ERROR_REASONS,
    KNOWN_ERROR_REASONS,
    SERVER_ERROR_REASONS,
    VALUE_REJECTION_REASONS,
)
from modelwarden.serving.model import ModelRunner, load_runner

DEFAULT_BINS = 20
DEFAULT_THRESHOLD = 0.5  # a binary predict_proba model predicts positiveClass when its score is above it (argmax)
EDGE_SIGNIFICANT_DIGITS = 6
# Edges at the 0.5 %/99.5 % quantiles make moves inside the open-ended outer buckets visible (the
# top 2 % moved by 3σ), where the data holds TAIL_MIN_ROWS rows beyond each (docs/profile.md).
TAIL_QUANTILE, TAIL_MIN_ROWS = 0.005, 10
DEFAULT_MAX_SERIES = 20_000  # `modelwarden serve --max-series`: a profile above it is refused at startup


class ProfileError(ValueError):
    """The data cannot be profiled (empty, non-finite, or inconsistent)."""


def round_edge(value: float) -> float:
    """Edges keep a few significant digits so that their ``le`` strings stay short and stable."""
    return float(f"{value:.{EDGE_SIGNIFICANT_DIGITS}g}") + 0.0  # + 0.0 turns -0.0 into 0.0


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Upper bucket bounds at the interior and tail quantiles (observed values: ties collapse), rounded, deduplicated."""
    probabilities = np.arange(1, bins) / bins
    if values.size * TAIL_QUANTILE >= TAIL_MIN_ROWS and 1 / bins > TAIL_QUANTILE:
        probabilities = np.concatenate([[TAIL_QUANTILE], probabilities, [1 - TAIL_QUANTILE]])
    quantiles = np.quantile(values, probabilities, method="inverted_cdf")
    return np.unique([round_edge(q) for q in quantiles])


def numeric_distribution(
    name: str, values: Sequence[float] | np.ndarray, bins: int = DEFAULT_BINS, extra_edge: float | None = None
) -> Distribution:
    """Quantile buckets; ``extra_edge`` (rounded as every edge) is added to the edges, e.g. a decision threshold."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ProfileError(f"{name}: no values to profile")
    if not np.isfinite(x).all():
        raise ProfileError(f"{name}: values must be finite (found NaN or infinity)")
    if bins < 2:
        raise ProfileError("bins must be at least 2")
    edges = quantile_edges(x, bins)
    if extra_edge is not None:
        edges = np.unique([*edges.tolist(), round_edge(extra_edge)])
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
    threshold: float = DEFAULT_THRESHOLD,
    labels: Sequence[Any] | np.ndarray | None = None,
) -> PredictionProfile:
    """The prediction's distribution; ``classes`` lists every class, even ones never predicted.

    A binary classifier's scores (``positive_class`` set) get ``threshold`` among their edges;
    with ``labels`` (one per row, all among ``classes``) their calibration is recorded too.
    Labels outside the classes record none (they are not what the model was trained on).
    """
    if task == "regression":
        base = numeric_distribution("prediction", outputs, bins)
        return PredictionProfile(**base.model_dump(), task=task, source=source)
    keys = [level_key(value) for value in outputs]
    levels = sorted({level_key(c) for c in classes} if classes is not None else set(keys))
    index = {level: i for i, level in enumerate(levels)}
    counts = [0] * (len(levels) + 1)
    for key in keys:
        counts[index.get(key, len(levels))] += 1
    binary = scores is not None and positive_class is not None
    if binary and not 0.0 < round_edge(threshold) < 1.0:
        raise ProfileError(f"the decision threshold must be between 0 and 1, not {threshold:g}")
    score = None if scores is None else numeric_distribution("score", scores, bins, round_edge(threshold) if binary else None)
    calibration = None
    if binary and labels is not None:
        assert scores is not None and score is not None
        label_keys = [level_key(label) for label in labels]
        if len(label_keys) != len(scores):
            raise ProfileError(f"{len(label_keys)} labels for {len(scores)} scores")
        if set(label_keys) <= set(levels):
            positive = np.asarray([key == level_key(positive_class) for key in label_keys], dtype=bool)
            calibration = score_calibration(np.asarray(scores, dtype=float), positive, score.edges, round_edge(threshold))
    return PredictionProfile(
        name="prediction",
        kind="categorical",
        edges=[float(i) for i in range(len(levels))],
        counts=counts,
        count=len(keys),
        levels=levels,
        task=task,
        source=source,
        score=score,
        score_meaning=score_meaning if scores is not None else None,
        positive_class=None if positive_class is None else level_key(positive_class),
        calibration=calibration,
    )


def score_calibration(scores: np.ndarray, positive: np.ndarray, edges: Sequence[float], threshold: float) -> Calibration:
    """Per score bucket (``edges`` with ``threshold`` among them): mean score and labelled positives;
    the accuracy the scores promise and the one the labels give (positive when score > threshold)."""
    if threshold not in edges:
        raise ProfileError("the decision threshold must be one of the score edges")
    bucket = np.searchsorted(np.asarray(edges, dtype=float), scores, side="left")
    buckets = len(edges) + 1
    rows = np.bincount(bucket, minlength=buckets)
    sums = np.bincount(bucket, weights=scores, minlength=buckets)
    positives = np.bincount(bucket, weights=positive.astype(float), minlength=buckets)
    predicted = scores > threshold
    return Calibration(
        threshold=threshold,
        mean_scores=[float(np.clip(total / n, 0.0, 1.0)) if n else None for total, n in zip(sums, rows)],
        positives=[int(round(p)) for p in positives],
        expected_accuracy=float(np.where(predicted, scores, 1.0 - scores).mean()),
        realised_accuracy=float((predicted == positive).mean()),
        rows=int(scores.size),
    )


@dataclass(frozen=True)
class SeriesCount:
    """The Prometheus series one model-server process exports for a profile, by metric family."""

    features: int  # modelwarden_feature_value: per feature, its edges + le="+Inf" + _sum + _count
    prediction_value: int  # modelwarden_prediction_value (0 for a classifier without scores)
    classes: int  # modelwarden_predicted_class_total: one per class
    feedback: int  # modelwarden_feedback_total (classes²), or the three regression feedback series
    latency: int  # modelwarden_inference_latency_seconds
    errors: int  # prediction, client and server errors by reason; rejected values by input and reason
    other: int  # modelwarden_predictions_total, modelwarden_prediction_outliers_total, modelwarden_profile_loaded
    feedback_cache: int = 0  # `modelwarden serve` only: the cache's evictions counter and bytes gauge

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
            "feedback cache": self.feedback_cache,
        }

    def details(self) -> str:
        """``features 132, prediction value 22, ...``"""
        return ", ".join(f"{key} {value}" for key, value in self.breakdown().items())

    def __str__(self) -> str:
        return f"{self.total} ({self.details()})"


# Families of one series each, whatever the profile.
UNLABELLED_COUNTERS = (metrics.PREDICTIONS, metrics.PREDICTION_OUTLIERS)
UNLABELLED_SERIES = (*UNLABELLED_COUNTERS, metrics.PROFILE_LOADED)
SERVER_ONLY_SERIES = (metrics.FEEDBACK_CACHE_EVICTIONS, metrics.FEEDBACK_CACHE_BYTES)
# Every error family's series: each exported at 0 from the start.
ERROR_SERIES = (
    len(KNOWN_ERROR_REASONS) + len(CLIENT_ERROR_REASONS) + len(SERVER_ERROR_REASONS)
    + len(metrics.REJECTED_INPUTS) * len(VALUE_REJECTION_REASONS)
)


def histogram_series(edges: Sequence[float]) -> int:
    """A histogram's series: one bucket per edge, the ``+Inf`` bucket, ``_sum`` and ``_count``."""
    return len(edges) + 3


def series_count(profile: Profile, latency_buckets: Sequence[float] | None = None, server: bool = True) -> SeriesCount:
    """How many series one ``modelwarden serve`` process (one ``ModelMonitor``, plus the feedback
    cache's two series unless ``server`` is False) exports for ``profile``.

    Defined as the series once every family has been observed; ``ModelMonitor`` exports all of
    them at 0 from the start (every error reason, class and predicted×actual pair), so it is also
    the count of the first scrape. It assumes the model's classes are the profile's (true for a
    profile built with ``--model``): a class the profile lacks would add its own series when
    predicted. Feedback is counted under this process's own version and track; feedback for
    another (version, track)'s predictions (feedback tokens) adds the feedback series again per
    such pair. Multiply by pods × tracks (and versions) for what Prometheus stores; see
    docs/metrics.md, "How many series". ``latency_buckets`` defaults to the monitor's.
    """
    value = profile.prediction.value_distribution()
    classes = len(profile.classes)  # none for a regressor
    return SeriesCount(
        features=sum(histogram_series(feature.edges) for feature in profile.features),
        prediction_value=histogram_series(value.edges) if value is not None else 0,
        classes=classes,
        feedback=classes * classes if profile.prediction.task == "classification" else len(metrics.REGRESSION_FEEDBACK),
        latency=histogram_series(LATENCY_BUCKETS if latency_buckets is None else latency_buckets),
        errors=ERROR_SERIES,
        other=len(UNLABELLED_SERIES),
        feedback_cache=len(SERVER_ONLY_SERIES) if server else 0,
    )


# -- from a training CSV ----------------------------------------------------------------------

REGRESSION_MIN_DISTINCT = 20  # a numeric target with more distinct values than this is a regression target


def read_csv(path: Path) -> dict[str, list[str]]:
    """Columns of raw cells, keyed by header name, in file order."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ProfileError(f"{path}: empty file (a header row is required)")
        if len(set(header)) != len(header):
            raise ProfileError(f"{path}: duplicate column names in the header")
        columns: dict[str, list[str]] = {name: [] for name in header}
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ProfileError(f"{path}:{line}: {len(row)} cells, the header has {len(header)}")
            for name, cell in zip(header, row):
                columns[name].append(cell)
    if not columns[header[0]]:
        raise ProfileError(f"{path}: no data rows")
    return columns


def parse_column(name: str, cells: list[str], categorical: bool) -> np.ndarray:
    """Numbers as float64; categorical cells as floats when all parse as numbers, else strings."""
    numbers = np.empty(len(cells))
    for row, cell in enumerate(cells):
        try:
            numbers[row] = float(cell)
        except ValueError:
            if categorical:
                return np.array([_non_empty(name, row, c) for row, c in enumerate(cells)], dtype=object)
            raise ProfileError(
                f"column {name!r}, row {row + 1}: {cell!r} is not a number (list it in --categorical?)"
            ) from None
        if not math.isfinite(numbers[row]):
            raise ProfileError(f"column {name!r}, row {row + 1}: {cell!r} is not finite")
    return numbers


def _non_empty(name: str, row: int, cell: str) -> str:
    if not cell:
        raise ProfileError(f"column {name!r}, row {row + 1}: empty cell")
    return cell


def model_input(columns: list[np.ndarray]) -> np.ndarray:
    """The training matrix as the model saw it: float64, or object when text categories exist."""
    if all(column.dtype.kind == "f" for column in columns):
        return np.column_stack(columns)
    matrix = np.empty((len(columns[0]), len(columns)), dtype=object)
    for i, column in enumerate(columns):
        matrix[:, i] = column
    return matrix


def infer_task(target: np.ndarray) -> Task:
    if target.dtype.kind != "f":
        return "classification"
    integral = bool(np.all(target == np.round(target)))
    return "classification" if integral and np.unique(target).size <= REGRESSION_MIN_DISTINCT else "regression"


def build_profile_from_csv(
    data: Path,
    target: str,
    *,
    bins: int = DEFAULT_BINS,
    categorical: frozenset[str] = frozenset(),
    model: str | None = None,
    task: Task | None = None,
    z_score: float = DEFAULT_Z_SCORE,
    trusted_skops_types: Sequence[str] = (),
    threshold: float = DEFAULT_THRESHOLD,
) -> Profile:
    raw = read_csv(data)
    if target not in raw:
        raise ProfileError(f"target column {target!r} is not in {list(raw)}")
    unknown = sorted(categorical - set(raw))
    if unknown:
        raise ProfileError(f"--categorical names unknown column(s) {unknown}")
    names = [name for name in raw if name != target]
    if not names:
        raise ProfileError("the CSV has no feature columns besides the target")
    columns = [parse_column(name, raw[name], name in categorical) for name in names]
    features = [
        distribution(name, column, "categorical" if name in categorical else "numeric", bins)
        for name, column in zip(names, columns)
    ]
    target_values = parse_column(target, raw[target], categorical=True)
    if model is None:
        chosen: Task = task or infer_task(target_values)
        prediction = prediction_profile(chosen, "target", target_values, bins)
    else:
        runner, _ = load_runner(model, trusted_skops_types)
        prediction = _model_prediction(runner, model_input(columns), bins, task, target_values, threshold)
    return Profile(
        target=target, rows=len(raw[target]), bins=bins, z_score=z_score, features=features, prediction=prediction
    )


def _model_prediction(
    runner: ModelRunner, x: np.ndarray, bins: int, task: Task | None, labels: np.ndarray, threshold: float
) -> Any:
    if task is not None and task != runner.task:
        raise ProfileError(f"--task {task} contradicts the model, which is a {runner.task} model")
    try:
        outputs = runner.predict(x)
    except Exception as exc:  # noqa: BLE001 - surfaced as a one-line profile error
        raise ProfileError(f"the model cannot predict on the training data: {type(exc).__name__}: {exc}") from exc
    return prediction_profile(
        runner.task,  # type: ignore[arg-type]
        "model",
        outputs.predicted,
        bins,
        classes=runner.classes,
        scores=outputs.scores,
        score_meaning=runner.score_meaning,
        positive_class=runner.positive_class,
        threshold=threshold,
        labels=labels,
    )
