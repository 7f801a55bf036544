"""The metric provider seam: run PromQL, get numbers. One implementation per file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class InstantVector:
    """An instant-query result: one label set and one value per series.

    ``fetch_seconds`` (HTTP round trip, including the backend's work) and ``decode_seconds``
    (JSON to arrays) are measured by the provider so that evaluations can report where time goes.
    """

    labels: list[dict[str, str]]
    values: np.ndarray
    fetch_seconds: float = 0.0
    decode_seconds: float = 0.0
    # Set when other vectors share these very labels in this order (a backtest's instants of one
    # range answer): decoders may reuse what they derived from the labels, keyed on this object.
    layout: object | None = None


@dataclass(frozen=True)
class RangeMatrix:
    """A range-query result: one label set, timestamps and values per series."""

    labels: list[dict[str, str]]
    timestamps: list[np.ndarray]
    values: list[np.ndarray]
    fetch_seconds: float = 0.0
    decode_seconds: float = 0.0


class MetricProvider(Protocol):
    """Runs PromQL against a Prometheus-API backend.

    Raises ``metrics.errors.NoData`` for an empty result, ``QueryError`` for a rejected query
    and ``Unreachable`` when the backend cannot answer.
    """

    def query(self, promql: str, at: datetime | None = None) -> InstantVector: ...

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float) -> RangeMatrix: ...


class DeadlineProvider(Protocol):
    """A MetricProvider whose queries also take a deadline (time.monotonic()) for the whole call,
    retries included: the pooled providers an evaluation's FailFastProvider wraps."""

    def query(self, promql: str, at: datetime | None = None, deadline: float | None = None) -> InstantVector: ...

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float,
                    deadline: float | None = None) -> RangeMatrix: ...
