"""The DriftPolicy custom resource: how a ModelDeployment track is judged and what a breach does."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pydantic import ConfigDict, Field

from modelwarden.contract.kubernetes import API_VERSION
from modelwarden.api.checks import ComparisonSpec, CustomCheck, DriftSpec, OutlierSpec, PerformanceCheck
from modelwarden.api.common import (
    NAME_PATTERN,
    ApiModel,
    ConfigMapKeyRef,
    Condition,
    PodTemplateSpec,
    SecretKeyRef,
    Track,
    cel_rules,
)
from modelwarden.api.duration import Duration


class TargetRef(ApiModel):
    """The ModelDeployment judged by this policy (same namespace)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """Name of the ModelDeployment."""


class BasicAuth(ApiModel):
    """HTTP basic auth from one Secret."""

    secret_name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """Secret holding the credentials."""
    username_key: str = "username"
    """Key of the user name."""
    password_key: str = "password"
    """Key of the password."""


class PrometheusSource(ApiModel):
    """A Prometheus-API endpoint (Prometheus, Thanos, Mimir, VictoriaMetrics)."""

    url: str = Field(pattern=r"^https?://.+", max_length=2048)
    """Base URL, e.g. http://prometheus.monitoring:9090 (the /api/v1 path is appended)."""
    headers: dict[str, str] = Field(default_factory=dict, max_length=16)
    """Extra request headers, e.g. X-Scope-OrgID for Mimir tenants."""
    bearer_token_secret_ref: SecretKeyRef | None = None
    """A bearer token read from a Secret."""
    basic_auth: BasicAuth | None = None
    """Basic auth read from a Secret."""
    ca_secret_ref: SecretKeyRef | None = None
    """A PEM CA bundle read from a Secret, for TLS."""
    timeout: Duration = timedelta(seconds=10)
    """Timeout of one query."""
    namespace_label: str | None = Field(default=None, max_length=63, pattern=r"^$|^[a-zA-Z_][a-zA-Z0-9_]*$")
    """The label that carries a series' Kubernetes namespace (e.g. namespace, kubernetes_namespace);
    every built-in query matches it, so the same model name in two namespaces never mixes. Empty
    turns the matching off; unset uses the operator's --namespace-label (default namespace)."""


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
    offset: Duration | None = None
    """The same track over an earlier window ending this long ago (e.g. 7d)."""
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

    url: str = Field(pattern=r"^https?://.+", max_length=2048)
    """Receiver URL."""
    hmac_secret_ref: SecretKeyRef | None = None
    """Secret key used to sign the body (header X-Modelwarden-Signature: sha256=<hex>)."""
    headers: dict[str, str] = Field(default_factory=dict, max_length=16)
    """Extra headers (no secrets here: use hmacSecretRef)."""


class AlertmanagerAlert(ApiModel):
    """An Alertmanager v2 API endpoint."""

    url: str = Field(pattern=r"^https?://.+", max_length=2048)
    """Base URL, e.g. http://alertmanager.monitoring:9093."""
    labels: dict[str, str] = Field(default_factory=dict, max_length=16)
    """Extra alert labels."""


class EmailAlert(ApiModel):
    """Email over SMTP."""

    host: str = Field(min_length=1, max_length=253)
    """SMTP server host."""
    port: int = Field(default=587, ge=1, le=65535)
    """SMTP server port."""
    starttls: bool = True
    """Upgrade the connection with STARTTLS."""
    auth_secret_ref: BasicAuth | None = None
    """SMTP credentials from a Secret."""
    from_address: str = Field(alias="from", pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    """Sender address."""
    to: list[str] = Field(min_length=1, max_length=32)
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

    metadata: dict[str, Any] = Field(default_factory=dict)
    """Labels and annotations for the Job."""
    backoff_limit: int | None = Field(default=None, ge=0, le=100)
    """Retries before the Job fails."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Maximum run time."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Clean-up delay after the Job finishes."""
    template: PodTemplateSpec
    """The Job's pod template (restartPolicy defaults to Never)."""


class RetrainSpec(ApiModel):
    """Launch a retraining Job on a breach and/or on a schedule."""

    job_template: JobTemplate
    """The Job to run; context arrives as MODELWARDEN_* environment variables."""
    cooldown: Duration = timedelta(hours=24)
    """Minimum time between breach-triggered Jobs."""
    schedule: str | None = Field(default=None, min_length=1, max_length=128)
    """Cron expression or @hourly/@daily/@weekly/@monthly for a CronJob owned by the policy."""
    on_breach: bool = True
    """Launch a Job when the policy breaches (after failureThreshold)."""


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
    )

    target_ref: TargetRef
    """The ModelDeployment (same namespace)."""
    track: Track = Track.STABLE
    """The track judged; a policy on the canary track gates its progress."""
    interval: Duration = timedelta(minutes=1)
    """How often to evaluate."""
    window: Duration = timedelta(minutes=30)
    """The look-back window of each evaluation."""
    feedback_window: Duration | None = None
    """The look-back window for ground-truth feedback (accuracy, precision, recall, F1, MSE, MAE,
    RMSE and the comparison's accuracy); default: window. Labels often arrive days later than
    predictions: judge quality over e.g. 7d while drift looks at the last 30m."""
    min_samples: int = Field(default=1000, ge=1)
    """Below this many observations (current or reference) a check is InsufficientData, never Fail."""
    failure_threshold: int = Field(default=3, ge=1, le=100)
    """Consecutive failing evaluations before any action."""
    reference: ReferenceSpec | None = None
    """Baseline for drift; required when drift is set."""
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


