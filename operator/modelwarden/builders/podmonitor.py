"""Pure builder of a ModelDeployment's prometheus-operator PodMonitor: how kube-prometheus-stack
finds the model pods' metrics (it ignores the `prometheus.io/*` annotations the pods also carry).

The PodMonitor selects the model-server pods of every track of one ModelDeployment and scrapes
their port at /metrics. No relabelings and no `honorLabels`: the servers export `model`,
`version` and `track` themselves (docs/metrics.md), and Prometheus adds its own target labels
(`namespace`, `pod`, `container`, `endpoint`, `job`, `instance`), which the servers never export,
so nothing is renamed to `exported_*`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelwarden.builders.workloads import INSTANCE_LABEL, MANAGED_BY, Owner

API_VERSION = "monitoring.coreos.com/v1"
KIND = "PodMonitor"
TRACKS = ("canary", "shadow", "stable")
METRICS_PATH = "/metrics"


def metrics_port(template: dict[str, Any] | None, port: int) -> dict[str, Any]:
    """How the endpoint names the server's port: by name when the pod declares it with one (the
    operator adds it as `http` unless spec.template already declares the port), else by number."""
    containers = ((template or {}).get("spec") or {}).get("containers") or []
    declared = next((p for p in (containers[0].get("ports") or []) if p.get("containerPort") == port), None) if containers else None
    if declared is None:
        return {"port": "http"}
    if declared.get("name"):
        return {"port": declared["name"]}
    return {"portNumber": port}


def pod_monitor(owner: Owner, port: int, template: dict[str, Any] | None = None,
                extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The PodMonitor `<name>` in the ModelDeployment's namespace (the only namespace it selects in);
    ``extra_labels`` (e.g. ``release``) are how a Prometheus's podMonitorSelector finds it."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": owner.name,
            "namespace": owner.namespace,
            "labels": {**(extra_labels or {}), **MANAGED_BY, "app.kubernetes.io/name": owner.model[:63],
                       INSTANCE_LABEL: owner.name, "model": owner.model},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "selector": {
                "matchLabels": {INSTANCE_LABEL: owner.name},
                "matchExpressions": [{"key": "track", "operator": "In", "values": list(TRACKS)}],
            },
            "podMetricsEndpoints": [{**metrics_port(template, port), "path": METRICS_PATH}],
        },
    }
