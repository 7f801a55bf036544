"""A ModelDeployment's phase, its conditions and its one-line message, from the decided status. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelwarden.api.common import ConditionStatus, find_condition, set_condition
from modelwarden.api.duration import format_duration
from modelwarden.api.modeldeployment import ModelDeployment, ModelDeploymentPhase, ModelDeploymentStatus
from modelwarden.api.policystatus import Verdict
from modelwarden.planning.requests import waiting_for_person
from modelwarden.planning.webhookgates import holding_gate
from modelwarden.planning.types import Event, PolicyVerdict

Phase = ModelDeploymentPhase
DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


def stalled(md: ModelDeployment, status: ModelDeploymentStatus, now) -> bool:
    """The current step is past its pause plus spec.canary.progressDeadline and has not advanced."""
    canary = md.spec.canary
    if canary is None or not canary.steps or status.canary_step is None:
        return False
    requested = status.step_requested_at or status.step_started_at
    step = canary.steps[min(status.canary_step, len(canary.steps) - 1)]
    return requested is not None and now - requested >= step.pause + canary.progress_deadline


def spec_not_served(md: ModelDeployment, status: ModelDeploymentStatus) -> bool:
    """The spec names a version the operator rolled back (as canary, or as stable): what Git asks
    for is not what serves, which GitOps tools must see as not ready (kstatus: Stalled)."""
    rollback = status.rollback
    if rollback is None:
        return False
    stable_refused = rollback.from_version == md.spec.stable.version and (status.stable is None
                                                                           or status.stable.version != rollback.from_version)
    canary_refused = md.spec.canary is not None and rollback.from_version == md.spec.canary.version \
        and (status.stable is None or status.stable.version != rollback.from_version)
    return stable_refused or canary_refused


SEVERITY = (Verdict.FAIL, Verdict.ERROR, Verdict.INSUFFICIENT_DATA, Verdict.WARNING, Verdict.PASS)


def served_verdict(verdicts: Iterable[PolicyVerdict], status: ModelDeploymentStatus) -> Verdict | None:
    """The worst last verdict about a version served now; a verdict about an earlier version says nothing."""
    serving = {track: getattr(status, track).version for track in ("stable", "canary", "shadow") if getattr(status, track)}
    current = [Verdict(v.verdict) for v in verdicts
               if v.verdict is not None and v.track in serving and v.about(serving[v.track])]
    return min(current, key=SEVERITY.index) if current else None


def _gate_hold(md: ModelDeployment, status: ModelDeploymentStatus) -> tuple[str, str] | None:
    gate = holding_gate(md, status)
    if gate is None:
        return None
    said = gate.message or ("waiting for the canary's pods" if gate.waiting_since is None else "asking")
    return "AwaitingWebhook", f"{gate.type} gate {gate.name} holds the rollout ({said})"


def _condition(status: ModelDeploymentStatus, type_: str, value: bool, reason: str, message: str, now, generation) -> None:
    status.conditions = set_condition(status.conditions, type_, value, reason, message, now, generation)


def set_phase_and_conditions(md, status: ModelDeploymentStatus, workloads, observed, note: str, traffic_ok: bool,
                              traffic_problem: str | None, canary_live: bool, now, events: list[Event]) -> None:
    """Phase and conditions, each for this generation; Promoted and RolledBack speak of the current canary."""
    generation = md.metadata.get("generation")
    _condition(status, "InvalidSpec", False, "Valid", "the spec is valid", now, generation)
    not_ready = [t for t in workloads if getattr(status, t) is None or not getattr(status, t).ready]
    not_ready = [t for t in not_ready if workloads[t].replicas > 0]
    last = status.history[-1] if status.history else None
    promoting = bool(last and last.reason == "Promoted" and "stable" in not_ready)
    rolled_back = status.rollback is not None
    person = (waiting_for_person(md, status, now) or _gate_hold(md, status)) if canary_live else None
    if rolled_back:
        phase = Phase.ROLLED_BACK
    elif promoting:
        phase = Phase.PROMOTING
    elif person:
        phase = Phase.PAUSED
    elif canary_live:
        phase = Phase.PROGRESSING
    elif not_ready:
        phase = Phase.PENDING if status.phase in (Phase.PENDING, Phase.FAILED) else Phase.DEGRADED
    else:
        phase = Phase.STABLE
    status.phase = phase

    ready_message = "all tracks ready" if not not_ready else "not ready: " + ", ".join(not_ready)
    refusal = (f"{status.rollback.track} {status.rollback.from_version} rolled back ({status.rollback.reason}); "
               "the spec still names it: change it, or retry") if status.rollback and spec_not_served(md, status) else None
    if refusal:
        _condition(status, "Ready", False, "RolledBack", refusal, now, generation)
    else:
        _condition(status, "Ready", not not_ready, "TracksReady" if not not_ready else "TracksNotReady", ready_message,
                   now, generation)
    canary = md.spec.canary
    status.step = (f"{(status.canary_step or 0) + 1}/{len(canary.steps)}"
                   if canary_live and canary and canary.steps and status.canary_step is not None else None)
    if canary_live and canary and canary.steps:
        index = status.canary_step or 0
        waiting = "" if status.step_started_at else " (waiting for the weights to be applied)"
        progress = ("CanaryStep", f"step {index + 1}/{len(canary.steps)} at {canary.steps[index].weight}%{waiting}")
    elif canary_live and canary:
        progress = ("FixedWeight", f"A/B split at {canary.weight}%")
    else:
        progress = ("Promoting", "stable rolling out the promoted version") if promoting else ("Idle", "no canary in progress")
    _condition(status, "Progressing", canary_live or promoting, progress[0], progress[1], now, generation)
    # Promoted speaks of the spec's canary: a new canary version is not promoted until it is.
    promoted_version = last.version if last and last.reason == "Promoted" else None
    canary_version = status.canary.version if status.canary else (canary.version if canary else None)
    promoted = promoted_version is not None and (canary is None or canary_version in (None, promoted_version))
    _condition(status, "Promoted", promoted, "CanaryPromoted" if promoted else "NotPromoted",
               f"{promoted_version} promoted" if promoted else (f"canary {canary_version or ''} not promoted".replace("  ", " ")
                                                                    if canary else ""),
               now, generation)
    _condition(status, "RolledBack", rolled_back, "RolledBack" if rolled_back else "NotRolledBack",
               status.rollback.reason if status.rollback else "", now, generation)
    is_stalled = canary_live and stalled(md, status, now) and person is None
    _condition(status, "Paused", person is not None, person[0] if person else "NotPaused", person[1] if person else "",
               now, generation)
    before = find_condition(status.conditions, "Stalled")
    was_stalled = before is not None and before.status == ConditionStatus.TRUE and before.reason == DEADLINE_EXCEEDED
    if is_stalled and not was_stalled and canary:
        events.append(Event("Warning", "CanaryStalled", f"canary {canary_version} step {(status.canary_step or 0) + 1} made "
                            f"no progress within its pause + progressDeadline ({format_duration(canary.progress_deadline)})"))
    if refusal:
        _condition(status, "Stalled", True, "RolledBack", refusal, now, generation)
    else:
        _condition(status, "Stalled", is_stalled, DEADLINE_EXCEEDED if is_stalled else "Progressing",
                   "no decisive verdict within the progress deadline" if is_stalled else "", now, generation)
    # kstatus (Flux, kpt, cli-utils): Reconciling while the spec is being realised, not while a
    # fixed A/B split simply runs (that is the desired state, reached).
    stepping = canary_live and bool(canary and canary.steps) and not is_stalled
    reconciling = not refusal and (stepping or promoting or bool(not_ready))
    why = progress if stepping or promoting else ("TracksNotReady", ready_message)
    _condition(status, "Reconciling", reconciling, why[0] if reconciling else "Reconciled",
               why[1] if reconciling else "", now, generation)
    traffic_reason = traffic_problem or ("Applied" if traffic_ok else "MirroringUnsupported")
    _condition(status, "TrafficReady", traffic_ok, traffic_reason,
               note or f"stable {status.weights.stable}%, canary {status.weights.canary}%, mirror {status.weights.mirror}%",
               now, generation)
    summary: dict[Any, str] = {
        Phase.ROLLED_BACK: f"rolled back: {status.rollback.reason}" if status.rollback else "",
        Phase.PROMOTING: progress[1],
        Phase.PROGRESSING: f"canary {canary_version or ''}: {progress[1]}",
        Phase.PAUSED: f"canary {canary_version or ''}: {person[1] if person else ''}",
        Phase.DEGRADED: ready_message,
        Phase.PENDING: ready_message,
        Phase.STABLE: f"serving {status.stable.version if status.stable else ''}",
    }
    status.message = summary.get(phase, "")

