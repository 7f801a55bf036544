"""Apply desired children: server-side apply of what differs from the watched state, never touch
what is not ours, prune what is no longer desired.

The observed children come from watch-fed indexes, so a reconcile with nothing to change sends no
request. A child the index has not seen is created (a create fails safely on someone else's
object of the same name, where an apply would take it over); a child that differs is applied with
field manager `modelwarden`, so fields set by others (an HPA's or `kubectl scale`'s replicas,
other controllers' annotations) are left alone unless the operator sets them itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.dynamic.exceptions import BadRequestError, DynamicApiError, ForbiddenError, UnprocessibleEntityError

from modelwarden.kube.api import FIELD_MANAGER, KubeApi, RouteApiUnavailable

HANDOVER_MANAGER = "modelwarden-handover"  # holds a Deployment's replicas once the operator lets them go

REFUSALS = (ForbiddenError, BadRequestError, UnprocessibleEntityError)


def _message(exc: DynamicApiError) -> str:
    """The API server's own message (a Status body), in one short line."""
    try:
        return str(json.loads(exc.body).get("message", ""))[:300]
    except (TypeError, ValueError, AttributeError):
        return str(exc)[:300]

ChildKey = tuple[str, str, str]  # apiVersion, kind, name


def is_subset(desired: Any, current: Any) -> bool:
    """Whether every field we set already has our value (fields the server added are ignored)."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(is_subset(v, current.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(current, list) and len(desired) == len(current) and all(
            is_subset(d, c) for d, c in zip(desired, current)
        )
    return desired == current


def _releases_replicas(desired: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """A Deployment whose replicas the operator set until now and leaves to an HPA from here."""
    if current is None or desired.get("kind") != "Deployment" or "replicas" in desired.get("spec", {}):
        return False
    if "replicas" not in (current.get("spec") or {}):
        return False
    entries = (current.get("metadata") or {}).get("managedFields")
    if entries is None:
        return True  # managed fields not in view: hand over to be safe (an idempotent apply)
    return any(e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply"
               and "f:replicas" in ((e.get("fieldsV1") or {}).get("f:spec") or {}) for e in entries)


def _hand_over_replicas(api: KubeApi, desired: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Server-side apply removes a field its last owner stops applying, and Deployment replicas
    would default to 1: another manager takes the current value first (the hand-over Kubernetes
    documents for moving replicas to an HPA), so the serving track keeps its pods."""
    meta = desired["metadata"]
    api.apply({"apiVersion": desired["apiVersion"], "kind": desired["kind"],
               "metadata": {"name": meta["name"], "namespace": meta.get("namespace")},
               "spec": {"replicas": current["spec"]["replicas"]}}, field_manager=HANDOVER_MANAGER)


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])


def key(obj: Mapping[str, Any]) -> ChildKey:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # same name, someone else's object: left alone
    unavailable: list[str] = field(default_factory=list)  # kinds the cluster does not serve
    refused: list[str] = field(default_factory=list)  # the API server said no (403, 400, 422): reported, the rest goes on

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def apply_children(
    api: KubeApi, desired: list[dict[str, Any]], observed: Mapping[ChildKey, Mapping[str, Any]], owner_uid: str,
) -> ApplyResult:
    """Converge the owner's children to `desired`, given the `observed` children (from the watch)."""
    result = ApplyResult()
    for obj in desired:
        api_version, kind, name = key(obj)
        label = f"{kind}/{name}"
        current = observed.get(key(obj))
        try:
            if current is None:
                written = api.create(obj)  # an existing object (409) comes back as it is
                if not owned_by(written, owner_uid):
                    result.conflicts.append(label)
                    continue
                if is_subset(obj, written):
                    result.created.append(label)
                    continue
            elif not owned_by(current, owner_uid):
                result.conflicts.append(label)
                continue
            elif is_subset(obj, current):
                continue
            if _releases_replicas(obj, current):
                _hand_over_replicas(api, obj, current)
            api.apply(obj)
            result.updated.append(label)
        except RouteApiUnavailable:
            result.unavailable.append(f"{kind}.{api_version}")
        except REFUSALS as exc:  # RBAC, admission or a webhook: not transient, and not the other children's business
            result.refused.append(f"{label} ({exc.status} {exc.reason}: {_message(exc)})")
    wanted = {key(obj) for obj in desired}
    for child_key, current in observed.items():
        if child_key not in wanted and owned_by(current, owner_uid):
            api_version, kind, name = child_key
            try:
                api.delete(api_version, kind, current["metadata"].get("namespace"), name)
            except RouteApiUnavailable:
                continue  # the kind went away with its CRD, and the child with it
            result.deleted.append(f"{kind}/{name}")
    return result
