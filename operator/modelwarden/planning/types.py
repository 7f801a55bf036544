"""Inputs and output of plan(): plain data, no I/O."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from modelwarden.api.driftpolicy import DriftPolicySpec, DriftPolicyStatus, Verdict
from modelwarden.api.policystatus import BUCKET_EDGES_DIFFER, PASSING
from modelwarden.routers.base import Split


@dataclass(frozen=True)
class TrackModel:
    """What a track of the spec serves once its URI is resolved: the version label and the exact
    artifact (an MLflow alias pinned to the version it named)."""

    version: str
    model_uri: str  # as the spec wrote it
    resolved_uri: str  # what the pods fetch
    model_version: str | None = None  # MLflow registered model version
    run_id: str | None = None
    sha256: str | None = None

    def same_artifact(self, version: str | None, model_uri: str | None, resolved_uri: str | None) -> bool:
        """Whether a recorded track serves this model (a record from before resolution existed has
        no resolved URI: its spec URI is what it served)."""
        return version == self.version and model_uri == self.model_uri and (resolved_uri or model_uri) == self.resolved_uri

    def serves_same(self, version: str | None, model_uri: str | None, resolved_uri: str | None) -> bool:
        """Whether a recorded track serves the same artifact, whatever URI named it."""
        return version == self.version and (resolved_uri or model_uri) == self.resolved_uri


@dataclass(frozen=True)
class ObservedTrack:
    """A child Deployment as read from the API."""

    version: str | None
    replicas: int
    ready_replicas: int
    updated_replicas: int
    up_to_date: bool  # status.observedGeneration has caught up with metadata.generation
    total_replicas: int = 0  # status.replicas: pods of every ReplicaSet, old ones included

    def ready_for(self, version: str, replicas: int) -> bool:
        """Rolled out as `kubectl rollout status` sees it: every pod is of the new template and
        ready, and no old pod is left (a new pod that never starts keeps the old one serving)."""
        return (
            self.up_to_date
            and self.version == version
            and self.replicas == replicas
            and self.ready_replicas >= replicas
            and self.updated_replicas >= replicas
            and self.total_replicas <= self.updated_replicas
        )

    @classmethod
    def from_deployment(cls, deployment: dict[str, Any]) -> "ObservedTrack":
        meta, spec, status = deployment.get("metadata", {}), deployment.get("spec", {}), deployment.get("status") or {}
        template_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
        return cls(
            version=template_labels.get("version"),
            replicas=int(spec.get("replicas", 1)),
            ready_replicas=int(status.get("readyReplicas") or 0),
            updated_replicas=int(status.get("updatedReplicas") or 0),
            up_to_date=int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
            total_replicas=int(status.get("replicas") or 0),
        )


@dataclass(frozen=True)
class CandidateOffer:
    """A model a DriftPolicy's succeeded retraining Job produced (status.lastRetrain.result): what a
    ModelDeployment with spec.candidates (source retrain) may take, once."""

    id: str  # retrain:NAMESPACE/JOB
    version: str
    model_uri: str
    model_version: str | None
    run_id: str | None
    policy: str
    job: str
    breach_id: str | None
    checks: tuple[str, ...]
    window_start: datetime.datetime | None
    window_end: datetime.datetime | None
    parent_version: str | None
    finished_at: datetime.datetime | None

    @classmethod
    def from_status(cls, name: str, status: DriftPolicyStatus) -> CandidateOffer | None:
        retrain = status.last_retrain
        if retrain is None or retrain.outcome != "Succeeded" or retrain.result is None:
            return None
        result = retrain.result
        return cls(id=f"retrain:{retrain.breach_id or retrain.job_name}", version=result.version, model_uri=result.model_uri,
                   model_version=result.model_version, run_id=result.run_id, policy=name, job=retrain.job_name,
                   breach_id=retrain.breach_id, checks=tuple(retrain.checks), window_start=retrain.window_start,
                   window_end=retrain.window_end, parent_version=retrain.parent_version, finished_at=retrain.finished_at)


@dataclass(frozen=True)
class PolicyVerdict:
    """What a DriftPolicy targeting this ModelDeployment says, from its status."""

    name: str
    track: str
    verdict: Verdict | None  # the last evaluation's
    evaluated_at: datetime.datetime | None
    consecutive_failures: int
    failure_threshold: int
    rollback: bool
    failing_checks: tuple[str, ...] = ()
    passed_checks: tuple[str, ...] = ()  # the last evaluation's checks that passed (a candidate's gate record names them)
    version: str | None = None  # the version the verdict is about (status.evaluatedVersion), if known
    window: datetime.timedelta = datetime.timedelta(0)  # each evaluation looks back this far
    recent: tuple[tuple[datetime.datetime, Verdict], ...] = ()  # (time, verdict) of the recent evaluations, oldest first
    winner: str | None = None  # the A/B winner for `version` (a track's name), once decided (status.winner)
    winner_baseline: str | None = None  # the track it was compared with (spec.comparison.track)
    winner_evidence_from: datetime.datetime | None = None  # where the deciding look's window began
    winner_summary: str = ""
    offer: CandidateOffer | None = None  # the model its last retraining Job produced
    edges_differ: tuple[str, ...] = ()  # its last evaluation could not compare: bucket edges differ (those checks' messages)

    @classmethod
    def from_policy(cls, name: str, spec: DriftPolicySpec, status: DriftPolicyStatus) -> PolicyVerdict:
        """The DriftPolicy -> ModelDeployment contract, read from the typed policy (its defaults apply)."""
        last = status.last_evaluation
        return cls(
            name=name, track=spec.track.value, verdict=last.verdict if last else None, evaluated_at=last.time if last else None,
            consecutive_failures=status.consecutive_failures, failure_threshold=spec.failure_threshold,
            rollback=spec.actions.rollback,
            failing_checks=tuple(r.check for r in last.results if r.verdict == Verdict.FAIL) if last else (),
            passed_checks=tuple(r.check for r in last.results if r.verdict == Verdict.PASS) if last else (),
            version=status.evaluated_version, window=spec.window,
            recent=tuple((e.time, e.verdict) for e in status.evaluations),
            offer=CandidateOffer.from_status(name, status), **_winner(spec, status),
            edges_differ=tuple(r.message for r in last.results if r.reason == BUCKET_EDGES_DIFFER) if last else (),
        )

    @classmethod
    def unreadable(cls, name: str, track: str, problem: str) -> PolicyVerdict:
        """A policy the operator cannot read: an Error verdict, which never passes a gate and never acts."""
        return cls(name=name, track=track, verdict=Verdict.ERROR, evaluated_at=None, consecutive_failures=0,
                   failure_threshold=1, rollback=False, failing_checks=(problem,))

    def won_since(self, version: str, moment: datetime.datetime | None) -> bool:
        """This policy's comparison named `track` the winner for `version`, on a look whose whole
        window lies after `moment` (traffic of an earlier split never counts)."""
        return (self.winner == self.track and self.winner_baseline == "stable" and self.version == version
                and self.winner_evidence_from is not None and (moment is None or self.winner_evidence_from >= moment))

    def lost(self, version: str) -> bool:
        """This policy's comparison named its baseline the winner for `version`: the canary is worse."""
        return self.winner is not None and self.winner == self.winner_baseline and self.version == version

    def about(self, version: str) -> bool:
        """A verdict about another version (an earlier canary, a rolled-back stable) says nothing here."""
        return self.version is None or self.version == version

    @property
    def breached(self) -> bool:
        """Enough consecutive Fail verdicts to act (InsufficientData and Error never count)."""
        return self.verdict == Verdict.FAIL and self.consecutive_failures >= self.failure_threshold

    def breached_since(self, moment: datetime.datetime | None) -> bool:
        """A breach made of failing evaluations that all ran after `moment` (evidence about what
        serves since then). Acting needs less proof than advancing: the windows may reach back."""
        if not self.breached or self.evaluated_at is None:
            return False
        if moment is None:
            return True
        streak = [at for at, _ in self.recent[-self.failure_threshold:]] if len(self.recent) >= self.failure_threshold else []
        return self.evaluated_at >= moment and all(at >= moment for at in streak)

    def last_failure(self) -> datetime.datetime | None:
        fails = [at for at, verdict in self.recent if verdict == Verdict.FAIL]
        if self.verdict == Verdict.FAIL and self.evaluated_at is not None:
            fails.append(self.evaluated_at)
        return max(fails, default=None)

    def passed_since(self, moment: datetime.datetime | None) -> bool:
        """A Pass on fresh evidence only: the evaluation's whole window lies after `moment` and after
        the last Fail, so traffic of an earlier step (or a failing stretch) never counts."""
        if self.verdict not in PASSING or self.evaluated_at is None:
            return False
        starts = [t for t in (moment, self.last_failure()) if t is not None]
        return not starts or self.evaluated_at - self.window >= max(starts)

    def describe(self) -> str:
        checks = ", ".join(self.failing_checks) or "no check named"
        return f"DriftPolicy {self.name} failed {self.consecutive_failures}x ({checks})"


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """Everything the executor needs: children to apply, route objects, status, events."""

    children: list[dict[str, Any]]
    split: Split  # the split as applied (effective)
    status: dict[str, Any]  # the complete desired status, wire format
    events: list[Event] = field(default_factory=list)
    breaches: tuple[str, ...] = ()  # the policies whose verdicts counted as a breach to act on (for the decision log)


def _winner(spec: DriftPolicySpec, status: DriftPolicyStatus) -> dict[str, Any]:
    """The A/B winner fields of a PolicyVerdict, when the policy (still with a comparison) decided one
    for its evaluated version."""
    winner = status.winner
    if spec.comparison is None or winner is None or winner.decided_at is None or winner.version != status.evaluated_version:
        return {}
    metrics = ", ".join(m.summary() for m in winner.metrics)
    return {"winner": winner.winner, "winner_baseline": spec.comparison.track.value, "winner_evidence_from": winner.window_start,
            "winner_summary": metrics}
