"""A notifier that drops everything (a channel that is configured off)."""

from __future__ import annotations

from modelwarden.planning.notification import Notification


class NoopNotifier:
    channel = "noop"

    def send(self, notification: Notification) -> None:
        return None
