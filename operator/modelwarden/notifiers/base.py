"""The notifier seam: post one Notification somewhere. One implementation per file, built by factory.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from modelwarden.planning.notification import Notification
from modelwarden.retry import RetryPolicy


class NotifyError(Exception):
    """A notification could not be delivered (after this notifier's own attempt)."""


class Notifier(Protocol):
    """Delivers a Notification or raises NotifyError; must honour its own timeout."""

    channel: str

    def send(self, notification: Notification) -> None: ...


# Reads one key of a Secret in the policy's namespace (secrets never appear in specs): (name, key) -> value.
SecretReader = Callable[[str, str], str]


def deliver(notifier: Notifier, notification: Notification, attempts: int = 3, backoff_seconds: float = 0.5) -> None:
    """Send with bounded retries and exponential backoff (a NotifyError is retried); the last error propagates."""
    RetryPolicy(attempts, backoff_seconds).call(lambda: notifier.send(notification), retry_on=NotifyError)
