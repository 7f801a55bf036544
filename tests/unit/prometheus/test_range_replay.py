"""prometheus.replay.RangeReplay: instant queries at grid instants answered from chunked range queries.

The inner provider here is a scripted stand-in for Prometheus (unit tier); the real Prometheus is
in tests/integration/test_backtest.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from modelwarden.prometheus.errors import MalformedAnswer, NoData, QueryError
from modelwarden.prometheus.provider import InstantVector, RangeMatrix
from modelwarden.prometheus.replay import Grid, RangeReplay

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
STEP = timedelta(minutes=1)


def value(series: int, t: float) -> float:
    return series * 1000 + (t - T0.timestamp()) / 60


class Scripted:
    """Two series: "a" at every instant, "b" only at even minutes. ``refuse(start)`` makes a range
    query fail; ``skew`` shifts the answer's timestamps."""

    def __init__(self, refuse=lambda start, points: False, skew: float = 0.0, empty: bool = False) -> None:
        self.refuse, self.skew, self.empty = refuse, skew, empty
        self.ranges: list[tuple[datetime, datetime]] = []

    def query(self, promql: str, at: datetime | None = None) -> InstantVector:
        assert promql.startswith("count(")
        return InstantVector([{}], np.array([2.0]))

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float) -> RangeMatrix:
        self.ranges.append((start, end))
        points = int((end - start) / STEP) + 1
        if self.refuse(start, points):
            raise QueryError("the answer exceeds the limit")
        if self.empty:
            raise NoData("no series")
        stamps = start.timestamp() + step_seconds * np.arange(points) + self.skew
        even = (np.rint((stamps - T0.timestamp()) / 60) % 2) == 0
        return RangeMatrix([{"s": "a"}, {"s": "b"}], [stamps, stamps[even]],
                           [np.array([value(0, t) for t in stamps]), np.array([value(1, t) for t in stamps[even]])])


def answers(replay: RangeReplay, steps: int) -> list[dict[str, float]]:
    seen = []
    for i in range(steps):
        vector = replay.query("q", T0 + i * STEP)
        seen.append({labels["s"]: float(v) for labels, v in zip(vector.labels, vector.values)})
    return seen


def test_every_instant_gets_the_points_at_that_instant_across_chunks():
    inner = Scripted()
    steps = 23
    replay = RangeReplay(inner, Grid(T0, STEP, steps), points_per_query=10)  # 2 series: 5 instants per chunk
    for i, seen in enumerate(answers(replay, steps)):
        expected = {"a": value(0, (T0 + i * STEP).timestamp())}
        if i % 2 == 0:
            expected["b"] = value(1, (T0 + i * STEP).timestamp())
        assert seen == expected, i
    assert replay.range_queries == len(inner.ranges) == 5  # 23 instants in chunks of 5
    assert [int((s - T0) / STEP) for s, _ in inner.ranges] == [0, 5, 10, 15, 20]
    assert replay.failed == []


def test_a_failing_range_is_tried_over_half_the_span_before_it_fails_its_instants():
    inner = Scripted(refuse=lambda start, points: points > 2)  # only answers of at most 2 instants succeed
    replay = RangeReplay(inner, Grid(T0, STEP, 8), points_per_query=16)  # 8 instants per chunk at first
    assert answers(replay, 8)[3] == {"a": value(0, (T0 + 3 * STEP).timestamp())}  # 8 -> 4 -> 2 instants
    always = Scripted(refuse=lambda start, points: start >= T0 + 4 * STEP)
    replay = RangeReplay(always, Grid(T0, STEP, 8), points_per_query=8)  # 4 instants per chunk
    assert "a" in replay.query("q", T0).labels[0].values()
    with pytest.raises(QueryError):
        replay.query("q", T0 + 4 * STEP)
    assert len(replay.failed) == 1 and replay.failed[0][0] == T0 + 4 * STEP


def test_no_data_is_no_data_at_each_instant_and_off_grid_answers_are_refused():
    replay = RangeReplay(Scripted(empty=True), Grid(T0, STEP, 3))
    with pytest.raises(NoData):
        replay.query("q", T0 + STEP)
    assert replay.failed == []
    skewed = RangeReplay(Scripted(skew=20.0), Grid(T0, STEP, 3))  # a frontend that moved the points by 20 s
    with pytest.raises(MalformedAnswer, match="off the requested instants"):
        skewed.query("q", T0)
    with pytest.raises(ValueError, match="not an instant"):
        RangeReplay(Scripted(), Grid(T0, STEP, 3)).query("q", T0 + STEP / 2)


def test_nan_points_reach_the_decoders_as_nan_which_makes_the_check_an_error():
    """A NaN sample is passed on as it is (an instant query would return it too); collect then
    refuses it as InvalidData, an Error of that check, never a count."""
    from modelwarden.prometheus.collect import InvalidData, _histograms

    class WithNaN(Scripted):
        def query_range(self, promql, start, end, step_seconds):
            matrix = super().query_range(promql, start, end, step_seconds)
            values = [v.copy() for v in matrix.values]
            values[0][1] = np.nan
            return RangeMatrix([{"feature": "f", "le": "1.0"}, {"feature": "f", "le": "+Inf"}], matrix.timestamps, values)

    replay = RangeReplay(WithNaN(), Grid(T0, STEP, 4))
    assert not np.isnan(replay.query("q", T0).values).any()  # the chunk starts at T0: its second point is T0 + STEP
    vector = replay.query("q", T0 + STEP)
    assert vector.labels == [{"feature": "f", "le": "1.0"}] and np.isnan(vector.values[0])
    with pytest.raises(InvalidData, match="nan"):
        _histograms(vector, name_label="feature")
