"""The one retry policy of the operator's outbound calls (Prometheus queries, notifications): a
bounded number of attempts with exponential backoff between them, run by tenacity.

Callers decide what is worth another attempt by the exception they raise: a Prometheus query
retries connection errors, timeouts and 429/5xx answers; a notification retries any NotifyError,
whatever the channel (HTTP or SMTP), which is why this is not urllib3's HTTP-only ``Retry``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; before retry n (1, 2, …) it waits ``backoff_seconds · 2^(n−1)``."""

    attempts: int = 3
    backoff_seconds: float = 0.2
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"a retry policy makes at least one attempt, not {self.attempts}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (the second attempt is retry 1)."""
        return self.backoff_seconds * 2 ** (retry - 1)

    def call(self, operation: Callable[[], T], retry_on: type[BaseException] | tuple[type[BaseException], ...]) -> T:
        """``operation()``'s result; an exception of ``retry_on`` is retried until the attempts are
        used up, then the last one propagates. Any other exception propagates at once."""
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_seconds, exp_base=2, min=0, max=float("inf")),
            retry=retry_if_exception_type(retry_on),
            reraise=True,
            sleep=self.sleep,
        )
        return retrying(operation)
