"""Istio: one VirtualService with weighted routes and mirror/mirrorPercentage for the shadow."""

from __future__ import annotations

from typing import Any

from modelwarden.builders.workloads import MANAGED_BY, selector, track_name
from modelwarden.routers.base import ObservedServing, RouteContext, Routing, Split, find_route, weight_of

API_VERSION = "networking.istio.io/v1"


class IstioRouter:
    kind = "istio"

    def route(self, context: RouteContext) -> Routing:
        owner, split = context.owner, context.split
        settings = context.traffic.istio

        def destination(track: str) -> dict[str, Any]:
            return {"host": track_name(owner, track), "port": {"number": context.port}}

        routes = [{"destination": destination("stable"), "weight": split.stable}]
        if context.has_canary:
            routes.append({"destination": destination("canary"), "weight": split.canary})
        http: dict[str, Any] = {"name": "model", "route": routes}
        if context.has_shadow and split.mirror > 0:
            http["mirror"] = destination("shadow")
            http["mirrorPercentage"] = {"value": float(split.mirror)}
        spec: dict[str, Any] = {"hosts": (settings.hosts if settings and settings.hosts else [owner.name]), "http": [http]}
        if settings and settings.gateways:
            spec["gateways"] = settings.gateways
        service = {
            "apiVersion": API_VERSION,
            "kind": "VirtualService",
            "metadata": {
                "name": owner.name,
                "namespace": owner.namespace,
                "labels": {**MANAGED_BY, **selector(owner), "model": owner.model},
                "ownerReferences": [owner.reference()],
            },
            "spec": spec,
        }
        return Routing(objects=[service], replicas=dict(context.replicas), effective=split)

    def observe(self, context: RouteContext, observed: ObservedServing) -> Split | None:
        service = find_route(observed, API_VERSION, "VirtualService", context.owner.name)
        http = ((service or {}).get("spec") or {}).get("http") or []
        if not http:
            return None
        weights = {r.get("destination", {}).get("host"): int(r.get("weight") or 0) for r in http[0].get("route") or []}
        mirror = http[0].get("mirrorPercentage", {}).get("value", 0) if http[0].get("mirror") else 0
        name = context.owner.name
        return Split(stable=weight_of(weights, name, "stable"), canary=weight_of(weights, name, "canary"), mirror=round(mirror))
