"""The ModelDeployment custom resource: what runs and who gets traffic."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator

from modelwarden.contract.kubernetes import API_VERSION
from modelwarden.api.common import (
    LABEL_VALUE_PATTERN,
    ApiModel,
    PodTemplateSpec,
    SecretKeyRef,
    cel_rules,
)
from modelwarden.api.deploymentstatus import (
    CandidateRecord,
    CandidateStage,
    CandidateStatus,
    GateRecord,
    HistoryEntry,
    Lineage,
    ModelDeploymentPhase,
    ModelDeploymentStatus,
    ModelRef,
    Requests,
    RollbackStatus,
    TrackStatus,
    Weights,
)
from modelwarden.api.duration import Duration, PositiveDuration, cel_seconds
from modelwarden.api.tracks import TRACK_RULES, Autoscaling, StorageSpec, TrackSpec
from modelwarden.api.webhookgates import WebhookGate

# Part of the ModelDeployment API, defined in api/tracks.py and api/deploymentstatus.py.
__all__ = ["Autoscaling", "StorageSpec", "TrackSpec", "CandidateRecord", "CandidateStage", "CandidateStatus", "GateRecord",
           "Lineage", "HistoryEntry", "ModelDeploymentPhase", "ModelDeploymentStatus",
           "ModelRef", "Requests", "RollbackStatus", "TrackStatus", "Weights"]

# A hostname as Gateway API takes it: lowercase DNS names, optionally with a leading wildcard label.
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class StableTrack(TrackSpec):
    """The track that serves users by default."""


class StepApproval(str, Enum):
    """Whether a person must approve a canary step."""

    REQUIRED = "required"  # means: the step waits for modelwarden.io/approve


class CanaryStep(ApiModel):
    """One step of a progressive canary: hold `weight` percent of traffic for `pause`."""

    weight: int = Field(ge=1, le=100)
    """Percent of traffic sent to the canary during this step."""
    pause: Duration = timedelta(minutes=5)
    """How long the step lasts (with passing gating policies) before the next one."""
    approval: StepApproval | None = None
    """required: after its pause and gates, the step also waits for a person (`kubectl modelwarden
    approve`, annotation modelwarden.io/approve) before the next one."""


class CanaryTrack(TrackSpec):
    """A candidate version: a progressive rollout (`steps`) or a fixed A/B split (`weight`)."""

    model_config = cel_rules(
        *TRACK_RULES,
        (
            "has(self.weight) != has(self.steps)",
            "spec.canary: set exactly one of weight (fixed A/B split) or steps (progressive rollout)",
            "",
        ),
        (
            "!has(self.steps) || self.steps.map(s, s.weight).isSorted()"
            " && self.steps.all(s, self.steps.filter(t, t.weight == s.weight).size() == 1)",
            "spec.canary.steps: weights must be strictly increasing",
            ".steps",
        ),
        (
            "!has(self.webhooks) || self.webhooks.all(w, self.webhooks.filter(v, v.name == w.name).size() == 1)",
            "spec.canary.webhooks: names must be unique",
            ".webhooks",
        ),
        (
            "!has(self.autoPromoteWinner) || !self.autoPromoteWinner || has(self.weight)",
            "spec.canary.autoPromoteWinner needs a fixed A/B split (weight): a progressive rollout promotes after its last step",
            ".autoPromoteWinner",
        ),
    )

    weight: int | None = Field(default=None, ge=0, le=100)
    """Fixed percent of traffic for an A/B split; promotes only with autoPromoteWinner."""
    steps: list[CanaryStep] | None = Field(default=None, min_length=1, max_length=20)
    """Progressive rollout: weights strictly increasing; after the last step the canary is promoted."""
    progress_deadline: PositiveDuration = timedelta(minutes=30)
    """How long a step may go past its pause without a decisive verdict before condition Stalled is set."""
    abort_on_stall: bool = False
    """Roll the canary back when it stalls (a low-traffic canary never gets enough data to pass)."""
    auto_promote_winner: bool = False
    """A/B split only: promote the canary once a gating DriftPolicy's comparison names it the winner (condition
    Winner, on evidence from after the split began) and every gating policy passes."""
    webhooks: list[WebhookGate] = Field(default_factory=list, max_length=8)
    """Webhook gates (confirm-rollout, pre-rollout, confirm-promotion): a 2xx answer lets the rollout go on,
    anything else holds it (status.gates says why); a person's promote or abort overrides them."""


