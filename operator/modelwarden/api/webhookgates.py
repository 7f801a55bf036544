"""Webhook gates of a canary (like Flagger's confirm-rollout, pre-rollout and confirm-promotion):
an HTTP POST of the rollout's context; a 2xx answer lets the rollout go on, anything else holds it."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum

from pydantic import Field

from modelwarden.api.common import ApiModel, SecretKeyRef
from modelwarden.api.duration import PositiveDuration
from modelwarden.api.fields import URL_PATTERN

GATE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class WebhookGateType(str, Enum):
    """When a webhook gate is asked."""

    CONFIRM_ROLLOUT = "confirm-rollout"  # means: when the canary starts: it gets no traffic until a 2xx
    PRE_ROLLOUT = "pre-rollout"  # means: once the canary's pods are ready, before any traffic (e.g. a smoke test against them)
    CONFIRM_PROMOTION = "confirm-promotion"  # means: when the canary would be promoted: it holds at its last step until a 2xx


class WebhookGate(ApiModel):
    """One webhook gate: POSTed the rollout's context (JSON) every `interval` while it holds."""

    name: str = Field(max_length=63, pattern=GATE_NAME_PATTERN)
    """Its name (unique among the canary's webhooks), shown in status.gates and Events."""
    type: WebhookGateType
    """confirm-rollout, pre-rollout or confirm-promotion."""
    url: str = Field(pattern=URL_PATTERN, max_length=2048)
    """Receiver URL (no credentials in it); its host must be allowed by the operator's --allowed-alert-hosts."""
    timeout: PositiveDuration = timedelta(seconds=10)
    """How long one call may take; no answer in time holds, like a refusal."""
    interval: PositiveDuration = timedelta(seconds=15)
    """How often it is asked again while it holds."""
    hold_timeout: PositiveDuration | None = None
    """How long it may hold before the canary is rolled back (unset: it holds until it answers 2xx, or a person acts)."""
    hmac_secret_ref: SecretKeyRef | None = None
    """Secret key (labelled modelwarden.io/policy-use=true) signing each call like the alert webhook
    (header X-Modelwarden-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">)."""
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    """Extra fields sent as `metadata` in the body (e.g. which test suite to run)."""
