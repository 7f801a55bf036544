"""plan(): the whole ModelDeployment decision, as a pure function of what was observed.

State lives in status (never in the user's spec): the served stable version, the canary step and
when it started, the rollback in force, the history of stable versions. Each call computes the
next status from the current one, so the operator can restart at any moment and resume.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from modelwarden.api.common import condition_true, set_condition
from modelwarden.api.modeldeployment import (
    HistoryEntry,
    ModelDeployment,
    ModelDeploymentPhase,
    ModelDeploymentStatus,
    ModelRef,
    RollbackStatus,
    TrackStatus,
    Weights,
)
from modelwarden.api.duration import format_duration
from modelwarden.builders.podmonitor import pod_monitor
from modelwarden.builders.workloads import Owner, TrackWorkload, deployment, front_service, track_service
from modelwarden.contract.kubernetes import DEFAULT_IMAGE, RETRY_ANNOTATION
from modelwarden.planning.types import Event, ObservedTrack, Plan, PolicyVerdict
from modelwarden.routers import RouteContext, Split, get_router
from modelwarden.routers.base import ObservedServing

Phase = ModelDeploymentPhase


def plan(
    md: ModelDeployment,
    observed: dict[str, ObservedTrack],
    verdicts: list[PolicyVerdict],
    now: datetime.datetime,
    image: str = DEFAULT_IMAGE,
    *,
    routes: Sequence[dict[str, Any]] = (),
    autoscaled: Mapping[str, int] | None = None,
    apply_problems: Sequence[str] = (),
    pod_monitors: bool = False,
    pod_monitor_labels: Mapping[str, str] | None = None,
) -> Plan:
    """Desired children, traffic split, next status and events for one ModelDeployment.

    `routes` are this ModelDeployment's route objects as the cluster shows them, `autoscaled` the
    replicas of tracks an HPA scales (the operator leaves those alone), `apply_problems` what the
    last apply of children could not do, `pod_monitors` whether to want a PodMonitor (the cluster
    serves the kind and the operator is not told otherwise).
    """
    spec, meta = md.spec, md.metadata
    status = (md.status or ModelDeploymentStatus()).model_copy(deep=True)
    events: list[Event] = []
    _follow_spec_stable(spec, status, now, events)
    _handle_retry(meta.get("annotations") or {}, status, events)
    breaches: list[str] = []
    canary_live = _advance_canary(md, status, observed, verdicts, now, events, breaches)
    _rollback_stable(status, verdicts, now, events, breaches)

    owner = Owner(name=meta["name"], namespace=meta.get("namespace", "default"), uid=meta.get("uid", ""), model=spec.model)
    workloads = _workloads(md, status, canary_live)
    scaled = {track: replicas for track, replicas in (autoscaled or {}).items() if track in workloads}
    requested = Split(
        stable=100 - _canary_weight(md, status, canary_live),
        canary=_canary_weight(md, status, canary_live),
        mirror=spec.shadow.mirror_percent if spec.shadow else 0,
    )
    router = get_router(spec.traffic.router.value)
    context = RouteContext(
        owner=owner, port=spec.port, traffic=spec.traffic, split=requested,
        has_canary="canary" in workloads, has_shadow="shadow" in workloads,
        replicas={track: scaled.get(track, w.replicas) for track, w in workloads.items()}, fixed=frozenset(scaled),
    )
    routing = router.route(context)
    workloads = {t: _with_replicas(w, routing.replicas.get(t, w.replicas)) for t, w in workloads.items()}
    children = [front_service(owner, spec.port)]
    feedback_keys = (spec.feedback.token_secret_ref.name, spec.feedback.token_secret_ref.key) if spec.feedback else None
    for workload in workloads.values():
        children.append(deployment(owner, workload, spec.template, spec.port, image, set_replicas=workload.track not in scaled,
                                   feedback_keys=feedback_keys))
        children.append(track_service(owner, workload, spec.port))
    children.extend(routing.objects)
    if pod_monitors:
        children.append(pod_monitor(owner, spec.port, spec.template, pod_monitor_labels))

    old_weights = status.weights
    status.weights = Weights(stable=routing.effective.stable, canary=routing.effective.canary, mirror=routing.effective.mirror)
    if status.weights != old_weights and md.status is not None:
        events.append(Event("Normal", "TrafficUpdated",
                            f"stable {status.weights.stable}%, canary {status.weights.canary}%, mirror {status.weights.mirror}%"))
    _start_step_when_applied(md, status, canary_live, router.observe(context, _serving(workloads, observed, routes)),
                             routing.effective, now)
    _observe_tracks(status, workloads, observed)
    note = "; ".join(apply_problems) if apply_problems else routing.note
    _set_phase_and_conditions(md, status, workloads, observed, note, routing.mirroring_supported and not apply_problems,
                              "ApplyFailed" if apply_problems else None, canary_live, now, events)
    status.history = status.history[-spec.revision_history_limit:]
    status.observed_generation = meta.get("generation")
    return Plan(children=children, split=routing.effective, status=status.to_wire(), events=events, breaches=tuple(breaches))


def _serving(workloads: dict[str, TrackWorkload], observed: dict[str, ObservedTrack], routes: Sequence[dict[str, Any]]) -> ObservedServing:
    """What serves now: route objects, and ready pods per track once its Deployment has rolled out as desired."""
    ready = {}
    for track, workload in workloads.items():
        seen = observed.get(track)
        if workload.replicas == 0:
            ready[track] = 0
        elif seen is not None and seen.ready_for(workload.version, workload.replicas):
            ready[track] = seen.ready_replicas
    settled = all(track in ready for track in workloads)
    return ObservedServing(routes=tuple(routes), ready_replicas=ready if settled else {})


def _start_step_when_applied(md: ModelDeployment, status: ModelDeploymentStatus, canary_live: bool, applied: Split | None,
                             planned: Split, now: datetime.datetime) -> None:
    """A step's clock starts when its weights are seen applied, not when they are planned: evidence
    gathered before that is about the previous step's traffic."""
    if not canary_live or not md.spec.canary or not md.spec.canary.steps or status.step_started_at is not None:
        return
    if applied is not None and (applied.stable, applied.canary) == (planned.stable, planned.canary):
        status.step_started_at = now


