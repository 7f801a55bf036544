"""The sandbox's kubelet: real `modelwarden serve` processes for the Deployments the operator creates.

The API emulator runs no controllers. This loop plays the deployment controller and kubelet for
model-server Deployments: one local server process per Deployment with replicas > 0 (one
process stands for all its replicas), restarted when the version or model URI changes, stopped
when the Deployment scales to zero or goes away; Deployment status reports it ready; Prometheus
scrapes every process.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from modelwarden.sandbox.modelserver import ModelServerProcess
from modelwarden.sandbox.prometheus import PrometheusServer

log = logging.getLogger(__name__)
MANAGED = "app.kubernetes.io/managed-by=modelwarden"


@dataclass(frozen=True)
class PodSpec:
    """What a model-server Deployment asks to run, from its pod template's env."""

    model: str
    version: str
    track: str
    model_path: Path

    @classmethod
    def from_deployment(cls, deployment: dict[str, Any]) -> "PodSpec":
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        uri = env["MODEL_URI"]
        path = Path(urlparse(uri).path) if uri.startswith("file://") else Path(uri)
        return cls(model=env["MODEL_NAME"], version=env["MODEL_VERSION"], track=env["MODEL_TRACK"], model_path=path)


class ProcessKubelet:
    def __init__(self, api_url: str, prometheus: PrometheusServer, log_dir: Path, interval: float = 0.5,
                 session: requests.Session | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.prometheus = prometheus
        self.log_dir = log_dir
        self.interval = interval
        self.processes: dict[tuple[str, str], tuple[PodSpec, ModelServerProcess]] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-kubelet", daemon=True)
        self._session = session or requests.Session()  # a real API server's: with the admin's certificate

    def start(self) -> "ProcessKubelet":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        for _, process in self.processes.values():
            process.stop()
        self.processes.clear()

    def server_for(self, namespace: str, name: str) -> ModelServerProcess | None:
        entry = self.processes.get((namespace, name))
        return entry[1] if entry else None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except requests.RequestException as exc:
                log.debug("kubelet sync failed: %s", exc)

    def sync(self) -> None:
        listing = self._session.get(f"{self.api_url}/apis/apps/v1/deployments", params={"labelSelector": MANAGED}, timeout=5)
        deployments = listing.json().get("items", [])
        wanted: dict[tuple[str, str], tuple[dict[str, Any], PodSpec]] = {}
        for deployment in deployments:
            meta = deployment["metadata"]
            if deployment["spec"].get("replicas", 1) > 0:
                wanted[(meta["namespace"], meta["name"])] = (deployment, PodSpec.from_deployment(deployment))
        for key in list(self.processes):
            spec, process = self.processes[key]
            if key not in wanted or wanted[key][1] != spec:
                process.stop()
                del self.processes[key]
        for key, (_, spec) in wanted.items():
            if key not in self.processes:
                self._start(key, spec)
        self.prometheus.set_targets([(process.address, {"namespace": key[0]}) for key, (_, process) in self.processes.items()])
        for deployment in deployments:
            self._report_status(deployment)

    def _start(self, key: tuple[str, str], spec: PodSpec) -> None:
        process = ModelServerProcess(spec.model_path, spec.model, version=spec.version, track=spec.track,
                                     extra_args=("--prediction-log", "off"),
                                     log_file=self.log_dir / f"{key[0]}-{key[1]}-{spec.version}.log")
        try:
            process.start()
        except (RuntimeError, TimeoutError) as exc:
            self.errors.append(f"{key[1]}: {exc}")
            return
        self.processes[key] = (spec, process)

    def _report_status(self, deployment: dict[str, Any]) -> None:
        meta = deployment["metadata"]
        replicas = deployment["spec"].get("replicas", 1)
        running = (meta["namespace"], meta["name"]) in self.processes
        ready = replicas if running else 0
        wanted = {"observedGeneration": meta.get("generation", 1), "replicas": replicas,
                  "readyReplicas": ready, "updatedReplicas": ready, "availableReplicas": ready}
        if {k: (deployment.get("status") or {}).get(k) for k in wanted} != wanted:
            url = f"{self.api_url}/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}/status"
            self._session.patch(url, json={"status": wanted}, headers={"Content-Type": "application/merge-patch+json"}, timeout=5)
