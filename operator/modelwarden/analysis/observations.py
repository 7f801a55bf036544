"""What an evaluation judges, fetched: the parts of each side's window, the reference, failures.

``prometheus.collect`` fills these; ``analysis.judge`` and its check modules read them. Pure data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from modelwarden.analysis.histograms import BucketMatrix, bin_counts
from modelwarden.analysis.verdicts import result
from modelwarden.api.checks import PerformanceMetric
from modelwarden.api.driftpolicy import CheckResult, Verdict
from modelwarden.contract.profile import Profile

CLASSIFICATION_METRICS = {PerformanceMetric.ACCURACY, PerformanceMetric.PRECISION, PerformanceMetric.RECALL, PerformanceMetric.F1}
REGRESSION_METRICS = {PerformanceMetric.MSE, PerformanceMetric.MAE, PerformanceMetric.RMSE}
LATENCY_QUANTILES = {PerformanceMetric.LATENCY_P50: 0.5, PerformanceMetric.LATENCY_P95: 0.95, PerformanceMetric.LATENCY_P99: 0.99}
ESTIMATED_METRICS = {PerformanceMetric.ESTIMATED_ACCURACY, PerformanceMetric.ESTIMATED_PRECISION,
                     PerformanceMetric.ESTIMATED_RECALL, PerformanceMetric.ESTIMATED_F1}


class Side(Enum):
    """Whose window a part of the observations describes."""

    CURRENT = "current"  # the judged track over the policy's window
    REFERENCE = "reference"  # the drift reference (another track, or the same track earlier)
    BASELINE = "baseline"  # the comparison's track


class Kind(Enum):
    """What a part of a track window holds; the value is the TrackWindow field holding it."""

    FEATURES = "features"
    PREDICTION = "prediction"
    LATENCY = "latency"
    CONFUSION = "confusion"
    COUNTERS = "counters"
    CLASSES = "classes"
    PAIRED = "paired"


@dataclass(frozen=True)
class WindowPart:
    """One fetched part of a side's window, e.g. the current track's feature histograms."""

    side: Side
    kind: Kind


@dataclass(frozen=True)
class CustomPart:
    """The value of one custom check's query."""

    name: str


Part = WindowPart | CustomPart
"""What one query fetches: the key of planned queries and of Observations.failures."""


@dataclass(frozen=True)
class TrackWindow:
    """What one track showed over one window; None where not fetched."""

    features: BucketMatrix | None = None
    prediction: BucketMatrix | None = None  # one row
    latency: BucketMatrix | None = None  # one row
    confusion: Mapping[tuple[str, str], float] | None = None  # (predicted, actual) -> count
    counters: Mapping[str, float] | None = None  # quantity (metrics.queries.COUNTERS) -> increase
    classes: Mapping[str, float] | None = None  # predicted class -> predictions
    paired: Mapping[tuple[str, str], float] | None = None  # (predicted, the paired model's class) -> rows

    def part(self, kind: Kind) -> Any:
        return getattr(self, kind.value)


@dataclass(frozen=True)
class Reference:
    """The baseline distributions for drift: another window, or a profile (kept whole for the
    estimated_* checks, which read its calibration)."""

    description: str
    features: BucketMatrix
    prediction: BucketMatrix
    categorical: frozenset[str] = frozenset()
    profile: Profile | None = None
    classes: Mapping[str, float] | None = None  # predicted class -> predictions (a classifier's prediction check without scores)


@dataclass(frozen=True)
class Observations:
    """Everything an evaluation needs, fetched. ``failures`` maps a part (WindowPart(Side.CURRENT,
    Kind.FEATURES), CustomPart("p99"), …) to why it could not be fetched."""

    current: TrackWindow
    reference: Reference | None = None
    baseline: TrackWindow | None = None
    custom: Mapping[str, float | None] = field(default_factory=dict)  # custom check name -> value
    failures: Mapping[Part, str] = field(default_factory=dict)


def part_of(observations: Observations, side: Side, kind: Kind) -> tuple[Any, str | None]:
    """A fetched part of the current or baseline window (None if it had no series), or the reason it is missing."""
    failure = observations.failures.get(WindowPart(side, kind))
    window = observations.current if side is Side.CURRENT else observations.baseline
    if failure:
        return None, failure
    if window is None:
        return None, f"no {side.value} track data"
    return window.part(kind), None


def single_histogram(matrix: BucketMatrix | None) -> tuple[np.ndarray, np.ndarray]:
    if matrix is None or not matrix.names:
        return np.empty(0), np.empty(0)
    counts = bin_counts(matrix.cumulative, matrix.le)[0]
    valid = ~np.isnan(matrix.le[0])
    return matrix.le[0][valid], counts[valid]


def failed(check: str, message: str) -> CheckResult:
    return result(check, Verdict.ERROR, message)