def _follow_spec_stable(spec, status: ModelDeploymentStatus, now, events: list[Event]) -> None:
    """A change of spec.stable (or the first sight of it) resets the served stable to it."""
    wanted = ModelRef(version=spec.stable.version, model_uri=spec.stable.model_uri)
    if status.observed_stable == wanted and status.stable is not None:
        return
    if status.stable is not None and (status.stable.version, status.stable.model_uri) != (wanted.version, wanted.model_uri):
        _retire_current(status, now, "Replaced")
        status.history.append(HistoryEntry(version=wanted.version, model_uri=wanted.model_uri, promoted_at=now, reason="SpecChanged"))
        events.append(Event("Normal", "StableUpdated", f"stable set to {wanted.version} by the spec"))
    elif status.stable is None:
        status.history.append(HistoryEntry(version=wanted.version, model_uri=wanted.model_uri, promoted_at=now, reason="Initial"))
    status.stable = TrackStatus(version=wanted.version, model_uri=wanted.model_uri)
    status.observed_stable = wanted
    if status.rollback and status.rollback.track == "stable":
        status.rollback = None


def _handle_retry(annotations: dict[str, str], status: ModelDeploymentStatus, events: list[Event]) -> None:
    token = annotations.get(RETRY_ANNOTATION)
    if not token or token == status.retry_token:
        return
    status.retry_token = token
    if status.rollback:
        status.rollback = None
        status.canary = None  # the canary starts over from its first step
        events.append(Event("Normal", "RetryRequested", f"{RETRY_ANNOTATION}={token}: the canary starts over"))


