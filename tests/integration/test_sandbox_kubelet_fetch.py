"""The sandbox's kubelet (sandbox/kubelet.py) fetches models for real, as the pods' storage
initializer would: the Deployments are the operator's own builder's output, the store is a real
S3 API (moto_server, with IAM checks on), the Secrets live in the API emulator of `make demo`.

The kubelet's loop is driven by calling sync() (each call is one pass of its loop), so the tests
assert what happens in which pass and how many fetches ran, never how long anything took.
"""

from __future__ import annotations

import base64

import joblib
import pytest
import requests

from modelwarden.builders import workloads
from modelwarden.contract.kubernetes import INSTANCE_LABEL
from modelwarden.controller.modelpods import fetch_failure
from modelwarden.sandbox import datagen
from modelwarden.sandbox.kubelet import ProcessKubelet
from modelwarden.sandbox.objectstore import ObjectStore
from tests.kubeclient import KubeClient

BUCKET = "models"
NAMESPACE = "ml"
OWNER = workloads.Owner(name="fraud", namespace=NAMESPACE, uid="0b6c1a52-1d8f-4a57-9d57-5d2b1c9f0a01", model="fraud")
URIS = {"1": f"s3://{BUCKET}/fraud/1/model.joblib", "2": f"s3://{BUCKET}/fraud/2/model.joblib"}


class Targets:
    """Stands in for Prometheus: the kubelet only hands it the servers to scrape."""

    def __init__(self) -> None:
        self.targets: list = []

    def set_targets(self, targets) -> None:
        self.targets = targets


@pytest.fixture(scope="module")
def store(tmp_path_factory, serving_examples):
    """Version 1 is the example classifier, version 2 the regressor: their predictions tell them apart."""
    with ObjectStore(tmp_path_factory.mktemp("s3")) as started:
        started.create_bucket(BUCKET)
        for version, kind in (("1", "classifier"), ("2", "regressor")):
            for path in (serving_examples[kind].model, serving_examples[kind].profile):
                started.upload(BUCKET, f"fraud/{version}/{path.name}", path)
        started.reader_key = started.reader(BUCKET)
        yield started


@pytest.fixture
def kube(api_server):
    return KubeClient(api_server.url)


@pytest.fixture
def kubelet(api_server, tmp_path):
    started = ProcessKubelet(api_server.url, Targets(), tmp_path, fetch_backoff=3600)  # no retry unless the template changes
    yield started
    started.stop()


def secret(kube, name: str, values: dict[str, str]) -> None:
    kube.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
                            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}})


def track(version: str, uri: str, secret_name: str | None, replicas: int = 4) -> dict:
    """The stable track's Deployment exactly as the operator builds it."""
    workload = workloads.TrackWorkload(track="stable", version=version, model_uri=uri, replicas=replicas, serving=True)
    return workloads.deployment(OWNER, workload, None, 8080, store=workloads.ModelStore(secret=secret_name))


def roll(kube, version: str, uri: str, secret_name: str | None) -> None:
    kube.patch("deployments", "fraud-stable", {"spec": track(version, uri, secret_name)["spec"]}, NAMESPACE)


def predict(server, rows):
    response = requests.post(f"{server.url}/v1/models/fraud:predict", json={"instances": rows.tolist()}, timeout=10)
    response.raise_for_status()
    return response.headers["X-Model-Version"], response.json()["predictions"]


def status(kube) -> dict:
    return kube.get("deployments", "fraud-stable", NAMESPACE)["status"]


def pods_of(kube, version: str) -> list[dict]:
    """What the operator lists for a track that is not ready (controller/modelpods.py)."""
    return kube.list("pods", NAMESPACE, labelSelector=f"{INSTANCE_LABEL}=fraud,track=stable,version={version}")


