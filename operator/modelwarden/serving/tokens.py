"""Feedback tokens: ground truth that reaches the track that made the prediction.

Every prediction response carries a token that says which model, track and version predicted
what, and when, signed with a key the model's pods share (HMAC-SHA256 over the payload via
itsdangerous' URLSafeTimedSerializer; the payload is compact JSON, compressed when that helps).
Feedback that returns the token with the actual outcome is counted under the *predicting*
track's labels by whichever replica of whichever track receives it, and weeks later too: the
token carries everything, no replica has to remember the request.

Keys come from a file (a mounted Secret): one key per line, the first signs, every line verifies.
The file is read again when it changes (the kubelet updates a mounted Secret in place), so a key
is rotated without restarts in two steps: add the new key as a second line (verify only) and wait
until every pod has it, then move it first (it signs), and drop the old key after the longest
token lifetime. Tokens expire after ``max_age`` seconds (default 90 days: chargebacks arrive weeks
after the payment); a token up to ``CLOCK_SKEW_SECONDS`` "from the future" (another pod's clock)
is accepted. A token names the namespace too, so a key shared by staging and prod does not let
staging's feedback count in prod.

What a token cannot do: it is not single-use. A client may post the same token twice within its
lifetime and be counted twice (no replica keeps state to notice); the server does refuse a
forged, tampered, truncated, expired or other-model token.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, BadTimeSignature, URLSafeTimedSerializer

from modelwarden.contract.reasons import ErrorReason
from modelwarden.serving.payload import PayloadError

log = logging.getLogger(__name__)
SALT = "modelwarden.feedback.v1"
DEFAULT_MAX_AGE_SECONDS = 90 * 24 * 3600
CLOCK_SKEW_SECONDS = 300


class TokenError(PayloadError):
    """A feedback token the server refuses: ``reason`` is the metrics label, ``status`` the HTTP status."""

    def __init__(self, reason: ErrorReason, message: str, status: int = 403):
        super().__init__(reason, message, status)


@dataclass(frozen=True)
class Prediction:
    """What a token vouches for: who predicted what (one entry per row of the request)."""

    model: str
    track: str
    version: str
    predicted: tuple[Any, ...]
    namespace: str = ""


def read_keys(path: Path) -> list[bytes]:
    """Keys from a file: one per line, blank lines ignored, the first one signs."""
    keys = [line.strip().encode() for line in Path(path).read_text().splitlines() if line.strip()]
    if not keys:
        raise ValueError(f"{path}: no feedback key in the file")
    if any(len(key) < 16 for key in keys):
        raise ValueError(f"{path}: every feedback key must be at least 16 characters long")
    return keys


def _serializer(keys: Sequence[bytes]) -> URLSafeTimedSerializer:
    if not keys:
        raise ValueError("at least one feedback key is needed")
    # itsdangerous signs with the last key of the list and verifies with all of them.
    return URLSafeTimedSerializer(list(reversed(keys)), salt=SALT, signer_kwargs={"digest_method": hashlib.sha256})


class FeedbackTokens:
    """Issues and verifies feedback tokens with the given keys (the first one signs), or with the
    keys of a file, read again whenever the file changes."""

    def __init__(self, keys: Sequence[bytes], max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
                 clock: Callable[[], float] = time.time):
        self._serializer = _serializer(keys)
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._path: Path | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0  # monotonic time of the last look at the file
        self.recheck_seconds = 1.0
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path, max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
                  recheck_seconds: float = 1.0) -> "FeedbackTokens":
        tokens = cls(read_keys(path), max_age_seconds)
        tokens.recheck_seconds = recheck_seconds
        tokens._path, tokens._stamp = Path(path), _stamp(Path(path))
        return tokens

    def _current(self) -> URLSafeTimedSerializer:
        """The serializer for the file's keys as they are now (the file is looked at once every
        `recheck_seconds`: every prediction asks, a stat per request would be waste)."""
        if self._path is None or time.monotonic() - self._checked < self.recheck_seconds:
            return self._serializer
        self._checked = time.monotonic()
        try:
            stamp = _stamp(self._path)
            if stamp != self._stamp:
                with self._lock:
                    if stamp != self._stamp:
                        self._serializer, self._stamp = _serializer(read_keys(self._path)), stamp
        except (OSError, ValueError) as error:  # mid-update or emptied: keep the keys we had
            log.warning("feedback keys in %s not reloaded: %s", self._path, error)
        return self._serializer

    def issue(self, prediction: Prediction) -> str:
        claims = {"m": prediction.model, "t": prediction.track, "v": prediction.version, "p": list(prediction.predicted)}
        if prediction.namespace:
            claims["n"] = prediction.namespace
        return self._current().dumps(claims)

    def verify(self, token: Any, model: str, namespace: str = "") -> Prediction:
        """The prediction a token vouches for, or TokenError saying why it is refused."""
        if not isinstance(token, str) or not token:
            raise TokenError(ErrorReason.INVALID_TOKEN, "token must be a non-empty string", status=400)
        try:
            claims, issued = self._current().loads(token, max_age=None, return_timestamp=True)
        except (BadTimeSignature, BadSignature):
            raise TokenError(ErrorReason.INVALID_TOKEN,
                             "the token's signature does not verify (forged, tampered, truncated or another key)") from None
        age = self.clock() - issued.timestamp()
        if age > self.max_age_seconds:
            raise TokenError(ErrorReason.EXPIRED_TOKEN,
                             f"the token expired: issued {age:.0f} s ago, valid for {self.max_age_seconds} s")
        if age < -CLOCK_SKEW_SECONDS:
            raise TokenError(ErrorReason.INVALID_TOKEN,
                             f"the token was issued {-age:.0f} s in the future (clock skew beyond {CLOCK_SKEW_SECONDS} s)")
        if not (isinstance(claims, dict) and isinstance(claims.get("p"), list)
                and all(isinstance(claims.get(k), str) for k in ("m", "t", "v"))
                and isinstance(claims.get("n", ""), str)):
            raise TokenError(ErrorReason.INVALID_TOKEN, "the token's payload is not a prediction")
        if claims["m"] != model:
            raise TokenError(ErrorReason.WRONG_MODEL_TOKEN, f"the token is for model {claims['m']!r}, not {model!r}")
        if claims.get("n", "") != namespace:
            raise TokenError(ErrorReason.WRONG_MODEL_TOKEN,
                             f"the token is for namespace {claims.get('n', '')!r}, this server serves {namespace!r}")
        return Prediction(claims["m"], claims["t"], claims["v"], tuple(claims["p"]), claims.get("n", ""))


def _stamp(path: Path) -> tuple[int, int, int]:
    """What tells a changed key file: the kubelet swaps a symlink, so stat the target."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, info.st_size
