"""The always-on channel: a Kubernetes Event on the DriftPolicy, reason = the notification's reason."""

from __future__ import annotations

from collections.abc import Callable

from modelwarden.planning.notification import Notification

PostEvent = Callable[[str, str, str], None]  # (type, reason, message)


class EventNotifier:
    channel = "event"

    def __init__(self, post: PostEvent) -> None:
        self.post = post

    def send(self, notification: Notification) -> None:
        kind = "Normal" if notification.resolved or notification.severity == "info" else "Warning"
        self.post(kind, notification.reason, f"{notification.subject}: {notification.summary}"[:1024])
