"""The DriftPolicy custom resource: how a ModelDeployment track is judged and what a breach does."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from modelwarden.contract.kubernetes import API_VERSION
from modelwarden.api.checks import ESTIMATED_METRICS, AgreementSpec, ComparisonSpec, CustomCheck, DriftSpec, OutlierSpec, PerformanceCheck
from modelwarden.api.common import (
    MODEL_DEPLOYMENT_NAME_MAX,
    MODEL_DEPLOYMENT_NAME_PATTERN,
    ApiModel,
    BasicAuth,
    ConfigMapKeyRef,
    SecretKeyRef,
    Track,
    cel_rules,
)
from modelwarden.api.duration import PositiveDuration, cel_seconds, format_duration
from modelwarden.api.actions import ActionsSpec
from modelwarden.api.tracking import TrackingSpec
from modelwarden.api.fields import URL_PATTERN, HeaderValue, check_headers, header_rules
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


DEFAULT_WINDOW = timedelta(minutes=30)
SCRAPES_PER_WINDOW = 4  # the fewest scrape intervals a window may span (DriftPolicySpec.scrape_problems)


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
            "!has(self.agreement) || (has(self.track) && self.track == 'shadow')",
            "spec.agreement applies to the shadow track: only a shadow's pods score each request with the stable's "
            "model too (spec.shadow.pairWithStable)",
            ".agreement",
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
            "!has(self.reference) || !has(self.reference.offset)"
            f" || {cel_seconds('self.reference.offset')} >= (has(self.window) ? {cel_seconds('self.window')} : {DEFAULT_WINDOW.total_seconds()})",
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
    window: PositiveDuration = DEFAULT_WINDOW
    """The look-back window of each evaluation (at least interval)."""
    feedback_window: PositiveDuration | None = None
    """The look-back window for ground-truth feedback (accuracy, precision, recall, F1, MSE, MAE,
    RMSE and the comparison's accuracy); default: window. Labels often arrive days later than
    predictions: judge quality over e.g. 7d while drift looks at the last 30m."""
    min_samples: int = Field(default=1000, ge=1)
    """Below this many observations (current or reference) a check is InsufficientData, never Fail."""
    failure_threshold: int = Field(default=3, ge=1, le=100)
    """Consecutive failing evaluations before any action."""
    alpha: float = Field(default=0.01, gt=0, lt=1)
    """The chance the policy breaches when nothing changed, shared by all its statistical checks: per rollout of a version on the canary or shadow track (per day once it serves beyond a day), per day on the stable track (docs/statistics.md)."""
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
    agreement: AgreementSpec | None = None
    """For a classifier on the shadow track: a lower bound on how often it predicts the stable's class
    for the same row (the shadow must be served with pairWithStable; candidates are)."""
    checks: list[CustomCheck] = Field(default_factory=list, max_length=32)
    """Custom PromQL checks."""
    prometheus: PrometheusSource | None = None
    """Metrics source; defaults to the operator's --prometheus-url."""
    actions: ActionsSpec = Field(default_factory=ActionsSpec)
    """What a breach does."""
    tracking: TrackingSpec | None = None
    """Also record every evaluation outside the cluster (MLflow), for the people who trained the model."""
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
        if self.agreement is not None and self.track is not Track.SHADOW:
            raise ValueError("spec.agreement applies to the shadow track: only a shadow's pods score each request "
                             "with the stable's model too (spec.shadow.pairWithStable)")
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

    def scrape_problems(self, scrape_interval: timedelta) -> list[str]:
        """Windows too short for how often Prometheus scrapes (the operator's --scrape-interval,
        not part of the spec, hence not a CEL rule). A window's counts are the growth between the
        scrapes at its edges: a window of a scrape or two holds a handful of scrapes' worth of
        observations and moves in jumps of a whole scrape."""
        shortest = SCRAPES_PER_WINDOW * scrape_interval
        windows = {"spec.window": self.window, "spec.feedbackWindow": self.feedback_window}
        return [f"{field}: {format_duration(window)} is shorter than {SCRAPES_PER_WINDOW} scrape intervals "
                f"({SCRAPES_PER_WINDOW} × {format_duration(scrape_interval)}, the operator's --scrape-interval)"
                for field, window in windows.items() if window is not None and window < shortest]


class DriftPolicy(ApiModel):
    """A policy that judges one track of a ModelDeployment."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = "DriftPolicy"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: DriftPolicySpec
    status: DriftPolicyStatus | None = None
