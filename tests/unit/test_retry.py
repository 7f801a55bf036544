"""The shared retry policy: bounded attempts, exponential backoff, only the named exceptions retried."""

from __future__ import annotations

import pytest

from modelwarden.retry import RetryPolicy


class Flaky(Exception):
    pass


def test_backoff_doubles_and_the_last_error_propagates():
    slept: list[float] = []
    calls = []

    def failing() -> None:
        calls.append(1)
        raise Flaky(len(calls))

    with pytest.raises(Flaky, match="3"):
        RetryPolicy(attempts=3, backoff_seconds=0.2, sleep=slept.append).call(failing, retry_on=Flaky)
    assert len(calls) == 3 and slept == [0.2, 0.4]


def test_success_and_other_exceptions_are_not_retried():
    outcomes = iter([Flaky(), "ok"])

    def second_time_lucky() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    slept: list[float] = []
    assert RetryPolicy(attempts=3, backoff_seconds=0.2, sleep=slept.append).call(second_time_lucky, retry_on=Flaky) == "ok"
    assert slept == [0.2]  # one failure, one pause, then the success: no further attempt
    calls = []

    def broken() -> None:
        calls.append(1)
        raise KeyError("not retryable")

    with pytest.raises(KeyError):
        RetryPolicy(attempts=3).call(broken, retry_on=Flaky)
    assert calls == [1]
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
