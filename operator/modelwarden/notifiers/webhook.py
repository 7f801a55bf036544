"""Generic JSON webhook; with a secret, the timestamp and raw body are signed (Stripe-style):

    X-Modelwarden-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">

Signing the timestamp with the body lets a receiver reject a captured alert replayed later: it
checks the HMAC, then that `t` is within a few minutes of its own clock (verify_signature)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable

from modelwarden.notifiers.posting import post_json
from modelwarden.planning.notification import Notification

SIGNATURE_HEADER = "X-Modelwarden-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"  # one per transition: retries of one alert carry the same (also body.dedupKey)
SIGNATURE_SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300  # how old (or how far ahead, for clock skew) a signed timestamp may be


class SignatureError(ValueError):
    """A webhook signature header is missing, malformed, wrong or too old."""


def signed_payload(timestamp: int, body: bytes) -> bytes:
    """What the HMAC covers: "<t>.<raw body>"."""
    return str(timestamp).encode() + b"." + body


def _digest(secret: bytes, body: bytes, timestamp: int) -> str:
    return hmac.new(secret, signed_payload(timestamp, body), hashlib.sha256).hexdigest()


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """The header value for a body sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},{SIGNATURE_SCHEME}={_digest(secret, body, timestamp)}"


def parse_signature(header: str) -> tuple[int, list[str]]:
    """(timestamp, v1 signatures) of a header; several v1 entries are allowed (key rotation)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(f"timestamp {value!r} is not unix seconds") from None
        elif key == SIGNATURE_SCHEME:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError(f"expected t=<unix seconds>,{SIGNATURE_SCHEME}=<hex>, got {header[:80]!r}")
    return timestamp, signatures


def verify_signature(secret: bytes, body: bytes, header: str, now: float,
                     tolerance: float = DEFAULT_TOLERANCE_SECONDS) -> int:
    """Check a received header against the raw body and the receiver's clock; returns the signed
    timestamp or raises SignatureError (the HMAC first, so a forged `t` never reads as merely old)."""
    timestamp, signatures = parse_signature(header)
    expected = _digest(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise SignatureError("signature does not match the body")
    if abs(now - timestamp) > tolerance:
        raise SignatureError(f"timestamp {timestamp} is {now - timestamp:+.0f} s from now (tolerance {tolerance:.0f} s)")
    return timestamp


class WebhookNotifier:
    channel = "webhook"

    def __init__(self, url: str, secret: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.url, self.secret, self.headers, self.timeout, self.clock = url, secret, dict(headers or {}), timeout, clock

    def send(self, notification: Notification) -> None:
        body = json.dumps(notification.to_dict(), separators=(",", ":")).encode()
        headers = {**self.headers, IDEMPOTENCY_HEADER: notification.dedup_key}
        if self.secret:
            # Signed at each attempt, so a retry carries a fresh timestamp.
            headers[SIGNATURE_HEADER] = signature(self.secret, body, int(self.clock()))
        post_json(self.url, body, headers, self.timeout)
