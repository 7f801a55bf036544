"""Slack incoming webhook: Block Kit blocks plus a plain-text fallback."""

from __future__ import annotations

import json

from modelwarden.notifiers.posting import post_json
from modelwarden.planning.notification import Notification

ICONS = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}


class SlackNotifier:
    channel = "slack"

    def __init__(self, webhook_url: str, channel_override: str | None = None, timeout: float = 5.0) -> None:
        self.webhook_url, self.channel_override, self.timeout = webhook_url, channel_override, timeout

    def payload(self, notification: Notification) -> dict:
        icon = ":white_check_mark:" if notification.resolved else ICONS.get(notification.severity, "")
        text = f"{icon} {notification.subject}"
        fields = [{"type": "mrkdwn", "text": f"*{name}*\n{value}"} for name, value in notification.fields[:10]]
        blocks: list[dict] = [
            {"type": "header", "text": {"type": "plain_text", "text": notification.subject[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": notification.summary[:3000]}},
        ]
        if fields:
            blocks.append({"type": "section", "fields": fields})
        if notification.links:
            links = " | ".join(f"<{url}|{title}>" for title, url in notification.links)
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]})
        body: dict = {"text": text, "blocks": blocks}
        if self.channel_override:
            body["channel"] = self.channel_override
        return body

    def send(self, notification: Notification) -> None:
        post_json(self.webhook_url, json.dumps(self.payload(notification)).encode(), {}, self.timeout)
