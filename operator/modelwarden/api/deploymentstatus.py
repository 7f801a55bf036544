"""The observed state of a ModelDeployment: status, written only by the operator."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import Field

from modelwarden.api.common import ApiModel, Condition
from modelwarden.api.policystatus import Verdict


class ModelDeploymentPhase(str, Enum):
    """The lifecycle phase of a ModelDeployment."""

    PENDING = "Pending"  # means: children are being created; nothing ready yet
    STABLE = "Stable"  # means: only the stable track serves users (a shadow may mirror)
    PROGRESSING = "Progressing"  # means: a canary takes part of the traffic and advances by steps
    PAUSED = "Paused"  # means: the canary holds for a person (modelwarden.io/paused, or a step awaiting approval)
    PROMOTING = "Promoting"  # means: the canary passed every step and becomes the stable track
    ROLLED_BACK = "RolledBack"  # means: a canary was aborted or stable reverted after failing policies
    DEGRADED = "Degraded"  # means: a track is not ready (fewer ready replicas than desired)
    FAILED = "Failed"  # means: the spec cannot be applied (InvalidSpec condition says why)


class Weights(ApiModel):
    """Traffic split as applied by the router."""

    stable: int = Field(default=100, ge=0, le=100)
    """Percent of traffic on the stable track."""
    canary: int = Field(default=0, ge=0, le=100)
    """Percent of traffic on the canary track."""
    mirror: int = Field(default=0, ge=0, le=100)
    """Percent of requests mirrored to the shadow."""


class GateRecord(ApiModel):
    """A gate a candidate passed (or failed): which policy judged it, when, and what it said."""

    stage: str
    """shadow or canary."""
    policy: str
    """The DriftPolicy that judged it."""
    verdict: str
    """Its verdict (Pass, Warning or Fail)."""
    evaluated_at: datetime | None = None
    """When that verdict was evaluated."""
    checks: list[str] = Field(default_factory=list, max_length=64)
    """The checks of that evaluation that passed (for a Pass or Warning) or failed (for a Fail), e.g. agreement/rate."""


class Lineage(ApiModel):
    """Where a model came from: what triggered it, what produced it, from which version, and the gates it passed."""

    source: str
    """retrain (a retraining Job's result), alias (an MLflow alias moved) or spec (a person's spec)."""
    breach_id: str | None = None
    """The breach (or manual request) that launched its retraining: NAMESPACE/JOB."""
    policy: str | None = None
    """The DriftPolicy that launched it."""
    checks: list[str] = Field(default_factory=list, max_length=32)
    """The checks that failed and triggered it."""
    job: str | None = None
    """The retraining Job."""
    run_id: str | None = None
    """The MLflow run that produced it."""
    model_version: str | None = None
    """The MLflow registered model version."""
    window_start: datetime | None = None
    """Start of the data window that failed (the retraining was told to use data from here)."""
    window_end: datetime | None = None
    """End of that window."""
    parent_version: str | None = None
    """The stable version it was meant to replace."""
    gates: list[GateRecord] = Field(default_factory=list, max_length=16)
    """The gates it passed on its way to stable (or the one it failed)."""


class TrackStatus(ApiModel):
    """What one track actually serves."""

    version: str
    """Version served."""
    model_uri: str | None = None
    """The artifact as the spec names it (an MLflow alias stays an alias here)."""
    resolved_uri: str | None = None
    """What the pods fetch: an alias or stage pinned to its version (models:/NAME/N) when the track started."""
    model_version: str | None = None
    """The MLflow registered model version served."""
    run_id: str | None = None
    """The MLflow run that produced it."""
    sha256: str | None = None
    """The digest its model file was pinned to (spec.<track>.sha256 when it started)."""
    replicas: int = 0
    """Desired replicas."""
    ready_replicas: int = 0
    """Ready replicas, read from the child Deployment."""
    ready: bool = False
    """All desired replicas are ready."""
    lineage: Lineage | None = None
    """Where the model came from (a candidate's trigger, Job, run, parent and gates)."""


class HistoryEntry(ApiModel):
    """A version that served as stable."""

    version: str
    """The version."""
    model_uri: str
    """The artifact as the spec named it."""
    resolved_uri: str | None = None
    """The exact artifact served (a rollback returns to it)."""
    model_version: str | None = None
    """The MLflow registered model version."""
    run_id: str | None = None
    """The MLflow run that produced it."""
    sha256: str | None = None
    """The digest its model file was pinned to."""
    promoted_at: datetime | None = None
    """When it became stable."""
    retired_at: datetime | None = None
    """When it stopped being stable."""
    reason: str = ""
    """Why it became stable or was retired (Initial, Promoted, RolledBack)."""
    lineage: Lineage | None = None
    """Where the model came from and the gates it passed (candidates only)."""


class RollbackStatus(ApiModel):
    """A rollback recorded in status (the user's spec is never written)."""

    track: str
    """canary (aborted) or stable (reverted)."""
    from_version: str
    """The version that was rolled back."""
    to_version: str
    """The version serving after the rollback."""
    reason: str
    """The failing policies and checks."""
    at: datetime
    """When the rollback happened."""
    generation: int = 0
    """The spec generation it applies to; a new generation starts over."""


class ModelRef(ApiModel):
    """A model version and its artifact."""

    version: str
    """Version."""
    model_uri: str
    """Artifact as the spec names it."""
    resolved_uri: str | None = None
    """What it resolved to."""


class GateStatus(ApiModel):
    """A webhook gate of the current canary: since when it holds, and what it last answered."""

    name: str
    """The gate (spec.canary.webhooks[].name)."""
    type: str
    """confirm-rollout, pre-rollout or confirm-promotion."""
    version: str
    """The canary version it was asked about (a new version asks again)."""
    waiting_since: datetime | None = None
    """When it began to hold (a pre-rollout gate: once the canary's pods were ready): only answers given after this count."""
    passed_at: datetime | None = None
    """When it answered 2xx: the rollout went on."""
    last_answer_at: datetime | None = None
    """When it last answered (or failed to)."""
    last_code: int | None = None
    """Its last HTTP status (none: no answer)."""
    message: str = ""
    """What its last answer was, in words."""


class Requests(ApiModel):
    """Values of the request annotations last acted on, one per kind."""

    promote: str | None = None
    """modelwarden.io/promote: the step was declared done."""
    promote_full: str | None = None
    """modelwarden.io/promote-full: the canary was promoted, skipping its steps."""
    abort: str | None = None
    """modelwarden.io/abort: the canary was rolled back."""
    approve: str | None = None
    """modelwarden.io/approve: the current step was approved."""
    retry: str | None = None
    """modelwarden.io/retry: the rolled-back canary (or stable) started over (also status.retryToken)."""
    ignored: str | None = Field(default=None, max_length=512)
    """The last request nothing acted on, and why (ANNOTATION=VALUE: reason)."""


class CandidateStage(str, Enum):
    """Where a candidate is on its way to stable."""

    SHADOW = "shadow"  # means: it receives mirrored traffic; the shadow gate compares it with stable
    CANARY = "canary"  # means: it takes part of the traffic and advances by spec.candidates.canary's steps


class CandidateStatus(ApiModel):
    """The candidate in flight (at most one): a retrained model, or what an MLflow alias named."""

    id: str = Field(max_length=512)
    """What offered it: retrain:NAMESPACE/JOB or alias:RESOLVED_URI (never taken twice)."""
    version: str
    """Its version (the `version` label of its metrics)."""
    model_uri: str
    """The artifact as offered."""
    resolved_uri: str
    """What its pods fetch."""
    model_version: str | None = None
    """The MLflow registered model version."""
    run_id: str | None = None
    """The MLflow run that produced it."""
    stage: CandidateStage = CandidateStage.SHADOW
    """shadow, then canary."""
    offered_at: datetime
    """When it was taken."""
    stage_started_at: datetime
    """When its current stage began: only evidence from after this counts."""
    lineage: Lineage
    """Where it came from, and the gates passed so far."""


class CandidateRecord(ApiModel):
    """What became of a candidate."""

    id: str = Field(max_length=512)
    """What offered it."""
    version: str
    """Its version."""
    outcome: str
    """Promoted, Rejected (a gate failed, or a person aborted it) or Refused (it could not be tried)."""
    at: datetime
    """When."""
    reason: str = Field(default="", max_length=1024)
    """Why, in words."""


class ModelDeploymentStatus(ApiModel):
    """Observed state, written by the operator only when it changes."""

    phase: ModelDeploymentPhase = ModelDeploymentPhase.PENDING
    """Lifecycle phase."""
    observed_generation: int | None = None
    """The spec generation last acted on."""
    weights: Weights = Field(default_factory=Weights)
    """Traffic split as applied."""
    stable: TrackStatus | None = None
    """The stable track as served (differs from spec after a promotion or rollback)."""
    canary: TrackStatus | None = None
    """The canary track as served."""
    shadow: TrackStatus | None = None
    """The shadow track as served."""
    canary_started_at: datetime | None = None
    """When the current canary (version, or a retry of it) started: older verdicts never act on it."""
    canary_step: int | None = Field(default=None, ge=0)
    """Index of the current canary step."""
    step: str | None = Field(default=None, max_length=16)
    """The current canary step for people and `kubectl get`: N/M, counted from 1."""
    verdict: Verdict | None = None
    """The worst last verdict of the DriftPolicies judging the versions served now (Fail, Error,
    InsufficientData, Warning, Pass in that order); empty without any."""
    step_started_at: datetime | None = None
    """When the current step's weights were observed applied: gating evidence counts from here."""
    step_requested_at: datetime | None = None
    """When the current step was decided (its weights planned); the progress deadline counts from here."""
    rollback: RollbackStatus | None = None
    """The rollback in force, if any (cleared by a new canary version, a spec.stable change or a retry)."""
    observed_stable: ModelRef | None = None
    """spec.stable as last acted on: when spec.stable changes, the served stable is reset to it."""
    retry_token: str | None = None
    """The modelwarden.io/retry annotation value last acted on."""
    requests: Requests | None = None
    """The day-2 request annotations' values last acted on (kubectl modelwarden waits for these)."""
    paused: bool | None = None
    """True while modelwarden.io/paused=true is acted on: the canary's steps hold (a failing gate still aborts)."""
    gates: list[GateStatus] = Field(default_factory=list, max_length=8)
    """The current canary's webhook gates (spec.canary.webhooks) as asked so far."""
    approved_step: int | None = Field(default=None, ge=0)
    """The canary step (index) a person approved; a step with approval: required advances only then."""
    candidate: CandidateStatus | None = None
    """The candidate in flight (spec.candidates): it runs as the shadow, then the canary track."""
    candidates: list[CandidateRecord] = Field(default_factory=list, max_length=20)
    """What became of past candidates, newest last (an id here is never taken again)."""
    history: list[HistoryEntry] = Field(default_factory=list, max_length=100)
    """Past stable versions, newest last, bounded by spec.revisionHistoryLimit."""
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    """Ready, Reconciling, Progressing, Paused, Promoted, RolledBack, Stalled, TrafficReady, ModelResolved,
    ModelFetchFailed, InvalidSpec (each with observedGeneration; Ready, Reconciling and Stalled follow kstatus)."""
    message: str = ""
    """A one-line human summary."""
