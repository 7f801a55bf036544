"""SharedProvider: identical queries at one instant are fetched once; failures are not kept;
memory is bounded. The inner provider is an in-memory stand-in that counts and can block."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from modelwarden.prometheus.errors import NoData, Unreachable
from modelwarden.prometheus.provider import InstantVector, RangeMatrix
from modelwarden.prometheus.shared import SharedProvider

AT = datetime(2026, 12, 2, 8, 0, tzinfo=timezone.utc)


class Backend:
    """Answers every query with `series` series; counts calls; `gate` holds answers back."""

    def __init__(self, series: int = 1) -> None:
        self.calls: list[tuple[str, datetime | None]] = []
        self.series, self.fail, self.gate = series, None, threading.Event()
        self.gate.set()
        self.lock = threading.Lock()

    def query(self, promql: str, at: datetime | None = None, deadline: float | None = None) -> InstantVector:
        with self.lock:
            self.calls.append((promql, at))
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        return InstantVector([{"i": str(i)} for i in range(self.series)], np.arange(self.series, dtype=float), 0.5, 0.25)

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float, deadline: float | None = None) -> RangeMatrix:
        with self.lock:
            self.calls.append((promql, end))
        return RangeMatrix([{}], [np.array([1.0])], [np.array([2.0])], 0.5, 0.25)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_identical_queries_are_fetched_once_and_the_answer_is_kept():
    backend, outcomes = Backend(), []
    shared = SharedProvider(backend, outcome=outcomes.append)
    backend.gate.clear()  # hold the first fetch so the others arrive while it is in flight
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(shared.query, "up", AT) for _ in range(8)]
        while len(outcomes) < 8:
            threading.Event().wait(0.01)
        backend.gate.set()
        answers = [f.result(timeout=10) for f in futures]
    assert backend.calls == [("up", AT)]
    assert sorted(outcomes) == ["fetched"] + ["shared"] * 7
    # Only the fetcher's answer carries the backend's (stand-in) timings; the 7 shared ones report none.
    assert sum(1 for a in answers if a.fetch_seconds or a.decode_seconds) == 1
    assert all(np.array_equal(a.values, answers[0].values) for a in answers)
    later = shared.query("up", AT)  # a worker that got there later: still the same answer
    assert backend.calls == [("up", AT)] and later.labels == answers[0].labels


def test_another_query_or_instant_is_fetched_and_queries_for_now_are_never_shared():
    backend = Backend()
    shared = SharedProvider(backend)
    shared.query("up", AT)
    shared.query("up", AT + timedelta(seconds=60))
    shared.query("down", AT)
    shared.query("up")
    shared.query("up")
    shared.query_range("up", AT - timedelta(minutes=5), AT, 15)
    shared.query_range("up", AT - timedelta(minutes=5), AT, 15)
    assert len(backend.calls) == 6


def test_failures_reach_the_waiting_callers_but_are_not_kept():
    backend = Backend()
    backend.fail = Unreachable("connection refused")
    shared = SharedProvider(backend)
    for _ in range(2):
        with pytest.raises(Unreachable, match="connection refused"):
            shared.query("up", AT)
    assert len(backend.calls) == 2  # asked again: Prometheus may be back
    backend.fail = None
    assert shared.query("up", AT).values.tolist() == [0.0]


def test_no_data_is_an_answer_and_is_kept():
    backend = Backend()
    backend.fail = NoData("no series")
    shared = SharedProvider(backend)
    for _ in range(3):
        with pytest.raises(NoData):
            shared.query("absent", AT)
    assert len(backend.calls) == 1


def test_answers_expire_and_memory_is_bounded_in_series():
    clock, backend = Clock(), Backend(series=40)
    shared = SharedProvider(backend, keep_seconds=60, max_series=100, clock=clock)
    shared.query("a", AT)
    clock.now = 61
    shared.query("a", AT)  # expired: fetched again
    assert len(backend.calls) == 2
    shared.query("b", AT)
    shared.query("c", AT)  # 120 series > 100: the oldest ("a") is dropped
    shared.query("c", AT)
    shared.query("b", AT)
    assert [q for q, _ in backend.calls] == ["a", "a", "b", "c"]
    shared.query("a", AT)
    assert [q for q, _ in backend.calls] == ["a", "a", "b", "c", "a"]


def test_a_caller_waiting_for_a_shared_fetch_keeps_its_own_deadline():
    backend = Backend()
    backend.gate.clear()
    shared = SharedProvider(backend)
    with ThreadPoolExecutor(1) as pool:
        owner = pool.submit(shared.query, "up", AT)
        while not backend.calls:
            threading.Event().wait(0.01)
        with pytest.raises(Unreachable, match="deadline"):
            shared.query("up", AT, deadline=time.monotonic() + 0.05)
        backend.gate.set()
        assert owner.result(timeout=10).values.tolist() == [0.0]