class ShadowTrack(TrackSpec):
    """A version that receives a mirrored copy of traffic; its answers never reach users."""

    mirror_percent: int = Field(default=100, ge=0, le=100)
    """Percent of requests mirrored to the shadow."""
    pair_with_stable: bool = False
    """Also load the stable's model in the shadow's pods and score every mirrored request with both,
    exporting how often their classes agree (a DriftPolicy's agreement check reads it; classifiers
    only). Costs the stable model's memory and compute again in each shadow pod."""


class CandidateSource(str, Enum):
    """Where candidates come from."""

    RETRAIN = "retrain"  # means: the result of a retraining Job of a DriftPolicy targeting this ModelDeployment
    ALIAS = "alias"  # means: the version an MLflow alias (spec.candidates.aliasUri) names, whenever it moves


class CandidateShadow(ApiModel):
    """The first stage: mirrored traffic only, gated without ground truth."""

    model_config = cel_rules(
        (f"!has(self.deadline) || !has(self.duration) || {cel_seconds('self.deadline')} > {cel_seconds('self.duration')}",
         "spec.candidates.shadow.deadline must be longer than duration: the gate's Pass counts only after duration",
         ".deadline"),
    )

    policy: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    """The DriftPolicy (track shadow, usually reference track stable) whose Pass, on evidence from after
    the shadow started, lets the candidate go on; its breach rejects it. Required: no gate, no rollout."""
    duration: PositiveDuration = timedelta(minutes=10)
    """The least time in shadow."""
    deadline: PositiveDuration | None = None
    """How long a candidate may stay in shadow while its gate does not pass: past it, at a look whose
    last verdict about the candidate is not a Pass (none, InsufficientData, Error, Fail), it is
    rejected (stable untouched) and the loop is free for the next candidate. A passing gate whose
    window does not yet lie wholly in the stage is waited for. Counted from the stage's start, paused
    time included; nothing is rejected for it while paused. Default: 3 × duration, at least 1h."""
    mirror_percent: int = Field(default=100, ge=1, le=100)
    """Percent of requests mirrored to it."""
    replicas: int = Field(default=1, ge=1, le=1000)
    """Its pods."""

    @property
    def effective_deadline(self) -> timedelta:
        return self.deadline if self.deadline is not None else max(timedelta(hours=1), 3 * self.duration)

    @model_validator(mode="after")
    def _deadline_after_duration(self) -> "CandidateShadow":
        if self.deadline is not None and self.deadline <= self.duration:
            raise ValueError("spec.candidates.shadow.deadline must be longer than duration: the gate's Pass counts only after duration")
        return self

    pair_with_stable: bool = True
    """Score every mirrored request with the stable's model too, so the shadow policy's agreement check
    can compare their predictions request by request (spec.shadow.pairWithStable)."""


class CandidateCanary(ApiModel):
    """The second stage: real traffic by steps (or a fixed A/B split), gated by the canary DriftPolicies."""

    model_config = cel_rules(
        ("has(self.weight) != has(self.steps)",
         "spec.candidates.canary: set exactly one of weight (fixed A/B split) or steps (progressive rollout)", ""),
        ("!has(self.steps) || self.steps.map(s, s.weight).isSorted()"
         " && self.steps.all(s, self.steps.filter(t, t.weight == s.weight).size() == 1)",
         "spec.candidates.canary.steps: weights must be strictly increasing", ".steps"),
    )

    steps: list[CanaryStep] | None = Field(default=None, min_length=1, max_length=20)
    """Progressive rollout (as spec.canary.steps)."""
    weight: int | None = Field(default=None, ge=1, le=100)
    """A fixed A/B split; with autoPromote, promoted once a comparison names it the winner."""
    replicas: int = Field(default=1, ge=1, le=1000)
    """Its pods."""
    progress_deadline: PositiveDuration = timedelta(minutes=30)
    """As spec.canary.progressDeadline."""
    abort_on_stall: bool = False
    """As spec.canary.abortOnStall."""

    @model_validator(mode="after")
    def _one_shape(self) -> "CandidateCanary":
        if (self.steps is None) == (self.weight is None):
            raise ValueError("spec.candidates.canary: set exactly one of weight or steps")
        return self


