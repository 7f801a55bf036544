"""Feedback tokens: ground truth that reaches the track that made the prediction.

Every prediction response carries a token that says which model, track and version predicted
what, and when, signed with a key the model's pods share (HMAC-SHA256 over the payload via
itsdangerous' URLSafeTimedSerializer; the payload is compact JSON, compressed when that helps).
Feedback that returns the token with the actual outcome is counted under the *predicting*
track's labels by whichever replica of whichever track receives it, and weeks later too: the
token carries everything, no replica has to remember the request.

Keys come from a file (a mounted Secret): one key per line, the first signs, every line verifies,
so a key is rotated by putting the new key first and dropping the old one after the longest
token lifetime. Tokens expire after ``max_age`` seconds (default 90 days: chargebacks arrive
weeks after the payment).

What a token cannot do: it is not single-use. A client may post the same token twice within its
lifetime and be counted twice (no replica keeps state to notice); the server does refuse a
forged, tampered, truncated, expired or other-model token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, BadTimeSignature, SignatureExpired, URLSafeTimedSerializer

from modelwarden.serving.payload import PayloadError

SALT = "modelwarden.feedback.v1"
DEFAULT_MAX_AGE_SECONDS = 90 * 24 * 3600


class TokenError(PayloadError):
    """A feedback token the server refuses: ``reason`` is the metrics label, ``status`` the HTTP status."""

    def __init__(self, reason: str, message: str, status: int = 403):
        super().__init__(reason, message, status)


TOKEN_ERROR_REASONS = ("invalid_token", "expired_token", "wrong_model_token")


@dataclass(frozen=True)
class Prediction:
    """What a token vouches for: who predicted what (one entry per row of the request)."""

    model: str
    track: str
    version: str
    predicted: tuple[Any, ...]


def read_keys(path: Path) -> list[bytes]:
    """Keys from a file: one per line, blank lines ignored, the first one signs."""
    keys = [line.strip().encode() for line in Path(path).read_text().splitlines() if line.strip()]
    if not keys:
        raise ValueError(f"{path}: no feedback key in the file")
    if any(len(key) < 16 for key in keys):
        raise ValueError(f"{path}: every feedback key must be at least 16 characters long")
    return keys


class FeedbackTokens:
    """Issues and verifies feedback tokens with the given keys (the first one signs)."""

    def __init__(self, keys: Sequence[bytes], max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS):
        if not keys:
            raise ValueError("at least one feedback key is needed")
        # itsdangerous signs with the last key of the list and verifies with all of them.
        self._serializer = URLSafeTimedSerializer(list(reversed(keys)), salt=SALT,
                                                  signer_kwargs={"digest_method": hashlib.sha256})
        self.max_age_seconds = max_age_seconds

    @classmethod
    def from_file(cls, path: Path, max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS) -> "FeedbackTokens":
        return cls(read_keys(path), max_age_seconds)

    def issue(self, prediction: Prediction) -> str:
        return self._serializer.dumps(
            {"m": prediction.model, "t": prediction.track, "v": prediction.version, "p": list(prediction.predicted)}
        )

    def verify(self, token: Any, model: str) -> Prediction:
        """The prediction a token vouches for, or TokenError saying why it is refused."""
        if not isinstance(token, str) or not token:
            raise TokenError("invalid_token", "token must be a non-empty string", status=400)
        try:
            claims = self._serializer.loads(token, max_age=self.max_age_seconds)
        except SignatureExpired as error:
            raise TokenError("expired_token", f"the token expired (older than {self.max_age_seconds} s): {error}") from None
        except (BadTimeSignature, BadSignature):
            raise TokenError("invalid_token", "the token's signature does not verify (forged, tampered, truncated or another key)") from None
        if not (isinstance(claims, dict) and isinstance(claims.get("p"), list)
                and all(isinstance(claims.get(k), str) for k in ("m", "t", "v"))):
            raise TokenError("invalid_token", "the token's payload is not a prediction")
        if claims["m"] != model:
            raise TokenError("wrong_model_token", f"the token is for model {claims['m']!r}, not {model!r}")
        return Prediction(claims["m"], claims["t"], claims["v"], tuple(claims["p"]))
