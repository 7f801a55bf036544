"""Generic JSON webhook; with a secret, the raw body is signed: X-Modelwarden-Signature: sha256=<hex>."""

from __future__ import annotations

import hashlib
import hmac
import json

from modelwarden.notifiers.posting import post_json
from modelwarden.planning.notification import Notification

SIGNATURE_HEADER = "X-Modelwarden-Signature"


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    channel = "webhook"

    def __init__(self, url: str, secret: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 5.0) -> None:
        self.url, self.secret, self.headers, self.timeout = url, secret, dict(headers or {}), timeout

    def send(self, notification: Notification) -> None:
        body = json.dumps(notification.to_dict(), separators=(",", ":")).encode()
        headers = dict(self.headers)
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        post_json(self.url, body, headers, self.timeout)
