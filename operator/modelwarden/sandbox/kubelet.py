"""The sandbox's kubelet: real `modelwarden serve` processes for the Deployments the operator creates.

The API emulator runs no controllers. This loop plays the deployment controller and kubelet for
model-server Deployments: one local server process per Deployment with replicas > 0 (one
process stands for all its replicas), restarted when its pod template's model changes (version,
URI, checksum, store credentials' Secret), stopped when the Deployment scales to zero or goes
away; Deployment status reports it ready; Prometheus scrapes every process.

A model the pods fetch (the template has the operator's `fetch-model` init container) is fetched
for real first, by the same command with the environment a kubelet would give it (sandbox/fetcher.py),
into a directory of the Deployment's under `log_dir`; the server then reads it there. A rollout
whose fetch fails behaves like a stuck rolling update: the old process keeps serving, the
Deployment status counts no updated replica, the fetch is retried with back-off (at once when the
template changes again), and the failure shows in the Pod status where the operator reads it —
the pods of the template's version get the init container's terminated state, and when no
controller made pods (the emulator, the demo's control plane) the kubelet makes one,
`<deployment>-fetch`, and removes it once the rollout goes through.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from modelwarden.builders.workloads import MODEL_DIR, PAIRED_FETCH_CONTAINER
from modelwarden.contract import environment
from modelwarden.contract.kubernetes import INSTANCE_LABEL
from modelwarden.sandbox.fetcher import (
    ContainerConfigError,
    FetchOutcome,
    container_env,
    fetch_container,
    fetch_failed_status,
    local_path,
    run_fetch,
    shows_failure,
)
from modelwarden.sandbox.modelserver import ModelServerProcess
from modelwarden.sandbox.prometheus import PrometheusServer

log = logging.getLogger(__name__)
MANAGED = "app.kubernetes.io/managed-by=modelwarden"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


@dataclass(frozen=True)
class PodSpec:
    """What a model-server Deployment asks to run, from its pod template: the server's env and, for
    a fetched model, the fetch-model init container whole (canonical JSON: the URI, checksum, size
    limit and store Secret are all in it), so that a change of any of them restarts the process."""

    model: str
    version: str
    track: str
    model_path: Path  # a local model; for a fetched one, where the server reads it in the pod (MODEL_PATH)
    fetch: str | None = None
    paired: "PodSpec | None" = None  # the stable's model beside a shadow's (pairWithStable): path and fetch alike

    @classmethod
    def from_deployment(cls, deployment: dict[str, Any]) -> "PodSpec":
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value", "") for e in pod["containers"][0].get("env", [])}
        named = {"model": env["MODEL_NAME"], "track": env["MODEL_TRACK"]}
        paired = None
        if environment.PAIRED_MODEL_VERSION in env:
            init = fetch_container(pod, PAIRED_FETCH_CONTAINER)
            paired = cls(**named, version=env[environment.PAIRED_MODEL_VERSION],
                         model_path=Path(env.get(environment.PAIRED_MODEL_PATH) or _local(env.get(environment.PAIRED_MODEL_URI, ""))),
                         fetch=json.dumps(init, sort_keys=True) if init is not None else None)
        init = fetch_container(pod)
        if init is not None:
            return cls(**named, version=env["MODEL_VERSION"], model_path=Path(env.get("MODEL_PATH") or MODEL_DIR),
                       fetch=json.dumps(init, sort_keys=True), paired=paired)
        return cls(**named, version=env["MODEL_VERSION"], model_path=_local(env["MODEL_URI"]), paired=paired)

    @property
    def fetch_container(self) -> dict[str, Any]:
        assert self.fetch is not None
        return json.loads(self.fetch)

    @property
    def uri(self) -> str:
        return self.fetch_container["args"][1] if self.fetch else str(self.model_path)


def _local(uri: str) -> Path:
    return Path(urlparse(uri).path) if uri.startswith("file://") else Path(uri)


@dataclass(frozen=True)
class FetchFailure:
    """A template the kubelet could not roll out; retried at `retry_at` (time.monotonic()) or when
    the template changes. `on_pods`: a fetch failure, shown in Pod status (not a server that
    failed to start)."""

    spec: PodSpec
    outcome: FetchOutcome
    attempts: int
    retry_at: float
    on_pods: bool = True


@dataclass(frozen=True)
class FetchRecord:
    """One fetch the kubelet ran, in order (the demo's summary and the tests read them)."""

    namespace: str
    deployment: str
    version: str
    uri: str
    ok: bool
    message: str


class ProcessKubelet:
    def __init__(self, api_url: str, prometheus: PrometheusServer, log_dir: Path, interval: float = 0.5,
                 session: requests.Session | None = None, fetch_backoff: float = 5.0, fetch_backoff_max: float = 60.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.prometheus = prometheus
        self.log_dir = log_dir
        self.interval = interval
        self.fetch_backoff, self.fetch_backoff_max = fetch_backoff, fetch_backoff_max
        self.processes: dict[tuple[str, str], tuple[PodSpec, ModelServerProcess]] = {}
        self.failures: dict[tuple[str, str], FetchFailure] = {}
        self.fetches: list[FetchRecord] = []
        self.errors: list[str] = []
        self._models: dict[tuple[str, str], list[Path]] = {}  # the fetched models each running process serves
        self._numbers = itertools.count(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-kubelet", daemon=True)
        self._session = session or requests.Session()  # a real API server's: with the admin's certificate

    def start(self) -> "ProcessKubelet":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # sync() may also be driven by hand, without the thread
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
            if key not in wanted:
                self._stop_process(key)
        for key in list(self.failures):
            if key not in wanted:
                self._forget_failure(key)
        for key, (deployment, spec) in wanted.items():
            if self._stop.is_set():
                return
            running = self.processes.get(key)
            if running is not None and running[0] == spec:
                self._forget_failure(key)  # e.g. the template went back to what runs
                continue
            failure = self.failures.get(key)
            if failure is not None and failure.spec == spec and time.monotonic() < failure.retry_at:
                continue  # backing off; a changed template is tried at once
            self._roll_out(key, deployment, spec, failure)
        if self._stop.is_set():
            return
        for key, failure in list(self.failures.items()):
            if failure.on_pods and key in wanted:
                self._show_failure(wanted[key][0], failure)
        self.prometheus.set_targets([(process.address, {"namespace": key[0]}) for key, (_, process) in self.processes.items()])
        for deployment in deployments:
            meta = deployment["metadata"]
            key = (meta["namespace"], meta["name"])
            self._report_status(deployment, wanted[key][1] if key in wanted else None)

    # -- rolling out a template -----------------------------------------------------------------
    def _roll_out(self, key: tuple[str, str], deployment: dict[str, Any], spec: PodSpec,
                  previous: FetchFailure | None) -> None:
        """Fetch (if the model is fetched), start the new server, then stop the old one: on any
        failure the old one keeps serving, as the old ReplicaSet's pods would."""
        attempts = previous.attempts + 1 if previous is not None and previous.spec == spec else 1
        fetched: list[Path] = []
        paths = []
        for part in (spec, spec.paired):
            if part is None:
                continue
            if part.fetch is None:
                paths.append(part.model_path)
                continue
            outcome, directory = self._fetch(key, part)
            outcome = dataclasses.replace(outcome, container=part.fetch_container["name"])
            if directory is None:
                for done in fetched:
                    shutil.rmtree(done, ignore_errors=True)
                self._fail(key, spec, outcome, attempts)
                return
            fetched.append(directory)
            paths.append(local_path(str(part.model_path), part.fetch_container, directory))
        process = ModelServerProcess(paths[0], spec.model, version=spec.version, track=spec.track,
                                     paired_model=paths[1] if spec.paired else None,
                                     paired_version=spec.paired.version if spec.paired else "unknown",
                                     extra_args=("--prediction-log", "off"),
                                     log_file=self.log_dir / f"{key[0]}-{key[1]}-{spec.version}.log")
        try:
            process.start()
        except (RuntimeError, TimeoutError) as exc:
            self.errors.append(f"{key[1]}: {exc}")
            for done in fetched:
                shutil.rmtree(done, ignore_errors=True)
            self._fail(key, spec, FetchOutcome(False, str(exc), 1, "Error"), attempts, on_pods=False)
            return
        old, old_models = self.processes.get(key), self._models.pop(key, [])
        self.processes[key] = (spec, process)  # traffic moves over before the old one stops
        if fetched:
            self._models[key] = fetched
        if old is not None:
            old[1].stop()
        for old_model in old_models:
            shutil.rmtree(old_model, ignore_errors=True)
        self._forget_failure(key)

    def _fetch(self, key: tuple[str, str], spec: PodSpec) -> tuple[FetchOutcome, Path | None]:
        """Run the init container's command into a fresh directory; (outcome, the directory if it worked)."""
        namespace, name = key
        container = spec.fetch_container
        try:
            env = container_env(container, lambda plural, obj: self._get(f"/api/v1/namespaces/{namespace}/{plural}/{obj}"),
                                namespace, f"{name}-fetch")
        except ContainerConfigError as error:
            outcome = FetchOutcome.config_error(error)
            self.fetches.append(FetchRecord(namespace, name, spec.version, spec.uri, False, outcome.message))
            return outcome, None
        dest = self.log_dir / "fetched" / f"{namespace}-{name}-{spec.version}-{next(self._numbers)}"
        outcome = run_fetch(container, env, dest, log_file=self.log_dir / f"{namespace}-{name}-{spec.version}-fetch.log",
                            cancelled=self._stop.is_set)
        self.fetches.append(FetchRecord(namespace, name, spec.version, spec.uri, outcome.ok, outcome.message))
        if not outcome.ok:
            shutil.rmtree(dest, ignore_errors=True)
            return outcome, None
        return outcome, dest

    def _fail(self, key: tuple[str, str], spec: PodSpec, outcome: FetchOutcome, attempts: int, on_pods: bool = True) -> None:
        delay = min(self.fetch_backoff * 2 ** (attempts - 1), self.fetch_backoff_max)
        log.info("%s/%s: version %s not rolled out (attempt %d, next in %.0fs): %s",
                 *key, spec.version, attempts, delay, outcome.message)
        self.failures[key] = FetchFailure(spec, outcome, attempts, time.monotonic() + delay, on_pods)

    def _stop_process(self, key: tuple[str, str]) -> None:
        entry = self.processes.pop(key, None)
        if entry is not None:
            entry[1].stop()
        for model in self._models.pop(key, []):
            shutil.rmtree(model, ignore_errors=True)

    # -- the failure in Pod status ----------------------------------------------------------------
    def _show_failure(self, deployment: dict[str, Any], failure: FetchFailure) -> None:
        """The init container's failure on the pods of the template's version (the operator lists
        them by these labels), on a pod of our own when no controller made any."""
        meta, template = deployment["metadata"], deployment["spec"]["template"]
        labels = template.get("metadata", {}).get("labels", {})
        selector = ",".join(f"{k}={labels[k]}" for k in (INSTANCE_LABEL, "track", "version") if k in labels)
        listing = self._get(f"/api/v1/namespaces/{meta['namespace']}/pods", labelSelector=selector) or {}
        pods = [p for p in listing.get("items", []) if not p["metadata"].get("deletionTimestamp")]
        if not pods:
            own = self._own_pod(deployment)
            pods = [own] if own else []
        status = fetch_failed_status(template["spec"], failure.outcome, restarts=failure.attempts - 1)
        for pod in pods:
            if shows_failure(pod, failure.outcome, failure.attempts - 1):
                continue
            url = f"{self.api_url}/api/v1/namespaces/{meta['namespace']}/pods/{pod['metadata']['name']}/status"
            response = self._session.patch(url, json={"status": status}, headers=MERGE_PATCH, timeout=5)
            if not response.ok:
                log.debug("pod status of %s: %s %s", pod["metadata"]["name"], response.status_code, response.text[:300])

    def _own_pod(self, deployment: dict[str, Any]) -> dict[str, Any] | None:
        """`<deployment>-fetch`, a Pod of the Deployment's current template (remade when the
        template's labels change), owned by the Deployment so garbage collection removes it too."""
        meta, template = deployment["metadata"], deployment["spec"]["template"]
        name, namespace = f"{meta['name']}-fetch", meta["namespace"]
        labels = template.get("metadata", {}).get("labels", {})
        existing = self._get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        if existing is not None and existing["metadata"].get("labels") == labels:
            return existing
        if existing is not None:
            self._session.delete(f"{self.api_url}/api/v1/namespaces/{namespace}/pods/{name}", timeout=5)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "labels": labels,
                            "annotations": {"modelwarden.io/made-by": "sandbox-kubelet"},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                                 "uid": meta["uid"]}]},
               "spec": template["spec"]}
        response = self._session.post(f"{self.api_url}/api/v1/namespaces/{namespace}/pods", json=pod, timeout=5)
        if not response.ok:
            log.debug("pod %s: %s %s", name, response.status_code, response.text[:300])
            return None
        return response.json()

    def _forget_failure(self, key: tuple[str, str]) -> None:
        failure = self.failures.pop(key, None)
        if failure is not None and failure.on_pods:
            self._session.delete(f"{self.api_url}/api/v1/namespaces/{key[0]}/pods/{key[1]}-fetch", timeout=5)

    def _get(self, path: str, **params: str) -> dict[str, Any] | None:
        response = self._session.get(f"{self.api_url}{path}", params=params or None, timeout=5)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    # -- Deployment status ------------------------------------------------------------------------
    def _report_status(self, deployment: dict[str, Any], spec: PodSpec | None) -> None:
        """Ready and updated while the process runs the current template. While a rollout is stuck
        the old process's replicas stay ready, fewer the maxUnavailable (25%, rounded down) the
        deployment controller scales the old ReplicaSet down by, and none is updated."""
        meta = deployment["metadata"]
        replicas = deployment["spec"].get("replicas", 1)
        running = self.processes.get((meta["namespace"], meta["name"]))
        if running is None or spec is None:
            ready = updated = 0
        elif running[0] == spec:
            ready = updated = replicas
        else:
            ready, updated = replicas - replicas // 4, 0
        wanted = {"observedGeneration": meta.get("generation", 1), "replicas": replicas,
                  "readyReplicas": ready, "updatedReplicas": updated, "availableReplicas": ready}
        if {k: (deployment.get("status") or {}).get(k) for k in wanted} != wanted:
            url = f"{self.api_url}/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}/status"
            self._session.patch(url, json={"status": wanted}, headers=MERGE_PATCH, timeout=5)
