"""plan(): the whole ModelDeployment decision, as a pure function of what was observed.

State lives in status (never in the user's spec): the served stable version, the canary step and
when it started, the rollback in force, the history of stable versions. Each call computes the
next status from the current one, so the operator can restart at any moment and resume.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from modelwarden.api.modeldeployment import (
    ModelDeployment,
    ModelDeploymentPhase,
    ModelDeploymentStatus,
    ModelRef,
    RollbackStatus,
    Weights,
)
from modelwarden.api.duration import format_duration
from modelwarden.builders.podmonitor import pod_monitor
from modelwarden.builders.workloads import (
    ModelStore,
    Owner,
    PairedModel,
    TrackWorkload,
    autoscaler,
    deployment,
    disruption_budget,
    front_service,
    track_service,
)
from modelwarden.contract.kubernetes import DEFAULT_IMAGE, PROMOTE_ANNOTATION
from modelwarden.contract.modeluri import Resolution
from modelwarden.planning import candidates
from modelwarden.planning.phase import served_verdict, set_phase_and_conditions, stalled
from modelwarden.planning.requests import Pending, follow_pause, handle_retry, needs_approval, take_requests
from modelwarden.planning.stablerollback import retire_current, rollback_stable
from modelwarden.planning.trackmodels import (
    history_entry,
    served_model,
    set_model_conditions,
    track_models,
    track_status,
    unresolved_plan,
)
from modelwarden.planning.types import Event, ObservedTrack, Plan, PolicyVerdict, TrackModel
from modelwarden.planning.webhookgates import PROMOTION, ROLLOUT, GateAnswer, forget_other_versions, rollout_confirmed
from modelwarden.planning.webhookgates import expired as gate_expired
from modelwarden.planning.webhookgates import holds as gates_hold
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
    resolutions: Mapping[str, Resolution | str] | None = None,
    fetch_failures: Mapping[str, str] | None = None,
    mlflow_tracking_uri: str | None = None,
    gate_answers: Mapping[str, GateAnswer] | None = None,
) -> Plan:
    """Desired children, traffic split, next status and events for one ModelDeployment.

    `routes` are this ModelDeployment's route objects as the cluster shows them, `autoscaled` the
    replicas of tracks an HPA scales (the operator leaves those alone), `apply_problems` what the
    last apply of children could not do, `pod_monitors` whether to want a PodMonitor (the cluster
    serves the kind and the operator is not told otherwise), `resolutions` what each registry URI of
    the spec resolved to (or why it could not be), `fetch_failures` the storage initializer's error
    per track (from Pod status), `gate_answers` what the webhook gates that wait answered (by name).
    """
    spec, meta = md.spec, md.metadata
    status = (md.status or ModelDeploymentStatus()).model_copy(deep=True)
    events: list[Event] = []
    models, unresolved = track_models(md, status, resolutions or {})
    failures = dict(fetch_failures or {})
    if "stable" not in models:
        return unresolved_plan(md, status, unresolved, now)
    annotations = meta.get("annotations") or {}
    handle_retry(annotations, status, events)  # first: a retried stable rollback serves the spec's stable again
    if "stable" not in unresolved:  # an unresolved alias is no spec change: serve what status records
        _follow_spec_stable(models["stable"], status, now, events)
    pending = take_requests(annotations, status)
    follow_pause(annotations, status, now, events)
    md = candidates.begin(md, status, verdicts, resolutions or {}, now, events, pending)  # spec.candidates: as shadow or canary
    spec, spec_stable = md.spec, models["stable"]
    models.update(candidates.models(status))
    breaches: list[str] = []
    canary_live = _advance_canary(md, models.get("canary"), status, observed, verdicts, now, events, breaches, pending,
                                  gate_answers or {})
    events.extend(pending.ignored("no canary in progress" if not canary_live else
                                  "a webhook gate holds the rollout (promote --full or abort override it)"
                                  if not rollout_confirmed(md, status) else "the current step does not require approval", status))
    candidates.settle(md, status, verdicts, now, events)
    rollback_stable(status, verdicts, now, events, breaches)

    owner = Owner(name=meta["name"], namespace=meta.get("namespace", "default"), uid=meta.get("uid", ""), model=spec.model)
    workloads = _workloads(md, models, status, canary_live)
    scaled = {track: replicas for track, replicas in (autoscaled or {}).items() if track in workloads}
    # A track whose model cannot be fetched gets no traffic (its pods never become ready), while
    # its pods keep retrying: below, its replicas stay as the spec says.
    canary_weight = 0 if "canary" in failures else _canary_weight(md, status, canary_live)
    requested = Split(
        stable=100 - canary_weight,
        canary=canary_weight,
        mirror=spec.shadow.mirror_percent if spec.shadow and "shadow" not in failures else 0,
    )
    router = get_router(spec.traffic.router.value)
    context = RouteContext(
        owner=owner, port=spec.port, traffic=spec.traffic, split=requested,
        has_canary="canary" in workloads, has_shadow="shadow" in workloads,
        replicas={track: scaled.get(track, w.replicas) for track, w in workloads.items()},
        fixed=frozenset(scaled) | {t for t in workloads if getattr(spec, t).autoscaling is not None},
    )
    routing = router.route(context)
    workloads = {t: _with_replicas(w, w.replicas if t in failures and t != "stable" else routing.replicas.get(t, w.replicas))
                 for t, w in workloads.items()}
    children = [front_service(owner, spec.port)]
    feedback_keys = (spec.feedback.token_secret_ref.name, spec.feedback.token_secret_ref.key) if spec.feedback else None
    store = ModelStore(secret=spec.storage.secret_ref.name if spec.storage.secret_ref else None,
                       max_bytes=spec.storage.max_bytes, mlflow_tracking_uri=mlflow_tracking_uri)
    for workload in workloads.values():
        track_spec = getattr(spec, workload.track)
        # A track with autoscaling never gets replicas from us, not even before its HPA is seen: the
        # HPA raises a new Deployment to minReplicas, and a field we dropped later would reset to 1.
        hands_off = workload.track in scaled or (track_spec.autoscaling is not None and workload.replicas > 0)
        children.append(deployment(owner, workload, spec.template, spec.port, image, set_replicas=not hands_off,
                                   feedback_keys=feedback_keys, store=store, overrides=track_spec))
        children.append(track_service(owner, workload, spec.port))
        if track_spec.autoscaling is not None and workload.replicas > 0:
            children.append(autoscaler(owner, workload, track_spec.autoscaling))
        if max(workload.replicas, track_spec.autoscaling.min_replicas if track_spec.autoscaling else 0) > 1:
            children.append(disruption_budget(owner, workload))
    children.extend(routing.objects)
    if pod_monitors:
        children.append(pod_monitor(owner, spec.port, spec.template, pod_monitor_labels))

    old_weights = status.weights
    status.weights = Weights(stable=routing.effective.stable, canary=routing.effective.canary, mirror=routing.effective.mirror)
    if status.weights != old_weights and md.status is not None:
        events.append(Event("Normal", "TrafficUpdated",
                            f"stable {status.weights.stable}%, canary {status.weights.canary}%, mirror {status.weights.mirror}%"))
    _start_step_when_applied(md, status, canary_live and "canary" not in failures and rollout_confirmed(md, status),
                             router.observe(context, _serving(workloads, observed, routes)), routing.effective, now)
    _observe_tracks(status, models, workloads, observed)
    note = "; ".join(apply_problems) if apply_problems else routing.note
    set_phase_and_conditions(md, status, workloads, observed, note, routing.mirroring_supported and not apply_problems,
                              "ApplyFailed" if apply_problems else None, canary_live, now, events)
    set_model_conditions(md, status, unresolved, {t: m for t, m in failures.items() if t in workloads}, now, events)
    candidates.set_spec_behind(md, status, spec_stable, now)
    status.verdict = served_verdict(verdicts, status)
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


def _follow_spec_stable(wanted: TrackModel, status: ModelDeploymentStatus, now, events: list[Event]) -> None:
    """A change of spec.stable, or of what its alias names (or the first sight of it), resets the
    served stable to it."""
    seen = status.observed_stable
    if seen is not None and status.stable is not None and wanted.same_artifact(seen.version, seen.model_uri, seen.resolved_uri):
        return
    # Adopting what already serves (a promoted canary now named by the spec, or its alias moved to
    # the promoted version) is no rollout: only the record of where it came from changes.
    if status.stable is not None and not wanted.serves_same(status.stable.version, status.stable.model_uri,
                                                            status.stable.resolved_uri):
        retire_current(status, now, "Replaced")
        status.history.append(history_entry(wanted, now, "SpecChanged"))
        moved = f" ({wanted.model_uri} now names {wanted.resolved_uri})" if wanted.resolved_uri != wanted.model_uri else ""
        events.append(Event("Normal", "StableUpdated", f"stable set to {wanted.version} by the spec{moved}"))
    elif status.stable is None:
        status.history.append(history_entry(wanted, now, "Initial"))
    lineage = status.stable.lineage if status.stable is not None and wanted.serves_same(
        status.stable.version, status.stable.model_uri, status.stable.resolved_uri) else None
    status.stable = track_status(wanted, lineage=lineage)  # adopting a promoted candidate keeps where it came from
    status.observed_stable = ModelRef(version=wanted.version, model_uri=wanted.model_uri, resolved_uri=wanted.resolved_uri)
    if status.rollback and status.rollback.track == "stable":
        status.rollback = None


def _canary_rolled_back(model: TrackModel | None, status: ModelDeploymentStatus) -> bool:
    """The spec's canary is a version rolled back (as a canary, or later as stable): never restart it by itself."""
    rollback = status.rollback
    return bool(model and rollback and rollback.from_version == model.version)


