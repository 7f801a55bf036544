"""The cluster of the component and integration tiers: a real control plane per test.

Each test gets its own etcd + kube-apiserver + kube-controller-manager (about 6 s to start on
this machine, etcd's data in /dev/shm), so tests keep their namespaces and object names and
never see another test's objects or Events. Before the controller manager starts (its garbage
collector discovers resources once at start, then every 30 s) the cluster gets our CRDs, the
third-party CRDs of ../shared/schemas, the namespaces the examples use, and the Helm chart's
own ServiceAccount, ClusterRole and ClusterRoleBinding (`helm template` with default values).
The operator runs with that ServiceAccount's token, so a verb missing from the chart's RBAC is
a test failure.

There is no scheduler or kubelet: ``PodKubelet`` plays the kubelet's part for the Pods the real
Deployment, ReplicaSet and Job controllers create.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from tests.controlplane.support import KUBE_BIN, NAMESPACES, ROOT, SHARED_SCHEMAS, missing
from modelwarden.sandbox.controlplane_admin import crd_documents
from modelwarden.sandbox.fetcher import (
    ContainerConfigError,
    FetchOutcome,
    container_env,
    fetch_container,
    fetch_failed_status,
    init_statuses_completed,
    run_fetch,
    shows_failure,
)
from tests.kubeclient import KubeClient

RBAC_KINDS = {"ServiceAccount": "serviceaccounts", "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings"}


@functools.cache
def chart_rbac() -> tuple[dict[str, Any], ...]:
    """The chart's ServiceAccount and cluster RBAC, rendered once per session."""
    from tests.helm import template

    return tuple(doc for doc in template() if doc["kind"] in RBAC_KINDS)


