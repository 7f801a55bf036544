"""A MetricProvider wrapper for one evaluation: once the backend is Unreachable, the remaining
queries fail at once instead of each waiting out its own timeouts and retries."""

from __future__ import annotations

from datetime import datetime

from modelwarden.prometheus.errors import Unreachable
from modelwarden.prometheus.provider import InstantVector, MetricProvider, RangeMatrix


class FailFastProvider:
    def __init__(self, inner: MetricProvider) -> None:
        self.inner = inner
        self.unreachable: Unreachable | None = None

    def query(self, promql: str, at: datetime | None = None) -> InstantVector:
        if self.unreachable is not None:
            raise Unreachable(f"skipped: {self.unreachable}")
        try:
            return self.inner.query(promql, at)
        except Unreachable as exc:
            self.unreachable = exc
            raise

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float) -> RangeMatrix:
        if self.unreachable is not None:
            raise Unreachable(f"skipped: {self.unreachable}")
        try:
            return self.inner.query_range(promql, start, end, step_seconds)
        except Unreachable as exc:
            self.unreachable = exc
            raise
