"""The traffic-router seam: how a weight split and mirroring become Kubernetes objects.

Routers are pure: they say which route objects to apply and how many replicas each track needs;
the apply layer writes them and prunes the route objects of other routers ("finalize").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from modelwarden.api.modeldeployment import TrafficSpec
from modelwarden.builders.workloads import Owner


@dataclass(frozen=True)
class Split:
    """Percent of user traffic per serving track, and percent of requests mirrored to the shadow."""

    stable: int = 100
    canary: int = 0
    mirror: int = 0


@dataclass(frozen=True)
class RouteContext:
    owner: Owner
    port: int
    traffic: TrafficSpec
    split: Split
    has_canary: bool  # a canary Deployment/Service exists (possibly at weight 0)
    has_shadow: bool
    replicas: dict[str, int] = field(default_factory=dict)  # spec replicas per track
    fixed: frozenset[str] = frozenset()  # tracks whose replicas someone else sets (an HPA): never changed


@dataclass(frozen=True)
class Routing:
    """What a router wants applied."""

    objects: list[dict[str, Any]]
    replicas: dict[str, int]  # replicas per track that realise the split
    effective: Split  # the split users actually get
    note: str = ""  # a caveat for status (e.g. weights approximated, mirroring unsupported)
    mirroring_supported: bool = True


@dataclass(frozen=True)
class ObservedServing:
    """What the cluster shows right now: this router's route objects and ready pods per track."""

    routes: tuple[dict[str, Any], ...] = ()
    ready_replicas: dict[str, int] = field(default_factory=dict)  # per track, pods of the desired version only


class TrafficRouter(Protocol):
    kind: str

    def route(self, context: RouteContext) -> Routing: ...

    def observe(self, context: RouteContext, observed: ObservedServing) -> Split | None:
        """The split users get now, read back from the cluster (None: not applied/observable yet)."""
        ...


def find_route(observed: ObservedServing, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
    return next((r for r in observed.routes if r.get("apiVersion") == api_version and r.get("kind") == kind
                 and r.get("metadata", {}).get("name") == name), None)


def weight_of(weights: dict[str, int], owner_name: str, track: str) -> int:
    return weights.get(f"{owner_name}-{track}", 0)
