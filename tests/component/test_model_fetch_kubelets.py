"""Both kubelet stand-ins run the pods' storage initializer for real on a real control plane, and a
failed fetch lands in Pod status where the operator reads it (controller/modelpods.py).

The store is a real S3 API (moto_server with IAM checks on, sandbox/objectstore.py); the
Deployments are the operator's own builder's output, or the operator's when it runs. The tests
wait for states, and what they check is an order of events or a count of them.
"""

from __future__ import annotations

import base64

import pytest

from modelwarden.builders import workloads
from modelwarden.contract.kubernetes import INSTANCE_LABEL
from modelwarden.controller.modelpods import fetch_failure
from modelwarden.sandbox.examples import train_example
from modelwarden.sandbox.kubelet import ProcessKubelet
from modelwarden.sandbox.objectstore import ObjectStore
from tests.controlplane.support import wait_for
from tests.realcluster import PodKubelet

BUCKET = "models"
URI = f"s3://{BUCKET}/fraud/1/model.joblib"
OWNER = workloads.Owner(name="fraud", namespace="default", uid="7f0f3a4e-3c1b-4f55-8d0a-2f8e6b1d9c11", model="fraud")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    model = train_example("classifier", tmp_path_factory.mktemp("model"), rows=500)
    with ObjectStore(tmp_path_factory.mktemp("s3")) as started:
        started.create_bucket(BUCKET)
        for path in (model.model, model.profile):
            started.upload(BUCKET, f"fraud/1/{path.name}", path)
        started.reader_key = started.reader(BUCKET)
        yield started


def secrets(kube, store) -> None:
    """`model-store` with the reader's key, `wrong-store` with a secret key that is not its."""
    for name, key in (("model-store", store.reader_key),
                      ("wrong-store", {**store.reader_key, "AWS_SECRET_ACCESS_KEY": "not-the-secret"})):
        kube.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
                                "data": {k: base64.b64encode(v.encode()).decode() for k, v in store.env(key).items()}})


def track(name: str, secret: str, replicas: int = 1, paused: bool = False) -> dict:
    workload = workloads.TrackWorkload(track=name, version="1", model_uri=URI, replicas=replicas, serving=name == "stable")
    deployment = workloads.deployment(OWNER, workload, None, 8080, store=workloads.ModelStore(secret=secret))
    del deployment["metadata"]["ownerReferences"]  # no ModelDeployment here: the garbage collector would remove it
    if paused:
        deployment["spec"]["paused"] = True  # the deployment controller makes no ReplicaSet, so no pods
    return deployment


def pods(kube, track_name: str) -> list[dict]:
    """The operator's query for a track that is not ready."""
    return kube.list("pods", labelSelector=f"{INSTANCE_LABEL}=fraud,track={track_name},version=1")


def test_pods_fetch_before_running_and_a_failed_fetch_keeps_them_pending(kube, store):
    secrets(kube, store)
    kubelet = PodKubelet(kube, fetch_retry=0).start()  # a failed fetch is retried on the next pass
    try:
        kube.create("deployments", track("stable", "model-store", replicas=2))
        kube.create("deployments", track("canary", "wrong-store"))
        kube.wait_for("deployments", "fraud-stable", lambda d: (d.get("status") or {}).get("readyReplicas") == 2)
        running = pods(kube, "stable")
        assert [p["status"]["phase"] for p in running] == ["Running", "Running"]
        assert all(p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0 for p in running)

        # The canary's key is refused: its pod stays Pending, the message in its init container's status.
        stuck = wait_for(lambda: [p for p in pods(kube, "canary") if fetch_failure(p)], message="the canary's fetch failure")
        message = fetch_failure(stuck[0])
        assert f"{URI}: access denied (SignatureDoesNotMatch)" in message and "not-the-secret" not in message
        # Retried like a restarted init container, and still never Running.
        wait_for(lambda: sum(1 for f in kubelet.fetches if "canary" in f[0]) >= 2, message="a second fetch of the canary")
        again = kube.wait_for("pods", stuck[0]["metadata"]["name"],
                              lambda p: p["status"]["initContainerStatuses"][0]["restartCount"] >= 1)
        assert again["status"]["phase"] == "Pending" and fetch_failure(again) == message
        ready = next(c for c in again["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
        assert kube.get("deployments", "fraud-canary")["status"].get("readyReplicas") in (None, 0)
        # The two stable pods share one template: one fetch, before either ran.
        stable_fetches = [f for f in kubelet.fetches if "fraud-stable" in f[0]]
        assert [(uri, ok) for _, uri, ok, _ in stable_fetches] == [(URI, True)]
        assert all(not ok for pod, _, ok, _ in kubelet.fetches if "canary" in pod)
    finally:
        kubelet.stop()
    assert kubelet.errors == []


def test_the_sandbox_kubelet_writes_a_failed_fetch_into_pod_status(cluster, kube, store, tmp_path):
    """On a real API server: its own Pod when no controller made one (a paused Deployment, like
    the demo's control plane without a deployment controller), the ReplicaSet's pods otherwise."""
    secrets(kube, store)

    class Targets:
        def set_targets(self, targets) -> None:
            pass

    kubelet = ProcessKubelet(cluster.url, Targets(), tmp_path, session=cluster.plane.session(), fetch_backoff=3600)
    try:
        kube.create("deployments", track("stable", "wrong-store", paused=True))
        kube.create("deployments", track("canary", "wrong-store"))
        wait_for(lambda: pods(kube, "canary"), message="the canary's pod, made by its ReplicaSet")
        kubelet.sync()
        assert [(f.deployment, f.ok) for f in sorted(kubelet.fetches, key=lambda f: f.deployment)] == [
            ("fraud-canary", False), ("fraud-stable", False)]
        [own] = pods(kube, "stable")
        assert own["metadata"]["name"] == "fraud-stable-fetch"
        assert own["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
        [made] = pods(kube, "canary")
        assert made["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
        for pod in (own, made):
            assert pod["status"]["phase"] == "Pending"
            assert "access denied (SignatureDoesNotMatch)" in fetch_failure(pod)

        # The right Secret: the paused Deployment's template changes, the fetch works, its pod goes.
        kube.patch("deployments", "fraud-stable", {"spec": track("stable", "model-store", paused=True)["spec"]})
        kubelet.sync()
        assert kubelet.server_for("default", "fraud-stable") is not None
        assert [f.ok for f in kubelet.fetches if f.deployment == "fraud-stable"] == [False, True]
        wait_for(lambda: pods(kube, "stable") == [], message="the kubelet's own pod deleted")
    finally:
        kubelet.stop()


def test_the_operator_reports_the_fetch_failure_from_pod_status(kube, store, operator_factory):
    secrets(kube, store)
    kubelet = PodKubelet(kube).start()
    try:
        operator_factory("-A", env={"MODELWARDEN_RECONCILE_INTERVAL": "0.3"})
        kube.create("modeldeployments", {
            "apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "fraud", "namespace": "default"},
            "spec": {"model": "fraud", "stable": {"version": "1", "modelUri": URI, "replicas": 1},
                     "storage": {"secretRef": {"name": "wrong-store"}}, "traffic": {"router": "replicas"}}})
        failed = kube.wait_for("modeldeployments", "fraud", lambda o: any(
            c["type"] == "ModelFetchFailed" and c["status"] == "True" for c in (o.get("status") or {}).get("conditions", [])))
        condition = next(c for c in failed["status"]["conditions"] if c["type"] == "ModelFetchFailed")
        assert "access denied (SignatureDoesNotMatch)" in condition["message"]
        assert "not-the-secret" not in condition["message"]
    finally:
        kubelet.stop()
