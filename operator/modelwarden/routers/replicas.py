"""No mesh: the front Service selects every serving pod, so the split follows the replica ratio.

The stable track's spec replicas are the total serving capacity T; a canary at weight w gets
max(1, round(T * w / 100)) replicas and the stable track the rest (at least 1). The effective
weight is the resulting pod ratio, reported in status; mirroring is impossible without a proxy.
"""

from __future__ import annotations

from modelwarden.routers.base import RouteContext, Routing, Split


class ReplicaRatioRouter:
    kind = "replicas"

    def route(self, context: RouteContext) -> Routing:
        replicas = dict(context.replicas)
        split = context.split
        total = max(1, replicas.get("stable", 1))
        canary = 0
        if context.has_canary and split.canary > 0:
            canary = total if split.canary >= 100 else max(1, round(total * split.canary / 100))
            replicas["canary"] = canary
            replicas["stable"] = 0 if split.canary >= 100 else max(1, total - canary)
        elif context.has_canary:
            replicas["canary"] = 0
        serving = replicas.get("stable", 0) + canary
        canary_percent = round(100 * canary / serving) if serving else 0
        effective = Split(stable=100 - canary_percent, canary=canary_percent, mirror=0)
        notes = []
        if canary and canary_percent != split.canary:
            notes.append(f"weights approximated by replica ratio: canary {canary_percent}% for {split.canary}% requested")
        if context.has_shadow and split.mirror > 0:
            notes.append("mirroring is unsupported by the replicas router: the shadow receives no traffic")
        return Routing(objects=[], replicas=replicas, effective=effective, note="; ".join(notes),
                       mirroring_supported=not (context.has_shadow and split.mirror > 0))
