"""A MetricProvider shared by every evaluation against one backend: identical queries at one
instant are fetched once.

The policies that judge one model's track come due at the same instants (planning.policy's
cohort grid) and ask Prometheus the same questions (the same counters, the same feature
histograms over the same window). The first to ask fetches; the others wait for that answer
(single flight) or find it kept for a while (`keep_seconds`), because the workers may reach
them one after another. An answer about a fixed instant in the past is the same evidence
whoever asked first. Failures are handed to the callers waiting at that moment and not kept, so
a later evaluation asks again. Queries without an instant ("now") are never shared.

Memory is bounded: answers are kept up to `max_series` series in all, oldest dropped first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from modelwarden.prometheus.errors import MetricsError, NoData, Unreachable
from modelwarden.prometheus.provider import DeadlineProvider, InstantVector, RangeMatrix

Answer = TypeVar("Answer", InstantVector, RangeMatrix)
Outcome = Callable[[str], None]  # told "fetched" or "shared" for each query (the operator's metrics)


@dataclass
class _Entry:
    ready: threading.Event = field(default_factory=threading.Event)
    answer: InstantVector | RangeMatrix | None = None
    error: MetricsError | None = None
    kept_until: float = float("inf")
    series: int = 0


class SharedProvider:
    """Wraps one backend's provider; thread-safe (evaluations run in a thread pool)."""

    def __init__(self, inner: DeadlineProvider, keep_seconds: float = 60.0, max_series: int = 200_000,
                 outcome: Outcome | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner, self.keep_seconds, self.max_series = inner, keep_seconds, max_series
        self._outcome, self._clock = outcome or (lambda _: None), clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._series = 0
        self._lock = threading.Lock()

    def query(self, promql: str, at: datetime | None = None, deadline: float | None = None) -> InstantVector:
        if at is None:
            self._outcome("fetched")
            return self.inner.query(promql, deadline=deadline)
        return self._shared(("query", promql, at.timestamp()), lambda: self.inner.query(promql, at, deadline=deadline), deadline)

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float,
                    deadline: float | None = None) -> RangeMatrix:
        key = ("range", promql, start.timestamp(), end.timestamp(), step_seconds)
        return self._shared(key, lambda: self.inner.query_range(promql, start, end, step_seconds, deadline=deadline), deadline)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def _shared(self, key: Hashable, fetch: Callable[[], Answer], deadline: float | None) -> Answer:
        with self._lock:
            self._expire()
            entry = self._entries.get(key)
            owner = entry is None
            if entry is None:
                entry = self._entries[key] = _Entry()
        if owner:
            self._outcome("fetched")
            self._fetch(key, entry, fetch)
        else:
            self._outcome("shared")
            # The fetch is bounded by its owner's timeouts and deadline; this caller keeps its own.
            if not entry.ready.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
                raise Unreachable("the evaluation's deadline passed while another evaluation fetched this query")
        if entry.error is not None:
            raise type(entry.error)(*entry.error.args)  # a fresh exception per caller: tracebacks are per thread
        assert entry.answer is not None
        # Fetch and decode time belongs to the evaluation that paid it; a shared answer cost nothing.
        return entry.answer if owner else replace(entry.answer, fetch_seconds=0.0, decode_seconds=0.0)  # type: ignore[return-value]

    def _fetch(self, key: Hashable, entry: _Entry, fetch: Callable[[], Answer]) -> None:
        keep = True
        try:
            entry.answer = fetch()
        except NoData as exc:  # an answer like any other: "no series"
            entry.error = exc
        except MetricsError as exc:  # handed to those waiting now, not kept: the next evaluation asks again
            entry.error, keep = exc, False
        except Exception as exc:
            entry.error, keep = MetricsError(f"{type(exc).__name__}: {exc}"), False
            raise
        finally:
            with self._lock:
                if self._entries.get(key) is entry:
                    if keep:
                        entry.kept_until = self._clock() + self.keep_seconds
                        entry.series = len(entry.answer.labels) if entry.answer is not None else 0
                        self._series += entry.series
                    else:
                        del self._entries[key]
                self._expire()
            entry.ready.set()

    def _expire(self) -> None:
        """Drop the oldest answers while they are past their keep time or the series bound is
        exceeded (lock held). Oldest first by when they were asked, which is close to when they
        were answered, so one pass from the front is enough."""
        now = self._clock()
        while self._entries:
            key, oldest = next(iter(self._entries.items()))
            if not oldest.ready.is_set() and not oldest.series:
                break  # still being fetched
            if oldest.kept_until > now and self._series <= self.max_series:
                break
            del self._entries[key]
            self._series -= oldest.series
