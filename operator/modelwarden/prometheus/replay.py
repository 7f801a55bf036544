"""Instant queries on a time grid, answered from range queries: the backtest's MetricProvider.

A Prometheus range query *is* the same expression evaluated as an instant query at start, start +
step, …, so answering ``query(promql, at=t)`` for a grid instant ``t`` from the range result gives
exactly what the operator's instant query at ``t`` would have got — with one round trip per
expression for the whole range instead of one per evaluation. The decision code above it
(``collect``, ``judge``, the policy's decisions) is unchanged.

Prometheus refuses more than 11,000 points per series in one answer, and a 30-day answer of
thousands of bucket series would not fit in memory, so the grid is cut into chunks: each
expression is fetched once per chunk (one ``count()`` instant query first sizes the chunk), and
only the chunk in use is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from modelwarden.prometheus.errors import MetricsError, NoData
from modelwarden.prometheus.provider import InstantVector, MetricProvider, RangeMatrix

MAX_POINTS_PER_SERIES = 11_000  # Prometheus's own limit for one range query
DEFAULT_POINTS_PER_QUERY = 1_000_000  # ≈ 25 MB of JSON per answer, ≈ 250 MB while it is decoded


@dataclass(frozen=True)
class Grid:
    """The instants a backtest evaluates: start, start + step, …, up to end."""

    start: datetime
    step: timedelta
    steps: int  # number of instants

    @classmethod
    def between(cls, start: datetime, end: datetime, step: timedelta) -> "Grid":
        if step <= timedelta(0):
            raise ValueError("the step must be positive")
        if end < start:
            raise ValueError("the end of the range is before its start")
        return cls(start, step, int((end - start) / step) + 1)

    def at(self, index: int) -> datetime:
        return self.start + index * self.step

    def index(self, moment: datetime) -> int:
        offset = (moment - self.start) / self.step
        index = round(offset)
        if not 0 <= index < self.steps or abs(offset - index) > 1e-6:
            raise ValueError(f"{moment.isoformat()} is not an instant of the backtest grid")
        return index


@dataclass(eq=False)  # hashed by identity: decoders key what they derive from its labels on it
class _Chunk:
    """One expression's answers for grid instants [first, first + length): values[series, instant],
    present[series, instant] (a series has no point where the expression had no value)."""

    first: int
    length: int
    labels: list[dict[str, str]]
    values: np.ndarray
    present: np.ndarray
    error: Exception | None = None  # the range query failed: each of these instants raises it


class RangeReplay:
    """A MetricProvider answering instant queries at grid instants from chunked range queries.

    ``range_queries`` and ``count_queries`` count the round trips, for the backtest's report (and
    its tests). A failed range query fails every instant of that chunk the same way, as the
    instant queries would have failed.
    """

    def __init__(self, inner: MetricProvider, grid: Grid, points_per_query: int = DEFAULT_POINTS_PER_QUERY) -> None:
        self.inner = inner
        self.grid = grid
        self.points_per_query = points_per_query
        self.range_queries = 0
        self.count_queries = 0
        self._chunks: dict[str, _Chunk] = {}
        self._chunk_steps: dict[str, int] = {}

    def query(self, promql: str, at: datetime | None = None) -> InstantVector:
        if at is None:
            raise ValueError("a replayed query needs its instant")
        index = self.grid.index(at)
        chunk = self._chunk_for(promql, index)
        if chunk.error is not None:
            raise chunk.error
        column = index - chunk.first
        present = chunk.present[:, column]
        if not present.any():
            raise NoData(f"no series for {promql!r} at {at.isoformat()}")
        if present.all():  # the usual case: every series has a point here
            return InstantVector(chunk.labels, chunk.values[:, column], layout=chunk)
        rows = np.flatnonzero(present)
        return InstantVector([chunk.labels[i] for i in rows], chunk.values[rows, column])

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float) -> RangeMatrix:
        return self.inner.query_range(promql, start, end, step_seconds)

    def _chunk_for(self, promql: str, index: int) -> _Chunk:
        cached = self._chunks.get(promql)
        if cached is not None and cached.first <= index < cached.first + cached.length:
            return cached
        steps = self._chunk_steps.get(promql)
        if steps is None:
            steps = self._chunk_steps[promql] = self._size(promql, index)
        length = min(steps, self.grid.steps - index)  # the grid is walked forwards: a chunk starts where first needed
        try:
            chunk = self._fetch(promql, index, length)
        except NoData:
            chunk = _Chunk(index, length, [], np.zeros((0, length)), np.zeros((0, length), dtype=bool))
        except MetricsError as exc:  # QueryError, Unreachable, MalformedAnswer: every instant of the chunk sees it
            chunk = _Chunk(index, length, [], np.zeros((0, length)), np.zeros((0, length), dtype=bool), exc)
        self._chunks[promql] = chunk
        return chunk

    def _size(self, promql: str, index: int) -> int:
        """Instants per range query: Prometheus's limit, and a points budget over the series count
        at the range's start and end (one cheap ``count()`` instant query each)."""
        series = 1
        for moment in {self.grid.at(index), self.grid.at(self.grid.steps - 1)}:
            self.count_queries += 1
            try:
                counted = self.inner.query(f"count({promql})", at=moment)
                series = max(series, int(np.nan_to_num(counted.values, nan=1.0).max(initial=1.0)))
            except MetricsError:  # sizing only: the range query reports the real error
                continue
        return max(1, min(MAX_POINTS_PER_SERIES, self.points_per_query // series))

    def _fetch(self, promql: str, first: int, length: int) -> _Chunk:
        start = self.grid.at(first)
        end = self.grid.at(first + length - 1)
        self.range_queries += 1
        matrix = self.inner.query_range(promql, start, end, self.grid.step.total_seconds())
        values = np.zeros((len(matrix.labels), length))
        present = np.zeros((len(matrix.labels), length), dtype=bool)
        step = self.grid.step.total_seconds()
        origin = start.timestamp()
        for row, (stamps, points) in enumerate(zip(matrix.timestamps, matrix.values)):
            columns = np.rint((np.asarray(stamps, dtype=float) - origin) / step).astype(np.int64)
            inside = (columns >= 0) & (columns < length)
            values[row, columns[inside]] = np.asarray(points, dtype=float)[inside]
            present[row, columns[inside]] = True
        return _Chunk(first, length, matrix.labels, values, present)


def grid_step(policy_interval: timedelta, step: timedelta | None) -> timedelta:
    """The backtest's step: --step when given, else the policy's interval (as the operator evaluates)."""
    chosen = step or policy_interval
    if chosen.total_seconds() < 1 or not math.isfinite(chosen.total_seconds()):
        raise ValueError("the step must be at least 1s")
    return chosen