class Cluster:
    """A started control plane set up as described above; ``stop()`` tears it down."""

    def __init__(self, workdir: Path, controllers: tuple[str, ...] | None = None) -> None:
        from modelwarden.sandbox.controlplane import ControlPlane
        from modelwarden.sandbox.controlplane_binaries import ControlPlaneNotInstalled

        self._etcd_dir = Path(tempfile.mkdtemp(prefix="mw-etcd-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        try:
            self.plane = ControlPlane(bin_dir=KUBE_BIN, workdir=workdir, with_controller_manager=False,
                                      etcd_data_dir=self._etcd_dir, **({"controllers": controllers} if controllers else {}))
        except ControlPlaneNotInstalled as error:
            shutil.rmtree(self._etcd_dir, ignore_errors=True)
            missing(str(error).split(";")[0])
        self.url = self.plane.url
        self.kube = KubeClient(self.url, self.plane.session())
        self.operator_kubeconfig: Path | None = None
        self.operator_token = ""
        self.kubeconfig_path = self.plane.kubeconfig_path

    def start(self) -> "Cluster":
        self.plane.start()
        self.url = self.plane.url  # a port taken meanwhile makes start() pick another
        self.kube = KubeClient(self.url, self.plane.session())
        try:
            self.plane.install_crds(crd_documents(ROOT / "crds", SHARED_SCHEMAS))
            for namespace in NAMESPACES:
                self.plane.create_namespace(namespace)
            self._install_chart_rbac()
            self.plane.start_controller_manager()
        except BaseException:
            self.plane.stop(keep=True)
            shutil.rmtree(self._etcd_dir, ignore_errors=True)  # RAM in /dev/shm; the logs stay in the workdir
            raise
        return self

    def _install_chart_rbac(self) -> None:
        from tests.helm import NAMESPACE

        self.plane.create_namespace(NAMESPACE)
        account = None
        for doc in chart_rbac():
            plural = RBAC_KINDS[doc["kind"]]
            if plural == "serviceaccounts":
                self.kube.create(plural, doc, namespace=NAMESPACE)
                account = doc["metadata"]["name"]
            else:
                self._create_cluster_scoped(plural, doc)
        assert account, "the chart renders no ServiceAccount"
        self.operator_token = self.plane.service_account_token(NAMESPACE, account, expiration_seconds=4 * 3600)
        self.operator_kubeconfig = self.plane.service_account_kubeconfig(
            NAMESPACE, account, self.plane.workdir / "operator.kubeconfig", expiration_seconds=4 * 3600)

    def _create_cluster_scoped(self, plural: str, doc: dict[str, Any]) -> None:
        response = self.kube.session.post(f"{self.url}/apis/rbac.authorization.k8s.io/v1/{plural}", json=doc, timeout=30)
        assert response.ok, f"{doc['kind']} {doc['metadata']['name']}: {response.status_code} {response.text[:300]}"

    def stop(self, keep: bool = False) -> None:
        self.plane.stop(keep=keep)
        shutil.rmtree(self._etcd_dir, ignore_errors=True)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodKubelet:
    """The kubelet's part for Pods that no node runs: a Pod of a ReplicaSet becomes Running and
    Ready (the real ReplicaSet and Deployment controllers then report the Deployment ready); a
    Pod of a Job stays Pending until the test decides the Job's fate with ``finish_job``, then
    it Succeeded or Failed (the real Job controller then completes or fails the Job).

    A Pod with the operator's storage initializer (the `fetch-model` init container) runs it for
    real first (sandbox/fetcher.py: the container's env, its Secrets read from the API, the real
    command into a temp dir): Running once it succeeded; Pending with the init container
    terminated and its termination message when it failed (never Running), retried after
    ``fetch_retry`` seconds like a restarted init container. Fetches run in a small pool, one per
    distinct command and environment (the pods of one template share it), so a test with many
    replicas fetches once."""

    def __init__(self, kube: KubeClient, interval: float = 0.25, fetch_workers: int = 2, fetch_retry: float = 10.0) -> None:
        self.kube, self.interval = kube, interval
        self.job_outcomes: dict[tuple[str, str], tuple[bool, str]] = {}  # (namespace, job) -> (succeeded, termination message)
        self.errors: list[str] = []
        self.fetches: list[tuple[str, str, bool, str]] = []  # (namespace/pod, URI, ok, message) per fetch run, in order
        self.fetch_retry = fetch_retry
        self._fetch_dir: Path | None = None
        self._pool = ThreadPoolExecutor(max_workers=fetch_workers, thread_name_prefix="pod-fetch")
        self._fetching: dict[str, Future[FetchOutcome]] = {}  # fetch identity -> the fetch under way
        self._done: dict[str, tuple[float, int, FetchOutcome]] = {}  # identity -> (when, attempts, last outcome)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-kubelet", daemon=True)

    def finish_job(self, name: str, succeeded: bool = True, namespace: str = "default", message: str = "") -> None:
        """The Job's pods end as told; `message` is their container's termination message (a retraining result)."""
        self.job_outcomes[(namespace, name)] = (succeeded, message)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except (requests.RequestException, KeyError, ValueError) as error:
                self.errors.append(repr(error))  # the control plane may be stopping

    def sync(self) -> None:
        for pod in self.kube.list("pods", namespace=None):
            meta, status = pod["metadata"], pod.get("status") or {}
            if meta.get("deletionTimestamp") or status.get("phase") in ("Running", "Succeeded", "Failed"):
                continue
            owner = next((o for o in meta.get("ownerReferences", []) if o.get("controller")), None)
            if owner is None:
                continue
            if owner["kind"] == "ReplicaSet":
                init = fetch_container(pod["spec"])
                if init is None:
                    self._set_status(pod, self._running(pod))
                else:
                    self._initialize(pod, init)
            elif owner["kind"] == "Job" and (meta["namespace"], owner["name"]) in self.job_outcomes:
                self._set_status(pod, self._terminated(pod, *self.job_outcomes[(meta["namespace"], owner["name"])]))

    def _set_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            self.kube.patch("pods", meta["name"], body, meta["namespace"], subresource="status")
        except requests.HTTPError as error:
            if error.response is None or error.response.status_code not in (404, 409):
                raise

    def _initialize(self, pod: dict[str, Any], init: dict[str, Any]) -> None:
        """Start the pod's fetch, or act on its outcome: Running, or the failure in its status."""
        meta = pod["metadata"]
        namespace = meta["namespace"]
        try:
            env = container_env(init, lambda plural, name: self.kube.get(plural, name, namespace), namespace, meta["name"])
        except ContainerConfigError as error:
            outcome, attempts = FetchOutcome.config_error(error), 1
        else:
            identity = hashlib.sha256(json.dumps([init.get("args"), sorted(env.items())]).encode()).hexdigest()
            fetching = self._fetching.get(identity)
            if fetching is not None:
                if not fetching.done():
                    return
                del self._fetching[identity]
                previous = self._done.get(identity)
                self._done[identity] = (time.monotonic(), (previous[1] if previous else 0) + 1, fetching.result())
            done = self._done.get(identity)
            if done is None or (not done[2].ok and time.monotonic() - done[0] >= self.fetch_retry):
                self._fetching[identity] = self._pool.submit(self._fetch, f"{namespace}/{meta['name']}", init, env, identity)
                if done is None:
                    return
            _, attempts, outcome = done
        if outcome.ok:
            running_status = self._running(pod)
            running_status["initContainerStatuses"] = init_statuses_completed(pod["spec"])
            self._set_status(pod, running_status)
        elif not shows_failure(pod, outcome, attempts - 1):
            self._set_status(pod, fetch_failed_status(pod["spec"], outcome, restarts=attempts - 1))

    def _fetch(self, pod: str, init: dict[str, Any], env: dict[str, str], identity: str) -> FetchOutcome:
        if self._fetch_dir is None:
            self._fetch_dir = Path(tempfile.mkdtemp(prefix="mw-pod-fetch-"))
        dest = self._fetch_dir / f"{identity[:16]}-{len(self.fetches)}"
        try:
            outcome = run_fetch(init, env, dest, cancelled=self._stop.is_set)
        except (OSError, ValueError) as error:
            outcome = FetchOutcome(False, f"fetch-model: {error}", 1, "Error")
        self.fetches.append((pod, init["args"][1], outcome.ok, outcome.message))
        shutil.rmtree(dest, ignore_errors=True)  # nothing serves it: only the outcome matters
        return outcome

    @staticmethod
    def _containers(pod: dict[str, Any], state: dict[str, Any], ready: bool) -> list[dict[str, Any]]:
        return [{"name": c["name"], "image": c["image"], "imageID": "", "ready": ready, "restartCount": 0, "state": state}
                for c in pod["spec"]["containers"]]

    def _running(self, pod: dict[str, Any]) -> dict[str, Any]:
        now = _now()
        conditions = [{"type": kind, "status": "True", "lastTransitionTime": now}
                      for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
        return {"phase": "Running", "conditions": conditions, "startTime": now, "podIP": "10.244.0.10",
                "containerStatuses": self._containers(pod, {"running": {"startedAt": now}}, True)}

    def _terminated(self, pod: dict[str, Any], succeeded: bool, message: str = "") -> dict[str, Any]:
        now = _now()
        code = 0 if succeeded else 1
        state = {"terminated": {"exitCode": code, "reason": "Completed" if succeeded else "Error", "startedAt": now, "finishedAt": now,
                                **({"message": message} if message else {})}}
        conditions = [{"type": kind, "status": "True" if kind in ("PodScheduled", "Initialized") else "False",
                       "lastTransitionTime": now} for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
        return {"phase": "Succeeded" if succeeded else "Failed", "conditions": conditions, "startTime": now,
                "containerStatuses": self._containers(pod, state, False)}

    def start(self) -> "PodKubelet":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)  # a running fetch sees the stop and is killed
        if self._fetch_dir is not None:
            shutil.rmtree(self._fetch_dir, ignore_errors=True)
