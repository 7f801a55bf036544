"""Issue 16's acceptance, end to end: a real kube-apiserver, the real operator, a real MLflow
tracking server and a real S3 API (moto_server with IAM checks on), and the sandbox kubelet,
which plays the deployment controller and the kubelet (as in `modelwarden demo --control-plane
real`): it runs each pod's storage initializer (`modelwarden fetch-model`) for real, then a real
`modelwarden serve` process on what it fetched.

A ModelDeployment on `models:/NAME@champion` and one on `s3://...` serve predictions; a canary
whose object is missing, or whose credentials are wrong, gives ModelFetchFailed and no traffic,
while the stable track keeps serving, untouched."""

from __future__ import annotations

import base64

import pytest
import requests

from modelwarden.sandbox.examples import train_example
from modelwarden.sandbox.kubelet import ProcessKubelet
from modelwarden.sandbox.objectstore import ObjectStore
from tests.controlplane.support import wait_for
from tests.mlflow_server import register_sklearn_model, set_alias

pytestmark = pytest.mark.integration

BUCKET = "models"
FAST = {"MODELWARDEN_RECONCILE_INTERVAL": "0.3"}


class NoScrape:
    """The kubelet's Prometheus hook: nothing scrapes in this test."""

    def set_targets(self, targets) -> None:
        pass


@pytest.fixture
def plane(tmp_path):
    """A real control plane without the deployment controller: the sandbox kubelet is it."""
    from tests.realcluster import Cluster

    started = Cluster(tmp_path / "cluster", controllers=("garbage-collector-controller", "serviceaccount-controller")).start()
    yield started
    started.stop()


def predict(server, rows):
    answer = requests.post(f"{server.url}/v1/models/{server.name}:predict", json={"instances": rows}, timeout=30)
    answer.raise_for_status()
    return answer.json()["predictions"], answer.headers["X-Model-Version"]


