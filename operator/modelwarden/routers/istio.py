"""Istio: one VirtualService with weighted routes and mirror/mirrorPercentage for the shadow."""

from __future__ import annotations

from typing import Any

from modelwarden.builders.workloads import MANAGED_BY, selector, track_name
from modelwarden.routers.base import RouteContext, Routing

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
