"""Gateway API: one HTTPRoute with weighted backendRefs and a RequestMirror filter for the shadow."""

from __future__ import annotations

from typing import Any

from modelwarden.builders.workloads import MANAGED_BY, selector, track_name
from modelwarden.routers.base import ObservedServing, RouteContext, Routing, Split, find_route, weight_of

API_VERSION = "gateway.networking.k8s.io/v1"


class GatewayApiRouter:
    kind = "gatewayapi"

    def route(self, context: RouteContext) -> Routing:
        settings = context.traffic.gatewayapi
        assert settings is not None, "the CRD requires spec.traffic.gatewayapi for this router"
        owner, split = context.owner, context.split

        def backend(track: str, weight: int) -> dict[str, Any]:
            return {"group": "", "kind": "Service", "name": track_name(owner, track), "port": context.port, "weight": weight}

        backends = [backend("stable", split.stable)]
        if context.has_canary:
            backends.append(backend("canary", split.canary))
        rule: dict[str, Any] = {
            "matches": [{"path": {"type": "PathPrefix", "value": settings.path_prefix}}],
            "backendRefs": backends,
        }
        if context.has_shadow and split.mirror > 0:
            rule["filters"] = [{
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"group": "", "kind": "Service", "name": track_name(owner, "shadow"), "port": context.port},
                    "percent": split.mirror,
                },
            }]
        parent_refs = [ref.to_wire() for ref in settings.parent_refs]
        route = {
            "apiVersion": API_VERSION,
            "kind": "HTTPRoute",
            "metadata": {
                "name": owner.name,
                "namespace": owner.namespace,
                "labels": {**MANAGED_BY, **selector(owner), "model": owner.model},
                "ownerReferences": [owner.reference()],
            },
            "spec": {"parentRefs": parent_refs, "rules": [rule], **({"hostnames": settings.hostnames} if settings.hostnames else {})},
        }
        return Routing(objects=[route], replicas=dict(context.replicas), effective=split)

    def observe(self, context: RouteContext, observed: ObservedServing) -> Split | None:
        route = find_route(observed, API_VERSION, "HTTPRoute", context.owner.name)
        rules = ((route or {}).get("spec") or {}).get("rules") or []
        if not rules:
            return None
        weights = {b.get("name"): int(b.get("weight") or 0) for b in rules[0].get("backendRefs") or []}
        mirror = next((f["requestMirror"].get("percent", 100) for f in rules[0].get("filters") or []
                       if f.get("type") == "RequestMirror" and f.get("requestMirror")), 0)
        name = context.owner.name
        return Split(stable=weight_of(weights, name, "stable"), canary=weight_of(weights, name, "canary"), mirror=int(mirror))