def secret(kube, name, data, opted_in=False):
    labels = {"modelwarden.io/policy-use": "true"} if opted_in else {}
    kube.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default", "labels": labels},
                            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def condition(obj, type_):
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def test_models_from_mlflow_and_s3_serve_and_a_bad_canary_changes_nothing(plane, mlflow_server, tmp_path):
    from tests.processes import OperatorProcess

    kube = plane.kube
    example = train_example("classifier", tmp_path / "example", rows=600)
    rows = [[120, 900, 6, 15, 2500, 0.5], [5, 20, 1, 2, 10, 0.1]]
    url = mlflow_server.url
    champion = register_sklearn_model(url, "churn", seed=1)
    set_alias(url, "churn", "champion", champion.version)

    with ObjectStore(tmp_path / "s3") as store:
        store.create_bucket(BUCKET)
        for path in (example.model, example.profile):
            store.upload(BUCKET, f"fraud/1/{path.name}", path)
        reader = store.reader(BUCKET)
        secret(kube, "model-store", store.env(reader))
        secret(kube, "wrong-store", store.env({**reader, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}))
        kubelet = ProcessKubelet(plane.url, NoScrape(), tmp_path / "kubelet", session=plane.plane.session()).start()
        operator = OperatorProcess(kubeconfig=plane.operator_kubeconfig, log_path=tmp_path / "operator.log",
                                   extra_args=("-A", "--mlflow-tracking-uri", url), env=FAST)
        operator.start(timeout=60)
        try:
            kube.create("modeldeployments", {
                "apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "fraud", "namespace": "default"},
                "spec": {"model": "fraud", "storage": {"secretRef": {"name": "model-store"}},
                         "stable": {"version": "1", "modelUri": f"s3://{BUCKET}/fraud/1/model.joblib"}}})
            kube.create("modeldeployments", {
                "apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "churn", "namespace": "default"},
                "spec": {"model": "churn", "stable": {"modelUri": "models:/churn@champion"}}})
            fraud = kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status", {}).get("stable") or {}).get("ready"), timeout=180)
            churn = kube.wait_for("modeldeployments", "churn", lambda o: (o.get("status", {}).get("stable") or {}).get("ready"), timeout=180)
            assert churn["status"]["stable"]["resolvedUri"] == f"models:/churn/{champion.version}"

            s3_server = kubelet.server_for("default", "fraud-stable")
            predictions, version = predict(s3_server, rows)
            assert len(predictions) == 2 and version == "1"
            mlflow_server_process = kubelet.server_for("default", "churn-stable")
            predictions, version = predict(mlflow_server_process, [[0.5, -1.0, 2.0]])
            assert predictions == champion_predictions(url, champion, [[0.5, -1.0, 2.0]]) and version == champion.version
            assert sorted((f.deployment, f.ok) for f in kubelet.fetches) == [("churn-stable", True), ("fraud-stable", True)]

            # A canary whose object is missing: the condition names it, the canary gets no traffic.
            kube.patch("modeldeployments", "fraud", {"spec": {"canary": {
                "version": "2", "modelUri": f"s3://{BUCKET}/fraud/2/model.joblib", "weight": 50}}})
            failed = kube.wait_for("modeldeployments", "fraud", lambda o: condition(o, "ModelFetchFailed").get("status") == "True",
                                   timeout=120)
            assert "canary" in condition(failed, "ModelFetchFailed")["message"]
            assert "no object or prefix" in condition(failed, "ModelFetchFailed")["message"]
            assert failed["status"]["weights"]["canary"] == 0
            # No flapping: the canary's pods stay (at no traffic) and keep retrying; the condition holds.
            wait_for(lambda: [f.ok for f in kubelet.fetches if f.deployment == "fraud-canary"].count(False) >= 2,
                     timeout=120, message="the canary's fetch retried")
            held = kube.get("modeldeployments", "fraud")
            assert condition(held, "ModelFetchFailed")["status"] == "True" and held["status"]["weights"]["canary"] == 0
            assert kube.get("deployments", "fraud-canary")["spec"]["replicas"] == 1
            assert [e["reason"] for e in kube.list("events")].count("ModelFetchFailed") == 1
            assert kubelet.server_for("default", "fraud-stable") is s3_server  # the serving track is untouched
            assert predict(s3_server, rows)[1] == "1"

            # The right object with another checksum: a condition too (the size limit, spec.storage.maxBytes,
            # is every track's and is covered by the fetch-model tests).
            kube.patch("modeldeployments", "fraud", {"spec": {"canary": {"modelUri": f"s3://{BUCKET}/fraud/1/model.joblib",
                                                                         "sha256": "0" * 64}}})
            mismatch = kube.wait_for("modeldeployments", "fraud",
                                     lambda o: "sha256" in condition(o, "ModelFetchFailed").get("message", ""), timeout=120)
            assert mismatch["status"]["weights"]["canary"] == 0
            assert kubelet.server_for("default", "fraud-stable") is s3_server and predict(s3_server, rows)[1] == "1"

            # Wrong credentials on a new stable version: the old stable process keeps serving.
            kube.patch("modeldeployments", "fraud", {"spec": {"canary": None, "storage": {"secretRef": {"name": "wrong-store"}},
                                                              "stable": {"version": "3", "modelUri": f"s3://{BUCKET}/fraud/1/model.joblib"}}})
            denied = kube.wait_for("modeldeployments", "fraud", lambda o: "access denied" in condition(o, "ModelFetchFailed").get("message", ""),
                                   timeout=120)
            assert condition(denied, "ModelFetchFailed")["status"] == "True" and "stable" in condition(denied, "ModelFetchFailed")["message"]
            assert "not-the-secret" not in condition(denied, "ModelFetchFailed")["message"]
            assert denied["status"]["stable"]["ready"] is False
            assert kubelet.server_for("default", "fraud-stable") is s3_server and predict(s3_server, rows)[1] == "1"
            assert kubelet.errors == []
        finally:
            operator.stop()
            kubelet.stop()


def champion_predictions(url, champion, rows):
    import mlflow.sklearn

    from tests.mlflow_server import tracking

    with tracking(url):
        return mlflow.sklearn.load_model(f"models:/{champion.name}/{champion.version}").predict(rows).tolist()