class DriftPolicyPhase(str, Enum):
    """The state of a DriftPolicy."""

    PENDING = "Pending"  # means: not evaluated yet
    PASSING = "Passing"  # means: the last evaluation passed every check
    FAILING = "Failing"  # means: the last evaluation failed at least one check
    INSUFFICIENT_DATA = "InsufficientData"  # means: too few samples to judge; never acts
    ERROR = "Error"  # means: the evaluation could not run (query failed); never acts
    SUSPENDED = "Suspended"  # means: spec.suspend is true


class Verdict(str, Enum):
    """The outcome of one check or one evaluation."""

    PASS = "Pass"
    FAIL = "Fail"
    INSUFFICIENT_DATA = "InsufficientData"
    ERROR = "Error"


class CheckResult(ApiModel):
    """One check's outcome with its numbers."""

    check: str
    """Check name, e.g. drift/age, performance/accuracy, custom/p99."""
    verdict: Verdict
    """Pass, Fail, InsufficientData or Error."""
    value: float | None = None
    """Measured value."""
    threshold: float | None = None
    """Bound it was compared with."""
    samples: int | None = None
    """Observations behind the value."""
    message: str = ""
    """A one-line human explanation."""


class Evaluation(ApiModel):
    """One evaluation of the policy."""

    time: datetime
    """When it ran."""
    verdict: Verdict
    """Aggregated verdict."""
    samples: int | None = None
    """Observations in the current window."""
    duration_seconds: float | None = None
    """How long the evaluation took."""
    results: list[CheckResult] = Field(default_factory=list, max_length=512)
    """Every check."""


class EvaluationSummary(ApiModel):
    """A compact past evaluation for the ring buffer."""

    time: datetime
    """When it ran."""
    verdict: Verdict
    """Aggregated verdict."""
    failed: list[str] = Field(default_factory=list, max_length=64)
    """Names of failing checks."""


class ActionRecord(ApiModel):
    """An action the policy took."""

    type: str
    """Rollback, Retrain or Alert."""
    time: datetime
    """When."""
    reason: str = ""
    """Why."""


class RetrainStatus(ApiModel):
    """The last retraining Job."""

    job_name: str
    """The Job's name."""
    started_at: datetime
    """When it was created."""
    finished_at: datetime | None = None
    """When it finished."""
    outcome: str = "Running"
    """Running, Succeeded or Failed."""
    trigger: str = ""
    """Breach or Manual (scheduled runs belong to the CronJob)."""


class DriftPolicyStatus(ApiModel):
    """Observed state of the policy, written only when it changes."""

    phase: DriftPolicyPhase = DriftPolicyPhase.PENDING
    """State of the policy."""
    observed_generation: int | None = None
    """The spec generation last evaluated."""
    last_evaluation: Evaluation | None = None
    """The latest evaluation with every check."""
    consecutive_failures: int = Field(default=0, ge=0)
    """Failing evaluations in a row (InsufficientData and Error neither count nor reset)."""
    evaluated_version: str | None = None
    """The version of the judged track at the last evaluation; another version starts a new failure streak."""
    failing_since: datetime | None = None
    """Time of the first Fail of the current streak: identifies the breach (retraining Job names derive from it)."""
    evaluations: list[EvaluationSummary] = Field(default_factory=list, max_length=50)
    """Recent evaluations, newest last (a bounded ring buffer)."""
    last_action: ActionRecord | None = None
    """The latest action."""
    last_retrain: RetrainStatus | None = None
    """The latest retraining Job."""
    last_alert_at: datetime | None = None
    """When an alert was last sent (for repeatInterval)."""
    retrain_token: str | None = None
    """The modelwarden.io/retrain annotation value last acted on (one Job per token)."""
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    """Ready (evaluating), Breached (failureThreshold reached; cleared by a Pass), InvalidSpec."""


class DriftPolicy(ApiModel):
    """A policy that judges one track of a ModelDeployment."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = "DriftPolicy"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: DriftPolicySpec
    status: DriftPolicyStatus | None = None