class CandidatesSpec(ApiModel):
    """The closed loop: new models (retrained, or named by an MLflow alias) go shadow -> canary -> stable
    by themselves, one at a time, driven from status (this spec is never written)."""

    model_config = cel_rules(
        ("(self.source == 'alias') == has(self.aliasUri)",
         "spec.candidates.aliasUri is required with source alias, and only then", ".aliasUri"),
    )

    source: CandidateSource = CandidateSource.RETRAIN
    """retrain or alias."""
    alias_uri: str | None = Field(default=None, max_length=1024, pattern=r"^models:/[^/@]+@[^/@]+$")
    """models:/NAME@ALIAS whose version becomes a candidate each time it moves (source alias)."""
    shadow: CandidateShadow
    """The shadow stage."""
    canary: CandidateCanary
    """The canary stage."""
    auto_promote: bool = False
    """Promote after the last step (or as the A/B winner) by itself; otherwise the last step waits for a
    person (kubectl modelwarden approve; promote for an A/B weight)."""
    cooldown: Duration = timedelta(hours=1)
    """Least time between the end of one candidate and the start of the next."""

    @model_validator(mode="after")
    def _alias_with_source(self) -> "CandidatesSpec":
        if (self.source is CandidateSource.ALIAS) != (self.alias_uri is not None):
            raise ValueError("spec.candidates.aliasUri is required with source alias, and only then")
        return self


class RouterKind(str, Enum):
    """How traffic weights and mirroring are applied."""

    GATEWAYAPI = "gatewayapi"
    ISTIO = "istio"
    REPLICAS = "replicas"


class ParentRef(ApiModel):
    """A Gateway API parentRef (a Gateway, or a Service for mesh routing)."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    """Name of the parent (usually a Gateway)."""
    namespace: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL_PATTERN)
    """Namespace of the parent; defaults to the ModelDeployment's namespace."""
    section_name: str | None = Field(default=None, max_length=253)
    """A listener name on the Gateway."""
    group: str | None = Field(default=None, max_length=253)
    """API group of the parent (default gateway.networking.k8s.io)."""
    kind: str | None = Field(default=None, max_length=63)
    """Kind of the parent (default Gateway)."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port on the parent."""


class GatewayApiRouting(ApiModel):
    """Settings for the Gateway API HTTPRoute router."""

    parent_refs: list[ParentRef] = Field(min_length=1, max_length=32)
    """Gateways (or mesh Services) the HTTPRoute attaches to."""
    hostnames: list[Annotated[str, Field(max_length=253, pattern=HOSTNAME_PATTERN)]] = Field(default_factory=list, max_length=16)
    """Hostnames the route answers for (lowercase DNS names, optionally *.-prefixed)."""
    path_prefix: str = Field(default="/", pattern=r"^/.*$", max_length=1024)
    """Path prefix matched by the route."""


class IstioRouting(ApiModel):
    """Settings for the Istio VirtualService router."""

    hosts: list[str] = Field(default_factory=list, max_length=16)
    """Hosts of the VirtualService; defaults to the model's front Service."""
    gateways: list[str] = Field(default_factory=list, max_length=16)
    """Istio gateways; empty means the mesh only."""


class TrafficSpec(ApiModel):
    """Which router applies weights and mirroring."""

    model_config = cel_rules(
        (
            "self.router != 'gatewayapi' || has(self.gatewayapi)",
            "spec.traffic.gatewayapi is required when spec.traffic.router is gatewayapi",
            ".gatewayapi",
        ),
        (
            "!has(self.gatewayapi) || self.router == 'gatewayapi'",
            "spec.traffic.gatewayapi applies to router gatewayapi only: set router: gatewayapi or remove it",
            ".gatewayapi",
        ),
        (
            "!has(self.istio) || self.router == 'istio'",
            "spec.traffic.istio applies to router istio only: set router: istio or remove it",
            ".istio",
        ),
    )

    router: RouterKind = RouterKind.REPLICAS
    """gatewayapi (HTTPRoute), istio (VirtualService) or replicas (no mesh: weight by replica ratio)."""
    gatewayapi: GatewayApiRouting | None = None
    """HTTPRoute settings (router gatewayapi)."""
    istio: IstioRouting | None = None
    """VirtualService settings (router istio)."""


