"""The DriftPolicy custom resource: how a ModelDeployment track is judged and what a breach does."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from modelwarden.contract.kubernetes import API_VERSION
from modelwarden.api.checks import ESTIMATED_METRICS, ComparisonSpec, CustomCheck, DriftSpec, OutlierSpec, PerformanceCheck
from modelwarden.api.common import (
    DATA_KEY_PATTERN,
    MODEL_DEPLOYMENT_NAME_MAX,
    MODEL_DEPLOYMENT_NAME_PATTERN,
    NAME_PATTERN,
    PROMETHEUS_LABEL_NAME_PATTERN,
    ApiModel,
    ConfigMapKeyRef,
    SecretKeyRef,
    Track,
    cel_rules,
    cel_string,
)
from modelwarden.api.duration import Duration, PositiveDuration, cel_seconds
from modelwarden.api.fields import (
    CRON_MESSAGE,
    CRON_PATTERN,
    URL_PATTERN,
    EmailAddress,
    HeaderValue,
    JobMetadata,
    JobPodTemplate,
    check_cron,
    check_headers,
    header_rules,
)
from modelwarden.api.policystatus import (  # noqa: F401  (re-exported: the status types live beside the spec)
    ActionRecord,
    CheckResult,
    DriftPolicyPhase,
    DriftPolicyStatus,
    Evaluation,
    EvaluationSummary,
    RetrainStatus,
    Verdict,
)

class TargetRef(ApiModel):
    """The ModelDeployment judged by this policy (same namespace)."""

    name: str = Field(pattern=MODEL_DEPLOYMENT_NAME_PATTERN, max_length=MODEL_DEPLOYMENT_NAME_MAX)
    """Name of the ModelDeployment."""


class BasicAuth(ApiModel):
    """HTTP basic auth from one Secret."""

    secret_name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """Secret holding the credentials."""
    username_key: str = Field(default="username", max_length=253, pattern=DATA_KEY_PATTERN)
    """Key of the user name."""
    password_key: str = Field(default="password", max_length=253, pattern=DATA_KEY_PATTERN)
    """Key of the password."""


class PrometheusSource(ApiModel):
    """A Prometheus-API endpoint (Prometheus, Thanos, Mimir, VictoriaMetrics)."""

    model_config = cel_rules(
        ("!has(self.bearerTokenSecretRef) || !has(self.basicAuth)",
         "basicAuth: set at most one of bearerTokenSecretRef and basicAuth", ".basicAuth"),
    )

    url: str = Field(pattern=URL_PATTERN, max_length=2048)
    """Base URL, e.g. http://prometheus.monitoring:9090 (the /api/v1 path is appended; no credentials in it)."""
    headers: dict[str, HeaderValue] = Field(default_factory=dict, max_length=16, json_schema_extra=header_rules(False))
    """Extra request headers, e.g. X-Scope-OrgID for Mimir tenants (no Authorization: use a Secret reference)."""
    bearer_token_secret_ref: SecretKeyRef | None = None
    """A bearer token read from a Secret."""
    basic_auth: BasicAuth | None = None
    """Basic auth read from a Secret."""
    ca_secret_ref: SecretKeyRef | None = None
    """A PEM CA bundle read from a Secret, for TLS."""
    timeout: PositiveDuration = timedelta(seconds=10)
    """Timeout of one query (at most spec.interval)."""
    namespace_label: str | None = Field(default=None, max_length=63, pattern=r"^$|^[a-zA-Z_][a-zA-Z0-9_]*$")
    """The label that carries a series' Kubernetes namespace (e.g. namespace, kubernetes_namespace);
    every built-in query matches it, so the same model name in two namespaces never mixes. Empty
    turns the matching off; unset uses the operator's --namespace-label (default namespace)."""

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return check_headers(headers, allow_authorization=False)

    @model_validator(mode="after")
    def _one_credential(self) -> "PrometheusSource":
        if self.bearer_token_secret_ref is not None and self.basic_auth is not None:
            raise ValueError("set at most one of bearerTokenSecretRef and basicAuth")
        return self


class ProfileRef(ApiModel):
    """A reference profile (from `modelwarden profile`) stored in a ConfigMap."""

    config_map: ConfigMapKeyRef
    """The ConfigMap and key holding profile.json."""