def _canary_rolled_back(md: ModelDeployment, status: ModelDeploymentStatus) -> bool:
    """The spec's canary is a version rolled back (as a canary, or later as stable): never restart it by itself."""
    canary, rollback = md.spec.canary, status.rollback
    return bool(canary and rollback and rollback.from_version == canary.version)


def _advance_canary(md, status: ModelDeploymentStatus, observed, verdicts, now, events: list[Event], breaches: list[str]) -> bool:
    """Start, hold, advance, promote or abort the canary. Returns whether a canary serves traffic."""
    canary = md.spec.canary
    if canary is None or status.stable is None or canary.version == status.stable.version or _canary_rolled_back(md, status):
        if not _canary_rolled_back(md, status):
            status.canary, status.canary_step, status.canary_started_at = None, None, None
            status.step_started_at = status.step_requested_at = None
        return False
    if status.rollback and status.rollback.track == "canary":
        status.rollback = None  # a new canary version starts over
    if status.canary is None or status.canary.version != canary.version or status.canary.model_uri != canary.model_uri:
        status.canary = TrackStatus(version=canary.version, model_uri=canary.model_uri)
        status.canary_step = 0 if canary.steps else None
        status.canary_started_at = now
        status.step_started_at, status.step_requested_at = None, now if canary.steps else None
        events.append(Event("Normal", "CanaryStarted", f"canary {canary.version} started"
                            + (f" at {canary.steps[0].weight}%" if canary.steps else f" as a {canary.weight}% A/B split")))
    gating = [v for v in verdicts if v.track == "canary" and v.about(canary.version)]
    aborting = [v for v in gating if v.rollback and v.breached_since(status.canary_started_at)]
    breaches.extend(v.name for v in aborting)
    if aborting:
        _abort_canary(md, status, "; ".join(v.describe() for v in aborting), now, events)
        return False
    if not canary.steps:
        return True  # a fixed A/B split holds until the spec changes
    step_index = status.canary_step or 0
    step = canary.steps[step_index]
    started = status.step_started_at
    track = observed.get("canary")
    ready = track is not None and track.ready_for(canary.version, track.replicas) and track.ready_replicas > 0
    if started is None or now - started < step.pause or not ready or not all(v.passed_since(started) for v in gating):
        if _stalled(md, status, now) and canary.abort_on_stall:
            _abort_canary(md, status, f"stalled: step {step_index + 1} made no progress for "
                                      f"{format_duration(step.pause + canary.progress_deadline)}", now, events)
            return False
        return True
    if step_index + 1 < len(canary.steps):
        status.canary_step = step_index + 1
        status.step_started_at, status.step_requested_at = None, now
        events.append(Event("Normal", "CanaryStepAdvanced",
                            f"canary {canary.version} advanced to step {step_index + 2}/{len(canary.steps)} "
                            f"at {canary.steps[step_index + 1].weight}%"))
        return True
    _retire_current(status, now, "Superseded")
    status.history.append(HistoryEntry(version=canary.version, model_uri=canary.model_uri, promoted_at=now, reason="Promoted"))
    events.append(Event("Normal", "CanaryPromoted", f"canary {canary.version} promoted to stable (was {status.stable.version})"))
    status.stable = TrackStatus(version=canary.version, model_uri=canary.model_uri)
    status.canary, status.canary_step, status.canary_started_at = None, None, None
    status.step_started_at = status.step_requested_at = None
    return False


def _abort_canary(md: ModelDeployment, status: ModelDeploymentStatus, reason: str, now, events: list[Event]) -> None:
    canary = md.spec.canary
    assert canary is not None and status.stable is not None
    status.rollback = RollbackStatus(track="canary", from_version=canary.version, to_version=status.stable.version,
                                     reason=reason, at=now, generation=md.metadata.get("generation") or 0)
    status.canary = TrackStatus(version=canary.version, model_uri=canary.model_uri)
    status.canary_step = None
    status.step_started_at = status.step_requested_at = None
    events.append(Event("Warning", "CanaryAborted", f"canary {canary.version} rolled back: {reason}"))