def test_fetched_model_serves_and_a_failed_fetch_keeps_the_old_version(kube, kubelet, store, serving_examples):
    rows, _ = datagen.classification(5, seed=3)
    secret(kube, "model-store", store.env(store.reader_key))
    secret(kube, "wrong-store", store.env({**store.reader_key, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}))
    kube.create("deployments", track("1", URIS["1"], "model-store"), NAMESPACE)

    kubelet.sync()
    first = kubelet.server_for(NAMESPACE, "fraud-stable")
    assert first is not None
    assert [(f.version, f.uri, f.ok) for f in kubelet.fetches] == [("1", URIS["1"], True)]
    # The server reads the fetched copy (renamed for it, with its sibling profile), not the original.
    served = first.model
    assert served.is_relative_to(kubelet.log_dir / "fetched")
    assert sorted(p.name for p in served.iterdir()) == ["model.joblib", "profile.json"]
    assert (served / "model.joblib").read_bytes() == serving_examples["classifier"].model.read_bytes()
    expected = joblib.load(serving_examples["classifier"].model).predict(rows).tolist()
    assert predict(first, rows) == ("1", expected)
    assert {k: status(kube)[k] for k in ("readyReplicas", "updatedReplicas")} == {"readyReplicas": 4, "updatedReplicas": 4}

    # Version 2 with a key whose secret is wrong: the store refuses, version 1 keeps serving.
    roll(kube, "2", URIS["2"], "wrong-store")
    kubelet.sync()
    assert [(f.version, f.ok) for f in kubelet.fetches] == [("1", True), ("2", False)]
    refused = kubelet.fetches[-1].message
    assert "access denied (SignatureDoesNotMatch)" in refused and "not-the-secret" not in refused
    assert kubelet.server_for(NAMESPACE, "fraud-stable") is first and first.process.poll() is None
    assert predict(first, rows) == ("1", expected)
    # A stuck rolling update: the old ReplicaSet's pods less maxUnavailable (25% of 4), none updated.
    assert {k: status(kube)[k] for k in ("readyReplicas", "updatedReplicas")} == {"readyReplicas": 3, "updatedReplicas": 0}
    # The failure is in Pod status where the operator reads it: the pods of version 2 (here one the
    # kubelet made, the emulator having no ReplicaSet controller), Pending, the init container terminated.
    [pod] = pods_of(kube, "2")
    assert pod["metadata"]["name"] == "fraud-stable-fetch" and pod["status"]["phase"] == "Pending"
    [init] = pod["status"]["initContainerStatuses"]
    assert init["name"] == "fetch-model" and init["state"]["terminated"]["exitCode"] == 1
    assert fetch_failure(pod) == refused
    assert pods_of(kube, "1") == []

    # More passes of the loop: no fetch again (back-off), the pod's status written once.
    written = pod["metadata"]["resourceVersion"]
    for _ in range(3):
        kubelet.sync()
    assert len(kubelet.fetches) == 2
    assert pods_of(kube, "2")[0]["metadata"]["resourceVersion"] == written

    # The template changes (the right Secret): tried at once, version 2 replaces version 1.
    old_model = served
    roll(kube, "2", URIS["2"], "model-store")
    kubelet.sync()
    assert [(f.version, f.ok) for f in kubelet.fetches] == [("1", True), ("2", False), ("2", True)]
    second = kubelet.server_for(NAMESPACE, "fraud-stable")
    assert second is not first and first.process is None  # stopped after the new one was up
    assert not old_model.exists()
    regression = joblib.load(serving_examples["regressor"].model).predict(rows).tolist()
    version, predictions = predict(second, rows)
    assert version == "2" and predictions == pytest.approx(regression)
    assert {k: status(kube)[k] for k in ("readyReplicas", "updatedReplicas")} == {"readyReplicas": 4, "updatedReplicas": 4}
    assert pods_of(kube, "2") == []  # the kubelet's own pod is gone once the rollout went through


def test_a_failed_first_fetch_serves_nothing_and_is_retried_after_the_back_off(kube, api_server, store, tmp_path):
    kubelet = ProcessKubelet(api_server.url, Targets(), tmp_path, fetch_backoff=0)  # every pass is past the back-off
    try:
        secret(kube, "model-store", store.env(store.reader_key))
        kube.create("deployments", track("1", f"s3://{BUCKET}/fraud/9/model.joblib", "model-store", replicas=1), NAMESPACE)
        kubelet.sync()
        kubelet.sync()
        assert [(f.version, f.ok) for f in kubelet.fetches] == [("1", False), ("1", False)]
        assert f"no object or prefix s3://{BUCKET}/fraud/9/model.joblib" in kubelet.fetches[0].message
        assert kubelet.server_for(NAMESPACE, "fraud-stable") is None
        assert {k: status(kube)[k] for k in ("readyReplicas", "updatedReplicas")} == {"readyReplicas": 0, "updatedReplicas": 0}
        [pod] = pods_of(kube, "1")
        assert pod["status"]["initContainerStatuses"][0]["restartCount"] == 1  # the second attempt
        assert fetch_failure(pod) == kubelet.fetches[-1].message
    finally:
        kubelet.stop()