def _advance_canary(md, model: TrackModel | None, status: ModelDeploymentStatus, observed, verdicts, now,
                    events: list[Event], breaches: list[str], pending: Pending, answers: Mapping[str, GateAnswer]) -> bool:
    """Start, hold, advance, promote or abort the canary (by its gates, or on a person's request).
    Returns whether a canary serves traffic."""
    canary = md.spec.canary if model is not None else None
    if canary is None or model is None or status.stable is None or model.version == status.stable.version \
            or _canary_rolled_back(model, status):
        if not _canary_rolled_back(model, status):
            status.canary, status.canary_step, status.canary_started_at = None, None, None
            status.step_started_at = status.step_requested_at = None
            status.gates = []
        return False
    if status.rollback and status.rollback.track == "canary":
        status.rollback = None  # a new canary version starts over
    if status.canary is None or not model.same_artifact(status.canary.version, status.canary.model_uri,
                                                        status.canary.resolved_uri):
        status.canary = track_status(model)
        status.canary_step = 0 if canary.steps else None
        status.canary_started_at, status.approved_step = now, None
        forget_other_versions(status, model.version)
        status.step_started_at, status.step_requested_at = None, now if canary.steps else None
        source = f" ({model.resolved_uri})" if model.resolved_uri != model.model_uri else ""
        events.append(Event("Normal", "CanaryStarted", f"canary {model.version}{source} started"
                            + (f" at {canary.steps[0].weight}%" if canary.steps else f" as a {canary.weight}% A/B split")))
    gating = [v for v in verdicts if v.track == "canary" and v.about(model.version)]
    aborting = [v for v in gating if v.rollback and v.breached_since(status.canary_started_at)]
    breaches.extend(v.name for v in aborting)
    if aborting:
        _abort_canary(md, model, status, "; ".join(v.describe() for v in aborting), now, events)
        return False
    if pending.peek("abort"):
        _abort_canary(md, model, status, f"aborted on request ({pending.describe('abort')})", now, events)
        pending.use("abort")
        return False
    if pending.peek("promote_full") or (pending.peek("promote") and not canary.steps and rollout_confirmed(md, status)):
        kind = "promote_full" if pending.peek("promote_full") else "promote"
        _promote(model, status, now, events, f" on request ({pending.describe(kind)})")
        pending.use(kind)
        return False
    confirmed = rollout_confirmed(md, status)
    track = observed.get("canary")
    ready = track is not None and track.ready_for(model.version, track.replicas) and track.ready_replicas > 0
    holding = gates_hold(md, model, status, ROLLOUT, answers, now, events, canary_ready=ready)
    if timed_out := gate_expired(md, status, now):
        _abort_canary(md, model, status, timed_out, now, events)
        return False
    if holding:
        return True  # at 0% of traffic (_canary_weight) until every rollout gate said yes
    if not confirmed:
        status.step_requested_at = now  # the first step starts now: its progress deadline too
    if not canary.steps:
        winners = [v for v in gating if v.won_since(model.version, status.canary_started_at)]
        if canary.auto_promote_winner and winners and not status.paused and not any(v.lost(model.version) for v in gating) \
                and all(v.passed_since(status.canary_started_at) for v in gating) \
                and not gates_hold(md, model, status, PROMOTION, answers, now, events):
            _promote(model, status, now, events, f": it won the A/B comparison (DriftPolicy {winners[0].name}: "
                                                 f"{winners[0].winner_summary})")
            return False
        return True  # a fixed A/B split holds until the spec changes, or its winner is promoted
    step_index = status.canary_step or 0
    step = canary.steps[step_index]
    if step.approval is not None and pending.peek("approve"):
        status.approved_step, status.step_requested_at = step_index, now  # the deadline starts over
        events.append(Event("Normal", "StepApproved", f"canary {model.version} step {step_index + 1}/{len(canary.steps)} "
                                                      f"approved ({pending.describe('approve')})"))
        pending.use("approve")
    skip = pending.use("promote")  # the person says this step is done: pause, gates and approval waived
    started = status.step_started_at
    held = bool(status.paused) or needs_approval(md, status)
    unproven = md.spec.candidates is not None and not gating  # a candidate never advances on time alone
    if not skip and (held or started is None or now - started < step.pause or not ready or unproven
                     or not all(v.passed_since(started) for v in gating)):
        if not held and stalled(md, status, now) and canary.abort_on_stall:
            _abort_canary(md, model, status, f"stalled: step {step_index + 1} made no progress for "
                                      f"{format_duration(step.pause + canary.progress_deadline)}", now, events)
            return False
        return True
    if step_index + 1 < len(canary.steps):
        status.canary_step = step_index + 1
        status.step_started_at, status.step_requested_at = None, now
        events.append(Event("Normal", "CanaryStepAdvanced",
                            f"canary {model.version} advanced to step {step_index + 2}/{len(canary.steps)} "
                            f"at {canary.steps[step_index + 1].weight}%" + (f" on request ({PROMOTE_ANNOTATION}={skip})" if skip else "")))
        return True
    if not skip and gates_hold(md, model, status, PROMOTION, answers, now, events):
        return True  # at the last step until confirm-promotion says yes
    _promote(model, status, now, events, f" on request ({PROMOTE_ANNOTATION}={skip})" if skip else "")
    return False


