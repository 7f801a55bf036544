"""A DriftPolicy's evaluation history as scalar time series (pure), for `modelwarden history`.

Two sources. The policy's status: the ring buffer of past evaluations (verdicts and the checks
that failed) and the last evaluation's check values. The operator's own metrics over a time
range, when they are scraped (docs/driftpolicy.md, "Operator metrics"): every check's value
(modelwarden_operator_check_value) and the largest features' drift scores
(modelwarden_operator_drift_score). Steps are whole seconds since the epoch: from status, the
evaluations' times (as in the MLflow runs of spec.tracking); from Prometheus, the range query's
grid (a gauge repeats one evaluation's value until the next, so an interval of 5m at a step of
1m shows five equal points).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelwarden.api.duration import parse_timestamp


@dataclass(frozen=True)
class Scalar:
    tag: str
    step: int  # whole seconds since the epoch
    wall_time: float
    value: float


def _point(tag: str, at: datetime, value: float) -> Scalar:
    seconds = at.timestamp()
    return Scalar(tag, int(seconds), seconds, value)


def from_status(status: Mapping[str, Any]) -> list[Scalar]:
    """Per past evaluation: `breach/failing` (1 for a Fail verdict, else 0) and `failing/<check>` for
    every check that failed at least once (1 when it failed then); the last evaluation's values as
    `check/<name>`. Error and InsufficientData evaluations say nothing about the model: skipped."""
    evaluations = [e for e in status.get("evaluations") or [] if e.get("verdict") not in ("Error", "InsufficientData")]
    checks = sorted({check for e in evaluations for check in e.get("failed") or []})
    points: list[Scalar] = []
    for evaluation in evaluations:
        at = parse_timestamp(evaluation["time"])
        assert at is not None
        failed = set(evaluation.get("failed") or [])
        points.append(_point("breach/failing", at, 1.0 if evaluation["verdict"] == "Fail" else 0.0))
        points.extend(_point(f"failing/{check}", at, 1.0 if check in failed else 0.0) for check in checks)
    last = status.get("lastEvaluation") or {}
    if last.get("time"):
        at = parse_timestamp(last["time"])
        assert at is not None
        points.extend(_point(f"check/{r['check']}", at, float(r["value"])) for r in last.get("results") or []
                      if isinstance(r.get("value"), (int, float)) and math.isfinite(r["value"]))
    return points


def from_series(prefix: str, series: Iterable[tuple[Mapping[str, str], Iterable[tuple[float, float]]]]) -> list[Scalar]:
    """Range-query series as scalars: `check/<check>` or `drift/<check>/<feature>`; NaN points (a
    check without a value) are left out."""
    points = []
    for labels, samples in series:
        tag = f"{prefix}/{labels.get('check', '')}" + (f"/{labels['feature']}" if prefix == "drift" and labels.get("feature") else "")
        points.extend(Scalar(tag, int(t), float(t), float(v)) for t, v in samples if math.isfinite(v))
    return points
