"""What every handler shares (kopf's memo), typed: the config, the API client, the write fence,
the wake-ups and the long-lived clients."""

from __future__ import annotations

import asyncio

import kopf

from modelwarden.controller.config import OperatorConfig
from modelwarden.controller.gatecalls import GateCaller
from modelwarden.controller.podmonitors import PodMonitorSupport
from modelwarden.controller.policyloop import PolicyLoop
from modelwarden.controller.resolution import Resolver
from modelwarden.kube.api import KubeApi
from modelwarden.kube.fence import WriteFence
from modelwarden.prometheus.client import ProviderPool


class Wakeups:
    """One asyncio.Event per ModelDeployment: set by watch handlers to run its reconcile now."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def event(self, key: tuple[str, str]) -> asyncio.Event:
        return self._events.setdefault(key, asyncio.Event())

    def wake(self, key: tuple[str, str]) -> None:
        found = self._events.get(key)
        if found is not None:
            found.set()

    def forget(self, key: tuple[str, str]) -> None:
        self._events.pop(key, None)


class Memo(kopf.Memo):
    """Operator-wide state shared by handlers (kopf copies it per resource object, shallowly)."""

    config: OperatorConfig
    kube: KubeApi
    fence: WriteFence  # our last status write per object: older views are stale
    wakeups: Wakeups  # run a ModelDeployment's reconcile now
    pod_monitors: PodMonitorSupport  # whether ModelDeployments get a PodMonitor
    prometheus: ProviderPool  # Prometheus clients kept across evaluations (keep-alive connections)
    policy_loop: PolicyLoop  # every DriftPolicy the scheduler runs, and the scheduler
    resolver: Resolver  # MLflow aliases of ModelDeployments, looked up every resolveInterval
    gates: GateCaller  # asks the webhook gates of canaries that wait for them
