"""Instant queries on a time grid, answered from range queries: the backtest's MetricProvider.

A Prometheus range query *is* the same expression evaluated as an instant query at start, start +
step, …, so answering ``query(promql, at=t)`` for a grid instant ``t`` from the range result gives
exactly what the operator's instant query at ``t`` would have got — with one round trip per
expression for the whole range instead of one per evaluation. The decision code above it
(``collect``, ``judge``, the policy's decisions) is unchanged.

Prometheus refuses more than 11,000 points per series in one answer, and a 30-day answer of
thousands of bucket series would not fit in memory, so the grid is cut into chunks: each
expression is fetched once per chunk (``count()`` instant queries at the chunk's start and end
size it to a points budget), and only the chunk in use is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from modelwarden.prometheus.errors import MalformedAnswer, MetricsError, NoData
from modelwarden.prometheus.provider import InstantVector, MetricProvider, RangeMatrix

MAX_POINTS_PER_SERIES = 11_000  # Prometheus's own limit for one range query
RETRIES_BY_HALVING = 3  # a range query that fails is tried again over half the span, this many times
GRID_TOLERANCE_SECONDS = 0.001  # Prometheus answers at exactly the instants asked for (millisecond timestamps)
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
    its tests). A range query that fails is tried again over half the span (a smaller answer, a
    shorter wait) a few times; one that still fails fails every instant of its chunk (an Error
    verdict there, never an action) and is listed in ``failed``, so the backtest can say its
    replay is incomplete.
    """

    def __init__(self, inner: MetricProvider, grid: Grid, points_per_query: int = DEFAULT_POINTS_PER_QUERY) -> None:
        self.inner = inner
        self.grid = grid
        self.points_per_query = points_per_query
        self.range_queries = 0
        self.count_queries = 0
        self._chunks: dict[str, _Chunk] = {}
        self.failed: list[tuple[datetime, datetime, str]] = []  # (first, last instant, why) of chunks that stayed failed

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
        # The grid is walked forwards: a chunk starts where it is first needed, sized for the
        # series at its own start and end (a model deployed or retired mid-range changes them).
        length = min(MAX_POINTS_PER_SERIES, self.grid.steps - index)
        length = min(length, self._size(promql, index, index + length - 1))
        for attempt in range(RETRIES_BY_HALVING + 1):
            try:
                chunk = self._fetch(promql, index, length)
                break
            except NoData:
                chunk = _Chunk(index, length, [], np.zeros((0, length)), np.zeros((0, length), dtype=bool))
                break
            except MetricsError as exc:  # too large or too slow an answer: try half; then every instant sees it
                if attempt < RETRIES_BY_HALVING and length > 1 and not isinstance(exc, MalformedAnswer):
                    length = max(1, length // 2)
                    continue
                chunk = _Chunk(index, length, [], np.zeros((0, length)), np.zeros((0, length), dtype=bool), exc)
                self.failed.append((self.grid.at(index), self.grid.at(index + length - 1), f"{type(exc).__name__}: {exc}"))
                break
        self._chunks[promql] = chunk
        return chunk

    def _size(self, promql: str, first: int, last: int) -> int:
        """Instants for a points budget over the series count at the chunk's start and end (one
        cheap ``count()`` instant query each)."""
        series = 1
        for moment in {self.grid.at(first), self.grid.at(last)}:
            self.count_queries += 1
            try:
                counted = self.inner.query(f"count({promql})", at=moment)
                series = max(series, int(np.nan_to_num(counted.values, nan=1.0).max(initial=1.0)))
            except MetricsError:  # sizing only: the range query reports the real error
                continue
        return max(1, self.points_per_query // series)

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
            offsets = (np.asarray(stamps, dtype=float) - origin) / step
            columns = np.rint(offsets).astype(np.int64)
            if np.any(np.abs(offsets - columns) * step > GRID_TOLERANCE_SECONDS) or np.any((columns < 0) | (columns >= length)):
                raise MalformedAnswer(f"the answer to {promql!r} has points off the requested instants (a query frontend "
                                      "that aligns ranges to their step?); the backtest needs the instants it asked for")
            values[row, columns] = np.asarray(points, dtype=float)
            present[row, columns] = True
        return _Chunk(first, length, matrix.labels, values, present)


def grid_step(policy_interval: timedelta, step: timedelta | None) -> timedelta:
    """The backtest's step: --step when given, else the policy's interval (as the operator evaluates)."""
    chosen = step or policy_interval
    if chosen.total_seconds() < 1 or not math.isfinite(chosen.total_seconds()):
        raise ValueError("the step must be at least 1s")
    return chosen