class ReferenceSpec(ApiModel):
    """What the current window is compared with: exactly one kind."""

    model_config = cel_rules(
        (
            "[has(self.track), has(self.offset), has(self.profileRef)].filter(x, x).size() == 1",
            "spec.reference: set exactly one of track, offset or profileRef",
            "",
        ),
    )

    track: Track | None = None
    """Another track of the same model over the same window (e.g. canary judged against stable)."""
    offset: PositiveDuration | None = None
    """The same track over an earlier window ending this long ago (e.g. 7d); at least spec.window,
    so the reference window never overlaps the current one."""
    profile_ref: ProfileRef | None = None
    """A training-data profile stored in a ConfigMap."""


class SlackAlert(ApiModel):
    """A Slack incoming webhook."""

    webhook_secret_ref: SecretKeyRef
    """Secret key holding the webhook URL."""
    channel: str | None = Field(default=None, max_length=80)
    """Override the webhook's channel."""


class WebhookAlert(ApiModel):
    """A generic JSON webhook, optionally HMAC-SHA256 signed."""

    url: str = Field(pattern=URL_PATTERN, max_length=2048)
    """Receiver URL (no credentials in it)."""
    hmac_secret_ref: SecretKeyRef | None = None
    """Secret key used to sign each request (header X-Modelwarden-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">; receivers should reject old timestamps)."""
    headers: dict[str, HeaderValue] = Field(default_factory=dict, max_length=16, json_schema_extra=header_rules(True))
    """Extra headers (no secrets here: use hmacSecretRef)."""

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return check_headers(headers, allow_authorization=True)