def _stalled(md: ModelDeployment, status: ModelDeploymentStatus, now) -> bool:
    """The current step is past its pause plus spec.canary.progressDeadline and has not advanced."""
    canary = md.spec.canary
    if canary is None or not canary.steps or status.canary_step is None:
        return False
    requested = status.step_requested_at or status.step_started_at
    step = canary.steps[min(status.canary_step, len(canary.steps) - 1)]
    return requested is not None and now - requested >= step.pause + canary.progress_deadline


def _rollback_stable(status: ModelDeploymentStatus, verdicts, now, events: list[Event], breaches: list[str]) -> None:
    """Revert stable to the previous good version once per breach of a rollback-enabled stable policy."""
    since = status.rollback.at if status.rollback else None
    if status.stable is None:
        return
    breaching = [v for v in verdicts if v.track == "stable" and v.rollback and v.breached and v.about(status.stable.version)
                 and (since is None or (v.evaluated_at is not None and v.evaluated_at > since))]
    if not breaching:
        return
    breaches.extend(v.name for v in breaching)
    reason = "; ".join(v.describe() for v in breaching)
    current = status.stable.version
    bad = {h.version for h in status.history if h.reason == "RolledBack" or h.retired_at and h.version == current}
    previous = next((h for h in reversed(status.history) if h.version != current and h.version not in bad), None)
    if previous is None:
        if not any(e.reason == "RollbackImpossible" for e in events):
            events.append(Event("Warning", "RollbackImpossible", f"stable {current} is failing but has no previous version: {reason}"))
        return
    _retire_current(status, now, "RolledBack")
    status.history.append(HistoryEntry(version=previous.version, model_uri=previous.model_uri, promoted_at=now, reason="RollbackTarget"))
    status.rollback = RollbackStatus(track="stable", from_version=current, to_version=previous.version, reason=reason, at=now)
    status.stable = TrackStatus(version=previous.version, model_uri=previous.model_uri)
    events.append(Event("Warning", "StableRolledBack", f"stable rolled back from {current} to {previous.version}: {reason}"))


def _retire_current(status: ModelDeploymentStatus, now, reason: str) -> None:
    for entry in reversed(status.history):
        if status.stable and entry.version == status.stable.version and entry.retired_at is None:
            entry.retired_at = now
            entry.reason = reason if reason == "RolledBack" else entry.reason
            return


def _canary_weight(md: ModelDeployment, status: ModelDeploymentStatus, canary_live: bool) -> int:
    canary = md.spec.canary
    if not canary_live or canary is None:
        return 0
    if canary.steps:
        return canary.steps[status.canary_step or 0].weight
    return canary.weight or 0


def _workloads(md: ModelDeployment, status: ModelDeploymentStatus, canary_live: bool) -> dict[str, TrackWorkload]:
    spec = md.spec
    assert status.stable is not None and status.stable.model_uri is not None
    workloads = {"stable": TrackWorkload("stable", status.stable.version, status.stable.model_uri, spec.stable.replicas, True)}
    aborted_canary = _canary_rolled_back(md, status) and status.rollback is not None and status.rollback.track == "canary"
    if spec.canary and (canary_live or aborted_canary):
        replicas = spec.canary.replicas if canary_live else 0  # an aborted canary is scaled down, kept for inspection
        workloads["canary"] = TrackWorkload("canary", spec.canary.version, spec.canary.model_uri, replicas, canary_live)
    if spec.shadow:
        workloads["shadow"] = TrackWorkload("shadow", spec.shadow.version, spec.shadow.model_uri, spec.shadow.replicas, False)
    return workloads


def _with_replicas(workload: TrackWorkload, replicas: int) -> TrackWorkload:
    return TrackWorkload(workload.track, workload.version, workload.model_uri, replicas, workload.serving)


