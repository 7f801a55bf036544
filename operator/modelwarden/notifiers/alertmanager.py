"""Alertmanager v2 API: POST /api/v2/alerts. The label set is the alert's identity, so a resolution
(endsAt = now) carries exactly the labels of the alert it ends."""

from __future__ import annotations

import json
import re

from modelwarden.notifiers.posting import post_json
from modelwarden.planning.notification import Notification


class AlertmanagerNotifier:
    channel = "alertmanager"

    def __init__(self, url: str, extra_labels: dict[str, str] | None = None, timeout: float = 5.0) -> None:
        self.url, self.extra_labels, self.timeout = url.rstrip("/"), dict(extra_labels or {}), timeout

    def payload(self, notification: Notification) -> list[dict]:
        labels = {**self.extra_labels, **notification.labels, "alertname": notification.alertname, "severity": notification.severity}
        alert = {
            "labels": labels,
            "annotations": {"summary": notification.subject, "description": notification.summary,
                            **{_label_name(name): value for name, value in notification.fields[:20]}},
            "startsAt": notification.to_dict()["startsAt"],
            "endsAt": notification.to_dict()["endsAt"],
        }
        if notification.links:
            alert["generatorURL"] = notification.links[0][1]
        return [alert]

    def send(self, notification: Notification) -> None:
        post_json(f"{self.url}/api/v2/alerts", json.dumps(self.payload(notification)).encode(), {}, self.timeout)


def _label_name(name: str) -> str:
    """Annotation names follow label-name syntax: "performance/accuracy" -> "performance_accuracy"."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name.lower())
