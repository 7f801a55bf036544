"""Gateway API: one HTTPRoute with weighted backendRefs and a RequestMirror filter for the shadow."""

from __future__ import annotations

from typing import Any

from modelwarden.builders.workloads import MANAGED_BY, selector, track_name
from modelwarden.routers.base import RouteContext, Routing

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
