"""ModelDeployment reconciliation: one kopf daemon per object runs gather -> plan (pure) -> persist
status once (conditional on the resourceVersion the plan was computed from) -> apply children.

Why a daemon, not a timer: a reconcile runs as soon as something it depends on changes (the
object, a gating DriftPolicy's verdict, a child Deployment's readiness), woken through the watch,
with the interval only as a level-triggered fallback. A rollback is issued by the first reconcile
after a policy breaches, not on the next tick.

Why status is persisted before children are applied: children follow status (the served versions,
the step), so a decision is acted on only once it is durably recorded; a decision computed from a
view older than the operator's own last write is never made (the write fence) and never persisted
(the API server refuses the write: 409 -> re-read and decide again).

Children and DriftPolicy verdicts come from kopf indexes fed by watches: a reconcile with nothing
to change sends no request to the API server.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
import random
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from modelwarden.api.driftpolicy import DriftPolicySpec, DriftPolicyStatus
from modelwarden.api.modeldeployment import ModelDeployment, ModelDeploymentStatus
from modelwarden.contract.kubernetes import DRIFTPOLICIES, INSTANCE_LABEL, MANAGED_BY, MODELDEPLOYMENTS
from modelwarden.controller import telemetry
from modelwarden.controller.config import OperatorConfig
from modelwarden.controller.gatecalls import GateCaller
from modelwarden.controller.memo import Memo
from modelwarden.controller.modelpods import fetch_failures
from modelwarden.controller.resolution import Resolver
from modelwarden.controller.podmonitors import PodMonitorSupport
from modelwarden.controller.status import status_changes
from modelwarden.kube.api import KubeApi, StaleView, describe_error
from modelwarden.kube.apply import ChildKey, apply_children, key
from modelwarden.kube.fence import WriteFence, write_status
from modelwarden.planning.plan import plan
from modelwarden.planning.types import Event, ObservedTrack, PolicyVerdict

ROUTE_KINDS = ("HTTPRoute", "VirtualService")
RECONCILES = ThreadPoolExecutor(max_workers=8, thread_name_prefix="md-reconcile")  # I/O-bound: API round trips
STALE_RETRIES = 3  # 409s in a row before waiting for the watch instead of re-reading at once
BACKOFF_SECONDS = (0.5, 8.0)  # first and largest delay after a failed reconcile (jittered)
logger = logging.getLogger(__name__)


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """The ModelDeployment loop's handlers: watch-fed indexes, wake-ups, and one daemon per object."""
    for api, plural, index in (("apps/v1", "deployments", child_deployments), ("v1", "services", child_services),
                               ("gateway.networking.k8s.io/v1", "httproutes", child_httproutes),
                               ("networking.istio.io/v1", "virtualservices", child_virtualservices),
                               ("autoscaling/v2", "horizontalpodautoscalers", child_autoscalers),
                               ("policy/v1", "poddisruptionbudgets", child_disruption_budgets)):
        kopf.index(*api.split("/"), plural, labels=MANAGED_BY, registry=registry)(index)
    kopf.index("autoscaling", "v2", "horizontalpodautoscalers", registry=registry)(autoscalers)
    kopf.index(*DRIFTPOLICIES, registry=registry)(policy_verdicts)
    kopf.on.event(*MODELDEPLOYMENTS, registry=registry)(wake_on_modeldeployment)
    kopf.on.event(*DRIFTPOLICIES, registry=registry)(wake_on_verdict)
    kopf.on.event("apps", "v1", "deployments", labels=MANAGED_BY, registry=registry)(wake_on_child)
    kopf.daemon(*MODELDEPLOYMENTS, initial_delay=0.05, cancellation_timeout=1.0, when=config.owns,
                registry=registry)(run_modeldeployment)


def _child(namespace: str, labels: Mapping[str, str], body: Any) -> dict[Any, Any] | None:
    if INSTANCE_LABEL not in labels:
        return None
    return {(namespace, labels[INSTANCE_LABEL]): copy.deepcopy(dict(body))}


def child_deployments(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any] | None:
    return _child(namespace, labels, body)


def child_services(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any] | None:
    return _child(namespace, labels, body)


def child_httproutes(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any] | None:
    return _child(namespace, labels, body)


def child_virtualservices(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any] | None:
    return _child(namespace, labels, body)


def child_autoscalers(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any] | None:
    return _child(namespace, labels, body)


def child_disruption_budgets(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any] | None:
    return _child(namespace, labels, body)


def autoscalers(namespace: str, spec: Any, **_: Any) -> dict[Any, Any] | None:
    """HPAs by the Deployment they scale: the operator stops setting that Deployment's replicas."""
    target = dict(spec.get("scaleTargetRef") or {})
    if target.get("kind") != "Deployment" or not target.get("name"):
        return None
    return {(namespace, target["name"]): True}


