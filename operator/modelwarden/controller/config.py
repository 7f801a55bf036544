"""Operator-wide configuration, from command-line flags and environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
DEFAULT_IMAGE = "ghcr.io/modelwarden/modelwarden:0.1.0"
RECONCILE_INTERVAL_ENV = "MODELWARDEN_RECONCILE_INTERVAL"
POLICY_TICK_ENV = "MODELWARDEN_POLICY_TICK"
METRICS_PORT_ENV = "MODELWARDEN_METRICS_PORT"
DEFAULT_METRICS_PORT = 8082
POD_MONITORS_ENV = "MODELWARDEN_POD_MONITORS"
POD_MONITOR_MODES = ("auto", "off")  # auto: a PodMonitor per ModelDeployment when the cluster serves the kind


def reconcile_interval() -> float:
    """Seconds between level-triggered reconciles (kopf timers are declared at import time)."""
    return float(os.environ.get(RECONCILE_INTERVAL_ENV, "5"))


def policy_tick() -> float:
    """Seconds between checks of whether a DriftPolicy is due (evaluations follow spec.interval)."""
    return float(os.environ.get(POLICY_TICK_ENV, "1"))


DEFAULT_NAMESPACE_LABEL = "namespace"


@dataclass(frozen=True)
class OperatorConfig:
    """What `modelwarden run` was told; handlers read it from kopf's memo."""

    namespaces: tuple[str, ...] = ()
    prometheus_url: str = DEFAULT_PROMETHEUS_URL
    namespace_label: str = DEFAULT_NAMESPACE_LABEL  # "" matches no namespace label
    peering_name: str | None = None
    liveness_endpoint: str | None = None
    metrics_port: int | None = DEFAULT_METRICS_PORT  # None or 0: no /metrics server
    default_image: str = DEFAULT_IMAGE
    labels: dict[str, str] = field(default_factory=dict)
    pod_monitors: str = "auto"  # one of POD_MONITOR_MODES
    pod_monitor_labels: dict[str, str] = field(default_factory=dict)  # extra labels on every PodMonitor

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def standalone(self) -> bool:
        return self.peering_name is None


def env_list(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in os.environ.get(name, "").split(",") if part.strip())