def _observe_tracks(status: ModelDeploymentStatus, workloads: dict[str, TrackWorkload], observed) -> None:
    for name in ("stable", "canary", "shadow"):
        workload = workloads.get(name)
        if workload is None:
            if name != "canary" or status.canary is None:
                setattr(status, name, None)
            continue
        track = observed.get(name)
        ready = track is not None and track.ready_for(workload.version, workload.replicas)
        setattr(status, name, TrackStatus(
            version=workload.version, model_uri=workload.model_uri, replicas=workload.replicas,
            ready_replicas=track.ready_replicas if track and track.version == workload.version else 0, ready=ready,
        ))


def _condition(status: ModelDeploymentStatus, type_: str, value: bool, reason: str, message: str, now, generation) -> None:
    status.conditions = set_condition(status.conditions, type_, value, reason, message, now, generation)


def _set_phase_and_conditions(md, status: ModelDeploymentStatus, workloads, observed, note: str, traffic_ok: bool,
                              traffic_problem: str | None, canary_live: bool, now, events: list[Event]) -> None:
    """Phase and conditions, each for this generation; Promoted and RolledBack speak of the current canary."""
    generation = md.metadata.get("generation")
    _condition(status, "InvalidSpec", False, "Valid", "the spec is valid", now, generation)
    not_ready = [t for t in workloads if getattr(status, t) is None or not getattr(status, t).ready]
    not_ready = [t for t in not_ready if workloads[t].replicas > 0]
    last = status.history[-1] if status.history else None
    promoting = bool(last and last.reason == "Promoted" and "stable" in not_ready)
    rolled_back = status.rollback is not None
    if rolled_back:
        phase = Phase.ROLLED_BACK
    elif promoting:
        phase = Phase.PROMOTING
    elif canary_live:
        phase = Phase.PROGRESSING
    elif not_ready:
        phase = Phase.PENDING if status.phase in (Phase.PENDING, Phase.FAILED) else Phase.DEGRADED
    else:
        phase = Phase.STABLE
    status.phase = phase

    ready_message = "all tracks ready" if not not_ready else "not ready: " + ", ".join(not_ready)
    _condition(status, "Ready", not not_ready, "TracksReady" if not not_ready else "TracksNotReady", ready_message, now, generation)
    canary = md.spec.canary
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
    promoted = promoted_version is not None and (canary is None or canary.version == promoted_version)
    _condition(status, "Promoted", promoted, "CanaryPromoted" if promoted else "NotPromoted",
               f"{promoted_version} promoted" if promoted else (f"canary {canary.version} not promoted" if canary else ""),
               now, generation)
    _condition(status, "RolledBack", rolled_back, "RolledBack" if rolled_back else "NotRolledBack",
               status.rollback.reason if status.rollback else "", now, generation)
    stalled = canary_live and _stalled(md, status, now)
    was_stalled = condition_true(status.conditions, "Stalled")
    if stalled and not was_stalled and canary:
        events.append(Event("Warning", "CanaryStalled", f"canary {canary.version} step {(status.canary_step or 0) + 1} made "
                            f"no progress within its pause + progressDeadline ({format_duration(canary.progress_deadline)})"))
    _condition(status, "Stalled", stalled, "ProgressDeadlineExceeded" if stalled else "Progressing",
               "no decisive verdict within the progress deadline" if stalled else "", now, generation)
    traffic_reason = traffic_problem or ("Applied" if traffic_ok else "MirroringUnsupported")
    _condition(status, "TrafficReady", traffic_ok, traffic_reason,
               note or f"stable {status.weights.stable}%, canary {status.weights.canary}%, mirror {status.weights.mirror}%",
               now, generation)
    summary: dict[Any, str] = {
        Phase.ROLLED_BACK: f"rolled back: {status.rollback.reason}" if status.rollback else "",
        Phase.PROMOTING: progress[1],
        Phase.PROGRESSING: f"canary {canary.version if canary else ''}: {progress[1]}",
        Phase.DEGRADED: ready_message,
        Phase.PENDING: ready_message,
        Phase.STABLE: f"serving {status.stable.version if status.stable else ''}",
    }
    status.message = summary.get(phase, "")