class FeedbackSpec(ApiModel):
    """Signed feedback tokens: every prediction answer carries one, and feedback that returns it is
    counted under the track and version that predicted, by any replica of any track."""

    token_secret_ref: SecretKeyRef
    """A Secret key holding the token keys, one per line (the first signs, all verify; at least 16
    characters each). Every track's pods mount it, so any replica verifies any track's tokens."""


class ModelDeploymentSpec(ApiModel):
    """Desired state of a model's serving tracks and traffic."""

    model_config = cel_rules(
        (
            "!has(self.canary) || !has(self.canary.version) || !has(self.stable.version)"
            " || self.canary.version != self.stable.version",
            "spec.canary.version must differ from spec.stable.version",
            ".canary.version",
        ),
        (
            "!has(self.shadow) || !has(self.shadow.version) || !has(self.stable.version)"
            " || self.shadow.version != self.stable.version",
            "spec.shadow.version must differ from spec.stable.version",
            ".shadow.version",
        ),
        (
            "!has(self.canary) || !has(self.canary.autoscaling) || (has(self.traffic) && has(self.traffic.router)"
            " && self.traffic.router != 'replicas')",
            "spec.canary.autoscaling needs router gatewayapi or istio: with router replicas the canary's weight is its "
            "share of the pods, which an HPA would change",
            ".canary.autoscaling",
        ),
        (
            "!has(self.shadow) || !has(self.canary) || !has(self.shadow.version) || !has(self.canary.version)"
            " || self.shadow.version != self.canary.version",
            "spec.shadow.version must differ from spec.canary.version",
            ".shadow.version",
        ),
        (
            "!has(self.candidates) || (!has(self.canary) && !has(self.shadow))",
            "spec.candidates runs candidates as the shadow and canary tracks: remove spec.canary and spec.shadow",
            ".candidates",
        ),
    )

    model: str = Field(min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)
    """Logical model name; the `model` label on every metric."""
    template: PodTemplateSpec | None = None
    """Pod template shared by all tracks (its first container runs the model server). Defaults to the operator's image running `modelwarden serve`."""
    port: int = Field(default=8080, ge=1, le=65535)
    """Container port the model server listens on."""
    stable: StableTrack
    """The stable track."""
    canary: CanaryTrack | None = None
    """An optional canary track."""
    shadow: ShadowTrack | None = None
    """An optional shadow track."""
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    """Traffic routing."""
    revision_history_limit: int = Field(default=10, ge=1, le=100)
    """How many past stable versions status.history keeps."""
    feedback: FeedbackSpec | None = None
    """Ground-truth feedback tokens (see docs/metrics.md)."""
    storage: StorageSpec = Field(default_factory=StorageSpec)
    """Credentials and limits for fetching models, and how often registry aliases are resolved."""
    candidates: CandidatesSpec | None = None
    """The closed loop: candidates run as the shadow, then the canary track (so spec.canary and spec.shadow
    stay unset); a promoted one serves as stable while this spec still names the old one (condition SpecBehind)."""

    @model_validator(mode="after")
    def _canary_autoscaling_needs_a_mesh(self) -> "ModelDeploymentSpec":
        if self.canary is not None and self.canary.autoscaling is not None and self.traffic.router is RouterKind.REPLICAS:
            raise ValueError("spec.canary.autoscaling needs router gatewayapi or istio")
        if self.candidates is not None and (self.canary is not None or self.shadow is not None):
            raise ValueError("spec.candidates runs candidates as the shadow and canary tracks: remove spec.canary and spec.shadow")
        return self


class ModelDeployment(ApiModel):
    """A model served by stable, canary and shadow tracks with managed traffic."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = "ModelDeployment"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
