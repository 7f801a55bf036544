"""The closed loop (spec.candidates): a retrained model, or what an MLflow alias names, runs first as
the shadow track (gated without ground truth by spec.candidates.shadow.policy), then as the canary
(gated by the canary DriftPolicies, as any canary), then is promoted, or rejected and recorded.

All state is in status.candidate / status.candidates; the user's spec is never written. `begin()`
returns the ModelDeployment as the rest of plan() sees it: spec.shadow or spec.canary standing for
the candidate, so mirroring, steps, gates, webhooks and the rollback are the ones every canary has.
`settle()` reads what that decision did to the candidate. Pure.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from pydantic import ValidationError

from modelwarden.api.common import set_condition
from modelwarden.api.driftpolicy import Verdict
from modelwarden.api.policystatus import PASSING
from modelwarden.api.duration import format_duration
from modelwarden.api.modeldeployment import (
    CandidateRecord,
    CandidateStage,
    CandidateStatus,
    CanaryTrack,
    GateRecord,
    Lineage,
    ModelDeployment,
    ModelDeploymentStatus,
    ShadowTrack,
    StepApproval,
)
from modelwarden.contract.modeluri import Resolution
from modelwarden.planning.requests import Pending
from modelwarden.planning.types import CandidateOffer, Event, PolicyVerdict, TrackModel

RECORDS_KEPT = 20
GATE_CHECKS_KEPT = 64  # GateRecord.checks' bound
# The pod settings a candidate shares with stable: it must be judged as it would serve.
STABLE_OVERRIDES = ("image", "resources", "env", "node_selector", "tolerations")


def begin(md: ModelDeployment, status: ModelDeploymentStatus, verdicts: list[PolicyVerdict],
          resolutions: Mapping[str, Resolution | str], now: datetime.datetime, events: list[Event],
          pending: Pending) -> ModelDeployment:
    """Take a new candidate when none is in flight, judge the shadow stage; the ModelDeployment plan() then follows."""
    spec = md.spec.candidates
    candidate = status.candidate
    if spec is None:
        if candidate is not None:
            _finish(status, "Rejected", "spec.candidates was removed", now, events)
        return md
    if candidate is None and status.stable is not None and not status.paused:  # paused: no new candidate
        offer = _next_offer(md, status, verdicts, resolutions, now)
        if offer is not None:
            status.candidate = candidate = offer
            status.rollback = None if status.rollback and status.rollback.track == "canary" else status.rollback
            events.append(Event("Normal", "CandidateStarted", f"candidate {offer.version} ({offer.model_uri}, "
                                                              f"{_origin(offer.lineage)}) started in shadow"))
    if candidate is not None and (refusal := _incomparable(md, candidate, verdicts)):
        _finish(status, "Refused", refusal, now, events)
    elif candidate is not None and candidate.stage is CandidateStage.SHADOW:
        if pending.peek("abort"):
            _finish(status, "Rejected", f"aborted on request ({pending.describe('abort')})", now, events)
            pending.use("abort")
        else:
            _judge_shadow(md, status, candidate, verdicts, now, events)
    try:
        return effective(md, status.candidate)
    except ValidationError as exc:  # a result no track can serve: refused, never a reconcile that fails forever
        _finish(status, "Refused", f"it cannot serve as a track: {exc.errors()[0]['msg']}", now, events)
        return md


def models(status: ModelDeploymentStatus) -> dict[str, TrackModel]:
    """The track the candidate serves on, and its model (pinned when it was taken)."""
    candidate = status.candidate
    if candidate is None:
        return {}
    return {candidate.stage.value: TrackModel(candidate.version, candidate.model_uri, candidate.resolved_uri,
                                              candidate.model_version, candidate.run_id)}


def effective(md: ModelDeployment, candidate: CandidateStatus | None) -> ModelDeployment:
    """The ModelDeployment with spec.shadow (shadow stage) or spec.canary (canary stage) standing for the candidate."""
    spec = md.spec.candidates
    if spec is None or candidate is None:
        return md
    shared = {name: getattr(md.spec.stable, name) for name in STABLE_OVERRIDES}
    track = {"version": candidate.version, "model_uri": candidate.resolved_uri, **shared}
    if candidate.stage is CandidateStage.SHADOW:
        shadow = ShadowTrack(**track, replicas=spec.shadow.replicas, mirror_percent=spec.shadow.mirror_percent,
                             pair_with_stable=spec.shadow.pair_with_stable)
        return md.model_copy(update={"spec": md.spec.model_copy(update={"shadow": shadow})})
    steps = None
    if spec.canary.steps:
        steps = [step.model_copy() for step in spec.canary.steps]
        if not spec.auto_promote:  # the last step waits for a person
            steps[-1] = steps[-1].model_copy(update={"approval": StepApproval.REQUIRED})
    canary = CanaryTrack(**track, replicas=spec.canary.replicas, steps=steps, weight=spec.canary.weight,
                         progress_deadline=spec.canary.progress_deadline, abort_on_stall=spec.canary.abort_on_stall,
                         auto_promote_winner=bool(spec.auto_promote and spec.canary.weight))
    return md.model_copy(update={"spec": md.spec.model_copy(update={"canary": canary})})


def settle(md: ModelDeployment, status: ModelDeploymentStatus, verdicts: list[PolicyVerdict], now: datetime.datetime,
           events: list[Event]) -> None:
    """What the canary decision did to a candidate in its canary stage: promoted (lineage goes with it into
    status.stable and history), or rolled back (recorded; stable untouched)."""
    candidate = status.candidate
    if candidate is None or candidate.stage is not CandidateStage.CANARY or status.stable is None:
        return
    model = models(status)["canary"]
    gates = [_gate("canary", v) for v in verdicts if v.track == "canary" and v.version == candidate.version and v.verdict]
    if model.serves_same(status.stable.version, status.stable.model_uri, status.stable.resolved_uri):
        lineage = candidate.lineage.model_copy(update={"gates": [*candidate.lineage.gates, *gates][-16:]})
        status.stable.lineage = lineage
        if status.history and status.history[-1].version == candidate.version:
            status.history[-1].lineage = lineage
        _finish(status, "Promoted", f"promoted after {len(lineage.gates)} gate verdict(s)", now, events, lineage)
        return
    rollback = status.rollback
    if rollback is not None and rollback.track == "canary" and rollback.from_version == candidate.version:
        failed = [g for g in gates if g.verdict == "Fail"]
        status.candidate.lineage.gates = [*candidate.lineage.gates, *failed][-16:]
        _finish(status, "Rejected", rollback.reason, now, events)


def set_spec_behind(md: ModelDeployment, status: ModelDeploymentStatus, wanted: TrackModel | None, now: datetime.datetime) -> None:
    """SpecBehind: stable serves a promoted version the spec does not name yet (GitOps: commit
    `modelwarden export-spec NAME`'s patch). Not after a stable rollback: then the spec names a failed version."""
    served, generation = status.stable, md.metadata.get("generation")
    rollback = status.rollback
    reverted = rollback is not None and rollback.track == "stable" and served is not None and served.version == rollback.to_version
    behind = (served is not None and wanted is not None and served.model_uri is not None
              and not wanted.serves_same(served.version, served.model_uri, served.resolved_uri) and not reverted)
    if behind:
        assert served is not None and wanted is not None
        message = (f"stable serves {served.version} ({served.resolved_uri or served.model_uri}); spec.stable names {wanted.version}: "
                   f"`modelwarden export-spec {md.metadata.get('name', '')}` prints the patch to commit")
        status.conditions = set_condition(status.conditions, "SpecBehind", True, "Promoted", message, now, generation)
    else:  # always shown (the SpecBehind column): False while the spec names what serves
        status.conditions = set_condition(status.conditions, "SpecBehind", False, "UpToDate", "spec.stable names what serves",
                                          now, generation)


def _next_offer(md: ModelDeployment, status: ModelDeploymentStatus, verdicts: list[PolicyVerdict],
                resolutions: Mapping[str, Resolution | str], now: datetime.datetime) -> CandidateStatus | None:
    """The newest offer not taken before, once the cooldown since the last candidate has passed."""
    spec = md.spec.candidates
    assert spec is not None and status.stable is not None
    last = status.candidates[-1] if status.candidates else None
    if last is not None and now - last.at < spec.cooldown:
        return None
    taken = {record.id for record in status.candidates}
    stable = status.stable
    if spec.source.value == "alias":
        assert spec.alias_uri is not None
        found = resolutions.get(spec.alias_uri)
        if not isinstance(found, Resolution) or found.resolved_uri in (stable.resolved_uri, stable.model_uri):
            return None
        version = found.model_version or found.resolved_uri.rsplit("/", 1)[-1]
        offer_id = f"alias:{found.resolved_uri}"
        if offer_id in taken or version == stable.version:
            return None
        lineage = Lineage(source="alias", run_id=found.run_id, model_version=found.model_version, parent_version=stable.version)
        return CandidateStatus(id=offer_id, version=version, model_uri=found.resolved_uri, resolved_uri=found.resolved_uri,
                               model_version=found.model_version, run_id=found.run_id, offered_at=now, stage_started_at=now,
                               lineage=lineage)
    # An offer trained to replace another stable (an older one, or one since rolled back) is not a candidate now.
    offers = [v.offer for v in verdicts if v.offer is not None and v.offer.id not in taken and v.offer.version != stable.version
              and v.offer.parent_version in (None, stable.version)]
    if not offers:
        return None
    offer: CandidateOffer = max(offers, key=lambda o: (o.finished_at or now, o.id))
    return CandidateStatus(id=offer.id, version=offer.version, model_uri=offer.model_uri, resolved_uri=offer.model_uri,
                           model_version=offer.model_version, run_id=offer.run_id, offered_at=now, stage_started_at=now,
                           lineage=Lineage(source="retrain", breach_id=offer.breach_id, policy=offer.policy, checks=list(offer.checks),
                                           job=offer.job, run_id=offer.run_id, model_version=offer.model_version,
                                           window_start=offer.window_start, window_end=offer.window_end,
                                           parent_version=offer.parent_version or stable.version))


def _judge_shadow(md: ModelDeployment, status: ModelDeploymentStatus, candidate: CandidateStatus, verdicts: list[PolicyVerdict],
                  now: datetime.datetime, events: list[Event]) -> None:
    """The label-free gate: its breach on evidence from the shadow stage rejects the candidate; a Pass
    whose whole window lies in the stage, after spec.candidates.shadow.duration, moves it to canary."""
    spec = md.spec.candidates
    assert spec is not None
    gate = next((v for v in verdicts if v.name == spec.shadow.policy and v.track == "shadow"), None)
    about = gate if gate is not None and gate.version == candidate.version else None  # else: no verdict about it yet
    if about is not None and about.breached_since(candidate.stage_started_at):
        candidate.lineage.gates = [*candidate.lineage.gates, _gate("shadow", about)][-16:]
        _finish(status, "Rejected", f"shadow gate: {about.describe()}", now, events)
        return
    if status.paused:  # it stays in shadow (a breach still rejects it)
        return
    waited = now - candidate.stage_started_at
    if about is not None and waited >= spec.shadow.duration and about.passed_since(candidate.stage_started_at):
        candidate.lineage.gates = [*candidate.lineage.gates, _gate("shadow", about)][-16:]
        candidate.stage, candidate.stage_started_at = CandidateStage.CANARY, now
        events.append(Event("Normal", "CandidateAdvanced", f"candidate {candidate.version} passed the shadow gate "
                                                           f"(DriftPolicy {about.name}: {_said(about)}): now a canary"))
        return
    deadline = spec.shadow.effective_deadline
    passing = about is not None and about.verdict in PASSING  # a Pass still waiting for a window wholly in the stage
    if waited >= deadline and not passing:  # missing data never promotes; it must not hold the loop for ever either
        said = f"its last verdict about it: {_said(about)}" if about is not None else "no verdict about it"
        _finish(status, "Rejected", f"shadow gate: no Pass within the deadline {format_duration(deadline)} "
                                    f"(DriftPolicy {spec.shadow.policy}: {said})", now, events)


def _incomparable(md: ModelDeployment, candidate: CandidateStatus, verdicts: list[PolicyVerdict]) -> str | None:
    """A gate that cannot compare the candidate with stable (its profile's bucket edges differ) would
    hold it forever with Error verdicts: once it said so failureThreshold times in a row in this
    stage (one look may see a series set still forming), the candidate is refused, saying why and what to do."""
    spec = md.spec.candidates
    assert spec is not None
    for verdict in verdicts:
        gating = verdict.name == spec.shadow.policy if candidate.stage is CandidateStage.SHADOW else verdict.track == "canary"
        streak = [v for _, v in verdict.recent[-verdict.failure_threshold:] if _said_value(v) == "Error"]
        persistent = len(streak) >= verdict.failure_threshold and all(
            at >= candidate.stage_started_at for at, _ in verdict.recent[-verdict.failure_threshold:])
        if gating and verdict.version == candidate.version and verdict.edges_differ and persistent:
            return (f"DriftPolicy {verdict.name} cannot compare it with stable: {verdict.edges_differ[0]}; build its profile "
                    "on the stable's bucket edges (modelwarden profile --edges-from STABLE_PROFILE)")
    return None


def _gate(stage: str, verdict: PolicyVerdict) -> GateRecord:
    checks = verdict.failing_checks if verdict.verdict is Verdict.FAIL else verdict.passed_checks  # Pass or Warning: what passed
    return GateRecord(stage=stage, policy=verdict.name, verdict=_said(verdict), evaluated_at=verdict.evaluated_at,
                      checks=list(checks[:GATE_CHECKS_KEPT]))


def _said(verdict: PolicyVerdict) -> str:
    return _said_value(verdict.verdict)


def _said_value(verdict: object) -> str:
    return str(getattr(verdict, "value", verdict or ""))


def _finish(status: ModelDeploymentStatus, outcome: str, reason: str, now: datetime.datetime, events: list[Event],
            lineage: Lineage | None = None) -> None:
    candidate = status.candidate
    assert candidate is not None
    status.candidates = [*status.candidates, CandidateRecord(id=candidate.id, version=candidate.version, outcome=outcome,
                                                             at=now, reason=reason[:1024])][-RECORDS_KEPT:]
    status.candidate = None
    if outcome == "Promoted":
        events.append(Event("Normal", "CandidatePromoted", f"candidate {candidate.version} ({_origin(lineage or candidate.lineage)}) "
                                                           f"is stable: {reason}"))
    else:
        events.append(Event("Warning", f"Candidate{outcome}", f"candidate {candidate.version} {outcome.lower()}: {reason}"))


def _origin(lineage: Lineage) -> str:
    if lineage.source == "retrain":
        return f"retrained by Job {lineage.job} after DriftPolicy {lineage.policy} breached"
    return f"named by {lineage.source}"
