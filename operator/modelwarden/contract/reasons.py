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
    OUT_OF_RANGE = "out_of_range"  # beyond the profile's range × --value-range-factor, or too large to square
    BODY_TOO_LARGE = "body_too_large"
    UNKNOWN_MODEL = "unknown_model"
    UNKNOWN_REQUEST_ID = "unknown_request_id"
    UNKNOWN_CLASS = "unknown_class"
    # Requests the router refuses before any handler (counted as client errors only).
    ROUTE_NOT_FOUND = "route_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # The two 5xx.
    MODEL_ERROR = "model_error"
    INTERNAL_ERROR = "internal_error"


# Answered with a 5xx: the server's fault (``modelwarden_server_errors_total``). Every other reason
# is a client error, a 4xx (``modelwarden_client_errors_total``).
SERVER_ERROR_REASONS: tuple[str, ...] = (ErrorReason.MODEL_ERROR.value, ErrorReason.INTERNAL_ERROR.value)
# Refused by the router before any handler: client errors, but never in
# ``modelwarden_prediction_errors_total``, whose meaning (rejected or failed prediction and
# feedback requests) predates them.
ROUTING_REASONS: tuple[str, ...] = (ErrorReason.ROUTE_NOT_FOUND.value, ErrorReason.METHOD_NOT_ALLOWED.value)

# Every reason of modelwarden_prediction_errors_total, as plain strings, in the order the monitor exports them.
KNOWN_ERROR_REASONS: tuple[str, ...] = tuple(r.value for r in ErrorReason if r not in ROUTING_REASONS)
CLIENT_ERROR_REASONS: tuple[str, ...] = tuple(r.value for r in ErrorReason if r not in SERVER_ERROR_REASONS)
# Why a value was refused before it could reach the exported sums (modelwarden_rejected_values_total).
VALUE_REJECTION_REASONS: tuple[str, ...] = (ErrorReason.NON_FINITE.value, ErrorReason.OUT_OF_RANGE.value)
