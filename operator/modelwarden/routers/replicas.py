"""No mesh: the front Service selects every serving pod, so the split follows the replica ratio.

The stable track's spec replicas are the total serving capacity T; a canary at weight w gets
max(1, round(T * w / 100)) replicas and the stable track the rest (at least 1). The effective
weight is the resulting pod ratio, reported in status; mirroring is impossible without a proxy.

A track whose Deployment an HPA scales keeps the replicas the HPA gives it: the router sizes only
the other track, and reports the weight that ratio really gives.
"""

from __future__ import annotations

from modelwarden.routers.base import ObservedServing, RouteContext, Routing, Split


class ReplicaRatioRouter:
    kind = "replicas"

    def route(self, context: RouteContext) -> Routing:
        replicas = dict(context.replicas)
        split, fixed = context.split, context.fixed
        total = max(1, replicas.get("stable", 1))
        if context.has_canary and split.canary > 0:
            if "canary" not in fixed:
                if "stable" in fixed:  # the HPA sizes stable: add canary pods for the weight on top of it
                    share = min(split.canary, 99) / 100
                    replicas["canary"] = max(1, round(replicas.get("stable", 0) * share / (1 - share)))
                else:
                    replicas["canary"] = total if split.canary >= 100 else max(1, round(total * split.canary / 100))
            if "stable" not in fixed:
                replicas["stable"] = 0 if split.canary >= 100 else max(1, total - replicas["canary"])
        elif context.has_canary and "canary" not in fixed:
            replicas["canary"] = 0
        canary = replicas.get("canary", 0) if context.has_canary else 0
        serving = replicas.get("stable", 0) + canary
        canary_percent = round(100 * canary / serving) if serving else 0
        effective = Split(stable=100 - canary_percent, canary=canary_percent, mirror=0)
        notes = []
        if canary and canary_percent != split.canary:
            notes.append(f"weights approximated by replica ratio: canary {canary_percent}% for {split.canary}% requested")
        if fixed:
            notes.append(f"replicas of {', '.join(sorted(fixed))} set by a HorizontalPodAutoscaler")
        if context.has_shadow and split.mirror > 0:
            notes.append("mirroring is unsupported by the replicas router: the shadow receives no traffic")
        return Routing(objects=[], replicas=replicas, effective=effective, note="; ".join(notes),
                       mirroring_supported=not (context.has_shadow and split.mirror > 0))

    def observe(self, context: RouteContext, observed: ObservedServing) -> Split | None:
        stable = observed.ready_replicas.get("stable", 0)
        canary = observed.ready_replicas.get("canary", 0) if context.has_canary else 0
        if stable + canary == 0:
            return None
        canary_percent = round(100 * canary / (stable + canary))
        return Split(stable=100 - canary_percent, canary=canary_percent, mirror=0)