def test_a_missing_storage_secret_is_a_container_config_error(kube, kubelet):
    kube.create("deployments", track("1", URIS["1"], "no-such-secret", replicas=1), NAMESPACE)
    kubelet.sync()
    assert [(f.ok, f.message) for f in kubelet.fetches] == [(False, 'secret "no-such-secret" not found')]
    [pod] = pods_of(kube, "1")
    waiting = pod["status"]["initContainerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "CreateContainerConfigError", "message": 'secret "no-such-secret" not found'}
    assert kubelet.server_for(NAMESPACE, "fraud-stable") is None


def test_a_local_model_is_served_without_a_fetch(kube, kubelet, serving_examples):
    kube.create("deployments", track("1", f"file://{serving_examples['classifier'].directory}", None, replicas=1), NAMESPACE)
    deployment = kube.get("deployments", "fraud-stable", NAMESPACE)
    assert "initContainers" not in deployment["spec"]["template"]["spec"]
    kubelet.sync()
    server = kubelet.server_for(NAMESPACE, "fraud-stable")
    assert server is not None and server.model == serving_examples["classifier"].directory
    assert kubelet.fetches == [] and status(kube)["readyReplicas"] == 1


def test_a_paired_shadow_fetches_the_stables_model_too_and_a_failure_names_it(kube, kubelet, store, serving_examples):
    """pairWithStable: the shadow's pod fetches its own model, then the stable's (a second storage
    initializer); the stable's failing is shown on that container, and the operator says so."""
    secret(kube, "model-store", store.env(store.reader_key))
    missing = f"s3://{BUCKET}/fraud/7/model.joblib"

    def shadow(paired_uri: str) -> dict:
        workload = workloads.TrackWorkload(track="shadow", version="3", model_uri=URIS["1"], replicas=1, serving=False,
                                           paired=workloads.PairedModel("7", paired_uri))
        return workloads.deployment(OWNER, workload, None, 8080, store=workloads.ModelStore(secret="model-store"))

    kube.create("deployments", shadow(missing), NAMESPACE)
    kubelet.sync()
    assert [(f.version, f.uri, f.ok) for f in kubelet.fetches] == [("3", URIS["1"], True), ("7", missing, False)]
    assert kubelet.server_for(NAMESPACE, "fraud-shadow") is None
    [pod] = kube.list("pods", NAMESPACE, labelSelector=f"{INSTANCE_LABEL}=fraud,track=shadow,version=3")
    states = {s["name"]: s["state"] for s in pod["status"]["initContainerStatuses"]}
    assert states["fetch-model"]["terminated"]["exitCode"] == 0 and states["fetch-paired-model"]["terminated"]["exitCode"] == 1
    assert fetch_failure(pod) == "the stable's model (pairWithStable): " + kubelet.fetches[-1].message
    assert f"no object or prefix {missing}" in kubelet.fetches[-1].message

    kube.patch("deployments", "fraud-shadow", {"spec": shadow(URIS["1"])["spec"]}, NAMESPACE)  # the stable's real URI
    kubelet.sync()
    server = kubelet.server_for(NAMESPACE, "fraud-shadow")
    assert server is not None and [(f.version, f.ok) for f in kubelet.fetches[2:]] == [("3", True), ("7", True)]
    rows, _ = datagen.classification(5, seed=3)
    assert predict(server, rows)[0] == "3"

    def paired() -> float:
        text = requests.get(f"{server.url}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("modelwarden_paired_predictions_total{") and 'paired_version="7"' in line)

    from tests.controlplane.support import wait_for
    wait_for(lambda: paired() == 5, timeout=60, message="the shadow's five rows scored by the stable's model too")