def _promote(model: TrackModel, status: ModelDeploymentStatus, now, events: list[Event], why: str) -> None:
    assert status.stable is not None
    retire_current(status, now, "Superseded")
    status.history.append(history_entry(model, now, "Promoted"))
    events.append(Event("Normal", "CanaryPromoted", f"canary {model.version} promoted to stable (was {status.stable.version}){why}"))
    status.stable = track_status(model)
    status.canary, status.canary_step, status.canary_started_at, status.approved_step = None, None, None, None
    status.step_started_at = status.step_requested_at = None
    status.gates = []


def _abort_canary(md: ModelDeployment, model: TrackModel, status: ModelDeploymentStatus, reason: str, now,
                  events: list[Event]) -> None:
    assert status.stable is not None
    status.rollback = RollbackStatus(track="canary", from_version=model.version, to_version=status.stable.version,
                                     reason=reason, at=now, generation=md.metadata.get("generation") or 0)
    status.canary = track_status(model)
    status.canary_step = None
    status.step_started_at = status.step_requested_at = None
    status.gates = []  # a rolled-back canary is asked nothing more; a retry asks every gate again
    events.append(Event("Warning", "CanaryAborted", f"canary {model.version} rolled back: {reason}"))


def _canary_weight(md: ModelDeployment, status: ModelDeploymentStatus, canary_live: bool) -> int:
    canary = md.spec.canary
    if not canary_live or canary is None or not rollout_confirmed(md, status):
        return 0
    if canary.steps:
        return canary.steps[status.canary_step or 0].weight
    return canary.weight or 0


