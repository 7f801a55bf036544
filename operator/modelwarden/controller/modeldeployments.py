"""ModelDeployment reconciliation: a level-triggered timer reads state, plans (pure), applies, and
writes status only when it changed. Child Deployments and DriftPolicy verdicts come from kopf
indexes, so no timer lists the API."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from modelwarden import GROUP, VERSION
from modelwarden.api.modeldeployment import ModelDeployment
from modelwarden.builders.workloads import INSTANCE_LABEL, MANAGED_BY
from modelwarden.controller import metrics
from modelwarden.controller.config import reconcile_interval
from modelwarden.controller.status import set_condition, status_changes
from modelwarden.kube.apply import apply_children
from modelwarden.planning.plan import plan
from modelwarden.planning.types import ObservedTrack, PolicyVerdict
from modelwarden.routers import ROUTE_KINDS

MODELDEPLOYMENTS = (GROUP, VERSION, "modeldeployments")
DRIFTPOLICIES = (GROUP, VERSION, "driftpolicies")
CHILD_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), *ROUTE_KINDS)
logger = logging.getLogger(__name__)


@kopf.index("apps", "v1", "deployments", labels=MANAGED_BY)
def child_deployments(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any] | None:
    if INSTANCE_LABEL not in labels or "track" not in labels:
        return None
    return {(namespace, labels[INSTANCE_LABEL]): (labels["track"], ObservedTrack.from_deployment(dict(body)))}


@kopf.index(*DRIFTPOLICIES)
def policy_verdicts(namespace: str, name: str, spec: Any, status: Any, **_: Any) -> dict[Any, Any] | None:
    target = (spec.get("targetRef") or {}).get("name")
    if not target:
        return None
    return {(namespace, target): verdict_from_policy(name, dict(spec), dict(status or {}))}


def verdict_from_policy(name: str, spec: dict[str, Any], status: dict[str, Any]) -> PolicyVerdict:
    last = status.get("lastEvaluation") or {}
    evaluated_at = last.get("time")
    return PolicyVerdict(
        name=name,
        track=spec.get("track", "stable"),
        verdict=last.get("verdict"),
        evaluated_at=datetime.datetime.fromisoformat(evaluated_at.replace("Z", "+00:00")) if evaluated_at else None,
        consecutive_failures=int(status.get("consecutiveFailures") or 0),
        failure_threshold=int(spec.get("failureThreshold") or 3),
        rollback=bool((spec.get("actions") or {}).get("rollback")),
        failing_checks=tuple(r["check"] for r in last.get("results") or [] if r.get("verdict") == "Fail"),
        version=status.get("evaluatedVersion"),
    )


@kopf.timer(*MODELDEPLOYMENTS, interval=reconcile_interval(), initial_delay=0.1)
def reconcile_modeldeployment(
    body: Any, namespace: str, name: str, status: Any, patch: kopf.Patch, memo: Any,
    child_deployments: kopf.Index, policy_verdicts: kopf.Index, **_: Any,
) -> None:
    try:
        md = ModelDeployment.model_validate(dict(body))
    except ValidationError:
        return  # the spec handler records InvalidSpec and fails permanently
    observed = dict(child_deployments.get((namespace, name), []))
    verdicts = list(policy_verdicts.get((namespace, name), []))
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    result = plan(md, observed, verdicts, now, image=memo.config.default_image)
    metrics.set_canary_weight(namespace, name, result.split.canary)
    applied = apply_children(
        memo.kube, result.children, owner_uid=md.metadata["uid"], namespace=namespace,
        selector=f"{INSTANCE_LABEL}={name}", prunable_kinds=CHILD_KINDS,
    )
    new_status = result.status
    if applied.unavailable or applied.conflicts:
        problem = "; ".join([*(f"{k} is not served by the cluster" for k in applied.unavailable),
                             *(f"{c} exists and is not owned by this ModelDeployment" for c in applied.conflicts)])
        new_status["conditions"] = set_condition(new_status["conditions"], "TrafficReady", "False", "ApplyFailed", problem,
                                                 now, md.metadata.get("generation"))
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if applied.changed:
        logger.info("%s/%s children: created %s updated %s deleted %s", namespace, name,
                    applied.created, applied.updated, applied.deleted)
    changes = status_changes(dict(status or {}), new_status)
    if changes:
        patch.status.update(changes)
