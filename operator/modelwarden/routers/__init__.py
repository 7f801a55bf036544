"""Traffic routers: one file each, chosen by spec.traffic.router."""

from modelwarden.routers.base import RouteContext, Routing, Split, TrafficRouter
from modelwarden.routers.gatewayapi import GatewayApiRouter
from modelwarden.routers.istio import IstioRouter
from modelwarden.routers.replicas import ReplicaRatioRouter

ROUTERS: dict[str, TrafficRouter] = {r.kind: r for r in (GatewayApiRouter(), IstioRouter(), ReplicaRatioRouter())}

# Route object kinds any router may own; the apply layer prunes the ones no longer desired.
ROUTE_KINDS = (("gateway.networking.k8s.io/v1", "HTTPRoute"), ("networking.istio.io/v1", "VirtualService"))


def get_router(kind: str) -> TrafficRouter:
    return ROUTERS[kind]


__all__ = ["ROUTERS", "ROUTE_KINDS", "RouteContext", "Routing", "Split", "TrafficRouter", "get_router"]
