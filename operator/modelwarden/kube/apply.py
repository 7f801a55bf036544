"""Apply desired children: create if missing, patch only what differs, never touch what is not ours."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from modelwarden.kube.api import KubeApi, RouteApiUnavailable


def is_subset(desired: Any, current: Any) -> bool:
    """Whether every field we set already has our value (fields the server added are ignored)."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(is_subset(v, current.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(current, list) and len(desired) == len(current) and all(
            is_subset(d, c) for d, c in zip(desired, current)
        )
    return desired == current


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # same name, someone else's object: left alone
    unavailable: list[str] = field(default_factory=list)  # kinds the cluster does not serve

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def apply_children(
    api: KubeApi, desired: list[dict[str, Any]], owner_uid: str, namespace: str, selector: str,
    prunable_kinds: Iterable[tuple[str, str]],
) -> ApplyResult:
    """Converge the owner's children to `desired`; prune owned objects of `prunable_kinds` not desired."""
    result = ApplyResult()
    for obj in desired:
        api_version, kind, name = key(obj)
        label = f"{kind}/{name}"
        try:
            current = api.get(api_version, kind, namespace, name)
        except RouteApiUnavailable:
            result.unavailable.append(f"{kind}.{api_version}")
            continue
        if current is None:
            api.create(obj)
            result.created.append(label)
        elif not owned_by(current, owner_uid):
            result.conflicts.append(label)
        elif not is_subset(obj, current):
            patch = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
            if api.patch(api_version, kind, namespace, name, patch) is None:
                api.create(obj)  # deleted between our read and our write
            result.updated.append(label)
    wanted = {key(obj) for obj in desired}
    for api_version, kind in prunable_kinds:
        if not api.serves(api_version, kind):
            continue
        for current in api.list(api_version, kind, namespace, selector):
            if key({**current, "apiVersion": api_version, "kind": kind}) not in wanted and owned_by(current, owner_uid):
                api.delete(api_version, kind, namespace, current["metadata"]["name"])
                result.deleted.append(f"{kind}/{current['metadata']['name']}")
    return result