def _replicas(track) -> int:
    return max(track.replicas, track.autoscaling.min_replicas) if track.autoscaling else track.replicas


def _workloads(md: ModelDeployment, models: Mapping[str, TrackModel], status: ModelDeploymentStatus,
               canary_live: bool) -> dict[str, TrackWorkload]:
    spec = md.spec
    assert status.stable is not None and status.stable.model_uri is not None
    stable = served_model(status.stable)
    workloads = {"stable": TrackWorkload("stable", stable.version, stable.resolved_uri, _replicas(spec.stable), True,
                                         sha256=stable.sha256)}
    canary = models.get("canary")
    aborted_canary = _canary_rolled_back(canary, status) and status.rollback is not None and status.rollback.track == "canary"
    if spec.canary and canary and (canary_live or aborted_canary):
        replicas = _replicas(spec.canary) if canary_live else 0  # an aborted canary is scaled down, kept for inspection
        workloads["canary"] = TrackWorkload("canary", canary.version, canary.resolved_uri, replicas, canary_live, sha256=canary.sha256)
    shadow = models.get("shadow")
    if spec.shadow and shadow:
        paired = PairedModel(stable.version, stable.resolved_uri, stable.sha256) if spec.shadow.pair_with_stable else None
        workloads["shadow"] = TrackWorkload("shadow", shadow.version, shadow.resolved_uri, _replicas(spec.shadow), False,
                                            sha256=shadow.sha256, paired=paired)
    return workloads


def _with_replicas(workload: TrackWorkload, replicas: int) -> TrackWorkload:
    return dataclasses.replace(workload, replicas=replicas)


def _observe_tracks(status: ModelDeploymentStatus, models: Mapping[str, TrackModel], workloads: dict[str, TrackWorkload],
                    observed) -> None:
    for name in ("stable", "canary", "shadow"):
        workload = workloads.get(name)
        if workload is None:
            if name != "canary" or status.canary is None:
                setattr(status, name, None)
            continue
        model = served_model(status.stable) if name == "stable" and status.stable else models[name]
        lineage = status.stable.lineage if name == "stable" and status.stable else None
        track = observed.get(name)
        ready = track is not None and track.ready_for(workload.version, workload.replicas)
        setattr(status, name, track_status(
            model, replicas=workload.replicas, lineage=lineage,
            ready_replicas=track.ready_replicas if track and track.version == workload.version else 0, ready=ready,
        ))
