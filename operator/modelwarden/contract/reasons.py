"""Why a request was rejected or failed: the ``reason`` label of ``modelwarden_prediction_errors_total``.

The request parser, the feedback-token checks and the HTTP layer raise errors carrying one of
these reasons; the monitor exports every one of them at 0 from the start (so ``rate()`` and error
ratios work before the first error), and dashboards, alerts and docs/metrics.md name them. One
enum keeps the raising side and the exporting side from drifting apart. ``ErrorReason`` is a
``StrEnum``: a member is its string, as a label value, a dict key and in JSON.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorReason(StrEnum):
    # Feedback tokens (serving.tokens) and the per-server bound on other versions' feedback series.
    INVALID_TOKEN = "invalid_token"
    EXPIRED_TOKEN = "expired_token"
    WRONG_MODEL_TOKEN = "wrong_model_token"
    FEEDBACK_VERSION_LIMIT = "feedback_version_limit"
    # Request bodies (serving.payload) and the HTTP layer.
    MALFORMED_JSON = "malformed_json"
    INVALID_PAYLOAD = "invalid_payload"
    FEATURE_COUNT = "feature_count"
    FEATURE_NAMES = "feature_names"
    NON_NUMERIC = "non_numeric"
    NON_FINITE = "non_finite"
    BODY_TOO_LARGE = "body_too_large"
    UNKNOWN_MODEL = "unknown_model"
    UNKNOWN_REQUEST_ID = "unknown_request_id"
    UNKNOWN_CLASS = "unknown_class"
    # The two 5xx.
    MODEL_ERROR = "model_error"
    INTERNAL_ERROR = "internal_error"


# Every reason, as plain strings, in the order the monitor exports them.
KNOWN_ERROR_REASONS: tuple[str, ...] = tuple(reason.value for reason in ErrorReason)
