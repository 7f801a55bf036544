"""A MetricProvider wrapper for one evaluation: one overall deadline for all of its queries, and
once the backend is Unreachable, the remaining queries fail at once instead of each waiting out
its own timeouts and retries."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from modelwarden.prometheus.errors import Unreachable
from modelwarden.prometheus.provider import DeadlineProvider, InstantVector, RangeMatrix

Answer = TypeVar("Answer", InstantVector, RangeMatrix)


class FailFastProvider:
    def __init__(self, inner: DeadlineProvider, budget_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.deadline = clock() + budget_seconds if budget_seconds is not None else None
        self.budget_seconds = budget_seconds
        self.unreachable: Unreachable | None = None
        self._clock = clock

    def query(self, promql: str, at: datetime | None = None) -> InstantVector:
        return self._guarded(lambda: self.inner.query(promql, at, deadline=self.deadline))

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float) -> RangeMatrix:
        return self._guarded(lambda: self.inner.query_range(promql, start, end, step_seconds, deadline=self.deadline))

    def _guarded(self, run: Callable[[], Answer]) -> Answer:
        if self.unreachable is not None:
            raise Unreachable(f"skipped: {self.unreachable}")
        if self.deadline is not None and self._clock() >= self.deadline:
            self.unreachable = Unreachable(f"the evaluation's deadline ({self.budget_seconds:g}s) passed")
            raise Unreachable(str(self.unreachable))
        try:
            return run()
        except Unreachable as exc:
            self.unreachable = exc
            raise