def policy_verdicts(namespace: str, name: str, spec: Any, status: Any, **_: Any) -> dict[Any, Any] | None:
    target = (spec.get("targetRef") or {}).get("name")
    if not target:
        return None
    return {(namespace, target): verdict_from_policy(name, dict(spec), dict(status or {}))}


def verdict_from_policy(name: str, spec: dict[str, Any], status: dict[str, Any]) -> PolicyVerdict:
    """A policy's verdict as its typed model reads it; one it cannot read never passes a gate."""
    try:
        parsed = DriftPolicySpec.model_validate(spec)
    except ValidationError as exc:
        return PolicyVerdict.unreadable(name, str(spec.get("track") or "stable"), f"invalid spec: {exc.errors()[0]['msg']}")
    try:
        seen = DriftPolicyStatus.model_validate(status)
    except ValidationError:
        seen = DriftPolicyStatus()  # nothing readable evaluated yet
    return PolicyVerdict.from_policy(name, parsed, seen)


# -- wake-ups: the watch events a reconcile depends on ------------------------------------------

async def wake_on_modeldeployment(namespace: str, name: str, memo: Memo, **_: Any) -> None:
    memo.wakeups.wake((namespace, name))


async def wake_on_verdict(namespace: str, spec: Any, memo: Memo, **_: Any) -> None:
    target = (spec.get("targetRef") or {}).get("name")
    if target:
        memo.wakeups.wake((namespace, target))


async def wake_on_child(namespace: str, labels: dict[str, str], memo: Memo, **_: Any) -> None:
    if INSTANCE_LABEL in labels:
        memo.wakeups.wake((namespace, labels[INSTANCE_LABEL]))


# -- the reconcile loop --------------------------------------------------------------------------

@dataclass(frozen=True)
class Gathered:
    """Everything one decision reads, snapshotted on the event loop before the work leaves it."""

    view: dict[str, Any]
    children: dict[ChildKey, dict[str, Any]]
    verdicts: list[PolicyVerdict]
    autoscaled: frozenset[str]  # Deployment names an HPA targets


@dataclass
class Outcome:
    events: list[Event] = field(default_factory=list)  # of a persisted decision only: announced once
    again: bool = False  # something changed that the next decision should see at once
    # Applying children failed after the decision was persisted: its events are still announced
    # (no later decision makes them again), then the failure is retried like any other.
    failure: Exception | None = None


def gather(body: Any, index_children: Iterable[kopf.Index], verdicts: kopf.Index, hpas: kopf.Index) -> Gathered:
    view = copy.deepcopy(dict(body))
    meta = view.get("metadata", {})
    instance = (meta.get("namespace"), meta.get("name"))
    children: dict[ChildKey, dict[str, Any]] = {}
    for index in index_children:
        for child in index.get(instance, []):
            children[key(child)] = child
    scaled = frozenset(name for (namespace, name) in hpas if namespace == instance[0])
    return Gathered(view, children, list(verdicts.get(instance, [])), scaled)


async def run_modeldeployment(
    body: Any, namespace: str, name: str, memo: Memo, stopped: kopf.DaemonStopped,
    child_deployments: kopf.Index, child_services: kopf.Index, child_httproutes: kopf.Index,
    child_virtualservices: kopf.Index, child_autoscalers: kopf.Index, child_disruption_budgets: kopf.Index,
    autoscalers: kopf.Index, policy_verdicts: kopf.Index, **rest: Any,
) -> None:
    instance = (namespace, name)
    children = [child_deployments, child_services, child_httproutes, child_virtualservices, child_autoscalers,
                child_disruption_budgets]
    if "child_podmonitors" in rest:  # registered unless --pod-monitors=off (controller/podmonitors.py)
        children.append(rest["child_podmonitors"])
    wake = memo.wakeups.event(instance)
    loop = asyncio.get_running_loop()
    failures = 0
    problems: tuple[str, ...] = ()
    try:
        while not stopped:
            wake.clear()
            gathered = gather(body, children, policy_verdicts, autoscalers)
            delay = memo.config.reconcile_interval
            try:
                outcome, problems = await loop.run_in_executor(
                    RECONCILES, reconcile, memo.kube, memo.fence, gathered, memo.config.default_image, problems,
                    memo.pod_monitors, memo.resolver, memo.gates)
                for event in outcome.events:
                    kopf.event(body, type=event.type, reason=event.reason, message=event.message)
                if outcome.failure is not None:
                    raise outcome.failure
                failures = 0
                if outcome.again:
                    wake.set()
            except Exception as exc:  # the API failing: retry soon (jittered), not after kopf's minute
                failures += 1
                delay = min(BACKOFF_SECONDS[1], BACKOFF_SECONDS[0] * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
                logger.warning("%s/%s: reconcile failed (%s), retrying in %.1fs", namespace, name, describe_error(exc), delay)
            await _sleep(wake, stopped, delay)
    finally:
        memo.wakeups.forget(instance)


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, delay: float) -> None:
    """Until woken, stopped, or `delay` passed."""
    waits = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


