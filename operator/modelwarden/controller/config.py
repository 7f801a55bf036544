"""Operator-wide configuration, from command-line flags and environment variables."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import timedelta
from collections.abc import Mapping
from typing import Any

from modelwarden.contract.kubernetes import DEFAULT_IMAGE
from modelwarden.planning.egress import EgressRules

DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
RECONCILE_INTERVAL_ENV = "MODELWARDEN_RECONCILE_INTERVAL"
POLICY_TICK_ENV = "MODELWARDEN_POLICY_TICK"
POLICY_WORKERS_ENV = "MODELWARDEN_POLICY_WORKERS"
METRICS_PORT_ENV = "MODELWARDEN_METRICS_PORT"
DEFAULT_METRICS_PORT = 8082
METRICS_ADDRESS_ENV = "MODELWARDEN_METRICS_ADDRESS"
DEFAULT_METRICS_ADDRESS = "0.0.0.0"  # in a pod, Prometheus scrapes the pod IP: loopback would hide it
POD_MONITORS_ENV = "MODELWARDEN_POD_MONITORS"
SHARD_ENV = "MODELWARDEN_SHARD"
SELECTOR_ENV = "MODELWARDEN_SELECTOR"
ALLOWED_PROMETHEUS_URLS_ENV = "MODELWARDEN_ALLOWED_PROMETHEUS_URLS"
ALLOWED_ALERT_HOSTS_ENV = "MODELWARDEN_ALLOWED_ALERT_HOSTS"
RESTRICT_CUSTOM_QUERIES_ENV = "MODELWARDEN_RESTRICT_CUSTOM_QUERIES"
ALLOWED_REGISTRY_URLS_ENV = "MODELWARDEN_ALLOWED_REGISTRY_URLS"
SCRAPE_INTERVAL_ENV = "MODELWARDEN_SCRAPE_INTERVAL"
DEFAULT_SCRAPE_INTERVAL = timedelta(seconds=30)  # prometheus-operator's default for PodMonitors without an interval
POD_MONITOR_MODES = ("auto", "off")  # auto: a PodMonitor per ModelDeployment when the cluster serves the kind


def parse_shard(value: str) -> tuple[int, int] | None:
    """"I/N" (this process owns shard I of N, 0 <= I < N) or "" (every object)."""
    if not value:
        return None
    index, sep, count = value.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise ValueError(f"{value!r} is not a shard I/N with 0 <= I < N")
    return int(index), int(count)


def shard_of(uid: str, shards: int) -> int:
    """The shard of an object: jump consistent hash (Lamping & Veach) of its uid, so going from N
    to N+1 shards moves only about 1/(N+1) of the objects."""
    key = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big")
    bucket, jump = -1, 0
    while jump < shards:
        bucket = jump
        key = (key * 2862933555777941757 + 1) % (1 << 64)
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


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
    metrics_address: str = DEFAULT_METRICS_ADDRESS  # the /metrics server's bind address (--metrics-address)
    default_image: str = DEFAULT_IMAGE
    labels: dict[str, str] = field(default_factory=dict)
    pod_monitors: str = "auto"  # one of POD_MONITOR_MODES
    pod_monitor_labels: dict[str, str] = field(default_factory=dict)  # extra labels on every PodMonitor
    reconcile_interval: float = 5.0  # seconds between level-triggered reconciles of a ModelDeployment
    policy_tick: float = 30.0  # the longest a DriftPolicy goes without a tick (watch events and due evaluations come sooner)
    scrape_interval: timedelta = DEFAULT_SCRAPE_INTERVAL  # how often Prometheus scrapes the model servers (--scrape-interval)
    policy_workers: int = 8  # DriftPolicy ticks running at once (back-pressure: beyond it, evaluations run late)
    shard: tuple[int, int] | None = None  # (I, N): own only shard I of N (--shard); None: every object
    selector: dict[str, str | None] = field(default_factory=dict)  # own only objects with these labels (None: any value)
    egress: EgressRules = field(default_factory=EgressRules)  # where policies may send queries and alerts
    restrict_custom_queries: bool = True  # custom checks may only select their policy's namespace (--restrict-custom-queries)
    mlflow_tracking_uri: str | None = None  # resolves models:/ and runs:/ URIs of ModelDeployments without their own (--mlflow-tracking-uri)
    mlflow_tracking_token: str | None = field(default=None, repr=False)  # from MLFLOW_TRACKING_TOKEN only, never a flag

    def owns(self, uid: str = "", labels: Mapping[str, str] | None = None, **_: Any) -> bool:
        """kopf `when=` filter: whether this operator process owns the object (--shard, --selector)."""
        labels = labels or {}
        if any(key not in labels or (value is not None and labels[key] != value) for key, value in self.selector.items()):
            return False
        return self.shard is None or shard_of(uid, self.shard[1]) == self.shard[0]

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def standalone(self) -> bool:
        return self.peering_name is None


def env_list(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in os.environ.get(name, "").split(",") if part.strip())