class AlertmanagerAlert(ApiModel):
    """An Alertmanager v2 API endpoint."""

    url: str = Field(pattern=URL_PATTERN, max_length=2048)
    """Base URL, e.g. http://alertmanager.monitoring:9093 (no credentials in it)."""
    labels: dict[str, str] = Field(default_factory=dict, max_length=16, json_schema_extra={"x-kubernetes-validations": [
        {"rule": f"self.all(k, k.matches({cel_string(PROMETHEUS_LABEL_NAME_PATTERN)}))",
         "message": "labels: names must match [a-zA-Z_][a-zA-Z0-9_]* (Alertmanager refuses others)"}]})
    """Extra alert labels."""

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        bad = [name for name in labels if not re.fullmatch(PROMETHEUS_LABEL_NAME_PATTERN, name)]
        if bad:
            raise ValueError(f"label name {bad[0]!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
        return labels


class EmailAlert(ApiModel):
    """Email over SMTP; credentials are never sent in plaintext unless allowPlaintextAuth says so."""

    model_config = cel_rules((  # unset booleans read as their defaults (starttls: true)
        "!has(self.authSecretRef) || !has(self.starttls) || self.starttls || (has(self.implicitTLS) && self.implicitTLS)"
        " || (has(self.allowPlaintextAuth) && self.allowPlaintextAuth)", "spec.actions.alert.email.authSecretRef: credentials "
        "need TLS (starttls or implicitTLS); set allowPlaintextAuth: true to send them in plaintext anyway", ".authSecretRef"))

    host: str = Field(min_length=1, max_length=253)
    """SMTP server host."""
    port: int = Field(default=587, ge=1, le=65535)
    """SMTP server port (465 for implicitTLS)."""
    starttls: bool = True
    """Upgrade a plaintext connection with STARTTLS (refused if the server does not offer it). No effect with implicitTLS."""
    implicit_tls: bool = Field(default=False, alias="implicitTLS")
    """Speak TLS from the first byte (SMTPS, usually port 465) instead of STARTTLS."""
    allow_plaintext_auth: bool = False
    """Send authSecretRef's credentials even when neither starttls nor implicitTLS protects them."""
    auth_secret_ref: BasicAuth | None = None
    """SMTP credentials from a Secret (sent only over TLS unless allowPlaintextAuth)."""
    from_address: str = Field(alias="from", pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    """Sender address."""
    to: list[EmailAddress] = Field(min_length=1, max_length=32)
    """Recipient addresses."""


class AlertSpec(ApiModel):
    """Where alerts go (a Kubernetes Event is always emitted)."""

    slack: SlackAlert | None = None
    """Slack incoming webhook."""
    webhook: WebhookAlert | None = None
    """Generic JSON webhook."""
    alertmanager: AlertmanagerAlert | None = None
    """Alertmanager v2 API."""
    email: EmailAlert | None = None
    """Email."""
    repeat_interval: Duration = timedelta(hours=1)
    """Minimum time between repeats of the same alert."""
    on_insufficient_data: bool = False
    """Also alert when the verdict is InsufficientData."""
    on_error: bool = False
    """Also alert when an evaluation errors."""


class JobTemplate(ApiModel):
    """A batch/v1 Job template for retraining."""

    metadata: JobMetadata = Field(default_factory=dict)
    """Labels and annotations for the Job (its name is the operator's)."""
    backoff_limit: int | None = Field(default=None, ge=0, le=100)
    """Retries before the Job fails."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Maximum run time."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Clean-up delay after the Job finishes."""
    template: JobPodTemplate
    """The Job's pod template: at least one container with a name and an image; restartPolicy
    Never (the default) or OnFailure."""


class RetrainSpec(ApiModel):
    """Launch a retraining Job on a breach and/or on a schedule."""

    job_template: JobTemplate
    """The Job to run; context arrives as MODELWARDEN_* environment variables."""
    cooldown: Duration = timedelta(hours=24)
    """Minimum time between breach-triggered Jobs."""
    schedule: str | None = Field(default=None, min_length=1, max_length=128, json_schema_extra={
        "x-kubernetes-validations": [{"rule": f"self.matches({cel_string(CRON_PATTERN)})", "message": CRON_MESSAGE}]})
    """Cron expression (five fields, as a CronJob takes it) or @hourly/@daily/@weekly/@monthly/@yearly for a CronJob owned by the policy."""
    on_breach: bool = True
    """Launch a Job when the policy breaches (after failureThreshold)."""

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, schedule: str | None) -> str | None:
        return None if schedule is None else check_cron(schedule)


class ActionsSpec(ApiModel):
    """What happens on a breach."""

    alert: AlertSpec | None = None
    """Notifications."""
    rollback: bool = False
    """Roll back the target track (abort a canary; revert stable to the previous version)."""
    retrain: RetrainSpec | None = None
    """Retraining Jobs."""


class DriftPolicySpec(ApiModel):
    """How a ModelDeployment track is judged, how often, and what a breach does."""

    model_config = cel_rules(
        (
            "!has(self.drift) || has(self.reference)",
            "spec.reference is required when spec.drift is set",
            ".reference",
        ),
        (
            "!has(self.performance) || !self.performance.exists(p, p.metric in ["
            + ", ".join(f"'{m}'" for m in ESTIMATED_METRICS) + "]) || (has(self.reference) && has(self.reference.profileRef))",
            "spec.reference.profileRef is required for the estimated_ performance metrics: their calibration comes from the profile",
            ".reference",
        ),
        (
            "!has(self.comparison) || self.comparison.track != self.track",
            "spec.comparison.track must differ from spec.track",
            ".comparison.track",
        ),
        (
            "!has(self.checks) || self.checks.all(c, self.checks.filter(d, d.name == c.name).size() == 1)",
            "spec.checks: names must be unique",
            ".checks",
        ),
        (
            "!has(self.reference) || !has(self.reference.track) || self.reference.track != self.track",
            "spec.reference.track must differ from spec.track",
            ".reference.track",
        ),
        (
            "!has(self.performance) || self.performance.all(p, self.performance.filter(q, q.metric == p.metric"
            " && (has(q.class) ? q.class : '') == (has(p.class) ? p.class : '')).size() == 1)",
            "spec.performance: each metric (and class) may appear once; put min and max in one entry",
            ".performance",
        ),
        (
            f"!has(self.window) || !has(self.interval) || {cel_seconds('self.window')} >= {cel_seconds('self.interval')}",
            "spec.window must be at least spec.interval: a shorter window leaves time between evaluations unjudged",
            ".window",
        ),
        (
            f"!has(self.feedbackWindow) || !has(self.interval) || {cel_seconds('self.feedbackWindow')} >= {cel_seconds('self.interval')}",
            "spec.feedbackWindow must be at least spec.interval: a shorter window leaves feedback between evaluations unjudged",
            ".feedbackWindow",
        ),
        (
            "!has(self.reference) || !has(self.reference.offset) || !has(self.window)"
            f" || {cel_seconds('self.reference.offset')} >= {cel_seconds('self.window')}",
            "spec.reference.offset must be at least spec.window: a shorter offset makes the reference window overlap the current one",
            ".reference.offset",
        ),
        (
            "!has(self.prometheus) || !has(self.prometheus.timeout) || !has(self.interval)"
            f" || {cel_seconds('self.prometheus.timeout')} <= {cel_seconds('self.interval')}",
            "spec.prometheus.timeout must be at most spec.interval: a query may not outlast the time between evaluations",
            ".prometheus.timeout",
        ),
    )

    target_ref: TargetRef
    """The ModelDeployment (same namespace)."""
    track: Track = Track.STABLE
    """The track judged; a policy on the canary track gates its progress."""
    interval: PositiveDuration = timedelta(minutes=1)
    """How often to evaluate."""
    window: PositiveDuration = timedelta(minutes=30)
    """The look-back window of each evaluation (at least interval)."""
    feedback_window: PositiveDuration | None = None
    """The look-back window for ground-truth feedback (accuracy, precision, recall, F1, MSE, MAE,
    RMSE and the comparison's accuracy); default: window. Labels often arrive days later than
    predictions: judge quality over e.g. 7d while drift looks at the last 30m."""
    min_samples: int = Field(default=1000, ge=1)
    """Below this many observations (current or reference) a check is InsufficientData, never Fail."""
    failure_threshold: int = Field(default=3, ge=1, le=100)
    """Consecutive failing evaluations before any action."""
    reference: ReferenceSpec | None = None
    """Baseline for drift; required when drift is set. The estimated_* performance metrics need a
    profileRef (the profile's calibration)."""
    drift: DriftSpec | None = None
    """Data drift checks."""
    performance: list[PerformanceCheck] = Field(default_factory=list, max_length=32)
    """Quality and serving bounds."""
    comparison: ComparisonSpec | None = None
    """Statistical comparison with another track."""
    outliers: OutlierSpec | None = None
    """Outlier-rate bound."""
    checks: list[CustomCheck] = Field(default_factory=list, max_length=32)
    """Custom PromQL checks."""
    prometheus: PrometheusSource | None = None
    """Metrics source; defaults to the operator's --prometheus-url."""
    actions: ActionsSpec = Field(default_factory=ActionsSpec)
    """What a breach does."""
    suspend: bool = False
    """Stop evaluating (status is kept)."""

    @model_validator(mode="after")
    def _consistent(self) -> "DriftPolicySpec":
        """The cross-field rules of the CEL rules above, for the operator (the same messages)."""
        if self.window < self.interval:
            raise ValueError("spec.window must be at least spec.interval")
        if self.feedback_window is not None and self.feedback_window < self.interval:
            raise ValueError("spec.feedbackWindow must be at least spec.interval")
        if self.reference is not None and self.reference.offset is not None and self.reference.offset < self.window:
            raise ValueError("spec.reference.offset must be at least spec.window: a shorter offset makes the "
                             "reference window overlap the current one")
        if self.prometheus is not None and self.prometheus.timeout > self.interval:
            raise ValueError("spec.prometheus.timeout must be at most spec.interval")
        names = [check.name for check in self.checks]
        if len(set(names)) != len(names):
            raise ValueError("spec.checks: names must be unique")
        if any(check.metric.value in ESTIMATED_METRICS for check in self.performance) and (
            self.reference is None or self.reference.profile_ref is None
        ):
            raise ValueError("spec.reference.profileRef is required for the estimated_ performance metrics: their "
                             "calibration comes from the profile")
        keys = [(check.metric, check.class_label) for check in self.performance]
        if len(set(keys)) != len(keys):
            raise ValueError("spec.performance: each metric (and class) may appear once")
        return self


class DriftPolicy(ApiModel):
    """A policy that judges one track of a ModelDeployment."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = "DriftPolicy"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: DriftPolicySpec
    status: DriftPolicyStatus | None = None