def reconcile(kube: KubeApi, fence: WriteFence, gathered: Gathered, image: str,
              problems: tuple[str, ...], pod_monitors: PodMonitorSupport | None = None,
              resolver: Resolver | None = None, gates: GateCaller | None = None) -> tuple[Outcome, tuple[str, ...]]:
    """One decision: plan from the gathered view, persist status once, then apply children.

    Returns what to announce and the apply problems the next decision should report.
    """
    view = gathered.view
    want_pod_monitor = pod_monitors.wanted() if pod_monitors is not None else False
    children = gathered.children
    if want_pod_monitor is None:  # discovery has not answered yet: leave PodMonitors as they are
        children = {k: child for k, child in children.items() if child.get("kind") != "PodMonitor"}
    for _ in range(STALE_RETRIES):
        meta = view.get("metadata", {})
        if fence.is_stale(meta.get("uid", ""), meta.get("resourceVersion")):
            telemetry.record_reconcile("stale")
            return Outcome(), problems  # our last write is on its way through the watch: it wakes us
        try:
            md = ModelDeployment.model_validate(view)
        except ValidationError:
            return Outcome(), problems  # the spec handler records InvalidSpec and fails permanently
        namespace, name = meta.get("namespace"), meta["name"]
        now = datetime.datetime.now(datetime.timezone.utc)
        observed = {}
        for child in gathered.children.values():
            if child.get("kind") == "Deployment":
                track = child["metadata"].get("labels", {}).get("track")
                if track:
                    observed[track] = ObservedTrack.from_deployment(child)
        scaled = {track: observed[track].replicas for track in observed if f"{name}-{track}" in gathered.autoscaled}
        routes = [c for c in gathered.children.values() if c.get("kind") in ROUTE_KINDS]
        answers = gates.answers(md, md.status or ModelDeploymentStatus()) if gates is not None else {}
        result = plan(md, observed, gathered.verdicts, now, image=image, routes=routes, autoscaled=scaled,
                      apply_problems=problems, pod_monitors=bool(want_pod_monitor),
                      pod_monitor_labels=pod_monitors.labels if pod_monitors is not None else None,
                      resolutions=resolver.resolve(md) if resolver is not None else {},
                      fetch_failures=fetch_failures(kube, namespace, name, observed),
                      mlflow_tracking_uri=resolver.config.mlflow_tracking_uri if resolver is not None else None,
                      gate_answers=answers)
        changes = status_changes(dict(view.get("status") or {}), result.status)
        wrote = False
        if changes:
            try:
                write_status(kube, fence, view, changes)
                wrote = True
            except StaleView:
                telemetry.record_reconcile("conflict")
                _log_decision(namespace, name, "refused", result.events, gathered.verdicts, result.breaches)
                fresh = kube.get(view["apiVersion"], view["kind"], namespace, name)
                if fresh is None:
                    return Outcome(), problems
                view = fresh
                continue
        telemetry.record_reconcile("written" if wrote else "unchanged")
        _log_decision(namespace, name, "written" if wrote else "unchanged", result.events, gathered.verdicts, result.breaches)
        telemetry.set_canary_weight(namespace, name, result.split.canary)
        try:
            applied = apply_children(kube, result.children, children, owner_uid=md.metadata["uid"])
        except Exception as exc:  # noqa: BLE001 - handed to the daemon's retry, after the events
            if not wrote:
                raise
            return Outcome(result.events, failure=exc), problems
        if applied.changed:
            logger.info("%s/%s children: created %s updated %s deleted %s", namespace, name,
                        applied.created, applied.updated, applied.deleted)
        now_problems = tuple([*(f"{k} is not served by the cluster" for k in applied.unavailable),
                              *(f"{r} refused by the API server" for r in applied.refused),
                              *(f"{c} exists and is not owned by this ModelDeployment" for c in applied.conflicts)])
        return Outcome(result.events if wrote else [], again=now_problems != problems), now_problems
    return Outcome(again=True), problems


def _log_decision(namespace: str, name: str, outcome: str, events: list[Event], verdicts: list[PolicyVerdict],
                  breaches: tuple[str, ...]) -> None:
    """One line per decision: INFO when it changed something (what and on which verdicts), DEBUG
    otherwise; a verdict marked `!` counted as a breach to act on."""
    level = logging.INFO if outcome == "written" and events else logging.DEBUG
    if not logger.isEnabledFor(level):
        return
    seen = "; ".join(f"{v.name}@{v.version or '-'}={v.verdict.value if v.verdict else None} {v.consecutive_failures}/{v.failure_threshold}"
                     f"{'!' if v.name in breaches else ''}" for v in verdicts)
    logger.log(level, "%s/%s decided (%s): %s; verdicts: %s", namespace, name, outcome,
               ", ".join(e.reason for e in events) or "no change", seen or "none")
