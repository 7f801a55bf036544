"""The real operator against a real control plane and a real MLflow tracking server: aliases are
resolved to exact versions, a moved alias starts a rollout (the user's spec never written), a
rollback returns to the exact earlier version, a registry it may not or cannot reach changes
nothing on the cluster, and an HPA-scaled track keeps the replicas the HPA chose."""

import base64
import copy
import datetime

import pytest

from tests.mlflow_server import register_sklearn_model, set_alias
from tests.controlplane.support import wait_for
from tests.processes import free_port

pytestmark = pytest.mark.integration

FAST = {"MODELWARDEN_RECONCILE_INTERVAL": "0.3"}
DRIVES = ("-A", "--selector", "e2e=driven")
NAME = "fraud-registry"


def md(spec):
    return {"apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "fraud", "namespace": "default", "labels": {"e2e": "driven"}},
            "spec": {"model": "fraud", "traffic": {"router": "replicas"}, "storage": {"resolveInterval": "2s"}, **spec}}


def fetched_uri(kube, track):
    deployment = kube.get("deployments", f"fraud-{track}")
    init = deployment["spec"]["template"]["spec"].get("initContainers", [])
    return next(c["args"][1] for c in init if c["name"] == "fetch-model")


def condition(obj, type_):
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def reasons(kube):
    return [e["reason"] for e in sorted(kube.list("events"), key=lambda e: e["metadata"]["creationTimestamp"])]


def test_aliases_resolve_move_and_roll_back_to_the_exact_version(mlflow_server, kube, kubelet, operator_factory):
    url = mlflow_server.url
    versions = [register_sklearn_model(url, NAME, seed=seed) for seed in range(4)]
    set_alias(url, NAME, "champion", "1")
    operator_factory(*DRIVES, "--mlflow-tracking-uri", url, env=FAST)
    kube.create("modeldeployments", md({"stable": {"modelUri": f"models:/{NAME}@champion"}}))
    first = kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status", {}).get("stable") or {}).get("ready"))
    stable = first["status"]["stable"]
    assert (stable["version"], stable["resolvedUri"], stable["modelVersion"], stable["runId"]) == (
        "1", f"models:/{NAME}/1", "1", versions[0].run_id)
    assert condition(first, "ModelResolved")["status"] == "True"
    assert fetched_uri(kube, "stable") == f"models:/{NAME}/1"  # the pods never fetch a moving alias
    spec_before = copy.deepcopy(first["spec"])

    # The stable alias moves: a spec change in all but the spec.
    set_alias(url, NAME, "champion", "2")
    moved = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"]["stable"].get("modelVersion") == "2")
    assert [(h["version"], h["resolvedUri"], h["runId"]) for h in moved["status"]["history"]] == [
        ("1", f"models:/{NAME}/1", versions[0].run_id), ("2", f"models:/{NAME}/2", versions[1].run_id)]
    assert kube.wait_for("deployments", "fraud-stable", lambda d: fetched_uri(kube, "stable") == f"models:/{NAME}/2")
    assert moved["spec"] == spec_before

    # A canary on another alias: its moves start new canary rollouts.
    set_alias(url, NAME, "challenger", "3")
    kube.patch("modeldeployments", "fraud", {"spec": {"canary": {
        "modelUri": f"models:/{NAME}@challenger", "steps": [{"weight": 20, "pause": "1h"}]}}})
    canary = kube.wait_for("modeldeployments", "fraud", lambda o: (o["status"].get("canary") or {}).get("version") == "3")
    started = canary["status"]["canaryStartedAt"]
    spec_with_canary = copy.deepcopy(canary["spec"])
    set_alias(url, NAME, "challenger", "4")
    again = kube.wait_for("modeldeployments", "fraud", lambda o: (o["status"].get("canary") or {}).get("version") == "4")
    assert again["status"]["canaryStartedAt"] > started and again["status"]["canaryStep"] == 0
    assert again["status"]["canary"]["resolvedUri"] == f"models:/{NAME}/4"
    assert again["spec"] == spec_with_canary
    assert kube.wait_for("deployments", "fraud-canary", lambda d: fetched_uri(kube, "canary") == f"models:/{NAME}/4")

    # A failing stable policy: back to exactly version 1, though champion still names 2.
    kube.create("driftpolicies", {
        "apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": "quality", "namespace": "default"},
        "spec": {"targetRef": {"name": "fraud"}, "track": "stable", "failureThreshold": 2, "interval": "1m", "window": "1m",
                 "performance": [{"metric": "accuracy", "min": 0.8}], "actions": {"rollback": True}}})
    kube.patch("driftpolicies", "quality", {"status": {
        "lastEvaluation": {"time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                           "verdict": "Fail",
                           "results": [{"check": "performance/accuracy", "verdict": "Fail"}]},
        "consecutiveFailures": 2}}, subresource="status")
    rolled = kube.wait_for("modeldeployments", "fraud", lambda o: (o["status"].get("rollback") or {}).get("track") == "stable")
    assert (rolled["status"]["stable"]["version"], rolled["status"]["stable"]["resolvedUri"]) == ("1", f"models:/{NAME}/1")
    assert rolled["status"]["stable"]["runId"] == versions[0].run_id
    assert kube.wait_for("deployments", "fraud-stable", lambda d: fetched_uri(kube, "stable") == f"models:/{NAME}/1")
    assert rolled["spec"] == spec_with_canary


def test_a_registry_it_cannot_or_may_not_reach_changes_nothing(mlflow_server, kube, kubelet, operator_factory):
    closed = f"http://127.0.0.1:{free_port()}"
    kube.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "elsewhere", "namespace": "default", "labels": {"modelwarden.io/policy-use": "true"}},
        "data": {"MLFLOW_TRACKING_URI": base64.b64encode(closed.encode()).decode()}})
    operator_factory(*DRIVES, "--mlflow-tracking-uri", mlflow_server.url, env=FAST)  # allowed: only its own
    kube.create("modeldeployments", md({"stable": {"modelUri": f"models:/{NAME}@champion"},
                                        "storage": {"secretRef": {"name": "elsewhere"}}}))
    refused = kube.wait_for("modeldeployments", "fraud", lambda o: condition(o, "ModelResolved").get("status") == "False")
    message = condition(refused, "ModelResolved")["message"]
    assert "not allowed by the operator" in message and "--allowed-registry-urls" in message
    assert refused["status"]["phase"] == "Pending"
    assert kube.list("deployments") == [] and kube.list("services", labelSelector="app.kubernetes.io/managed-by=modelwarden") == []


def test_unreachable_registry_is_a_condition_not_a_change(kube, kubelet, operator_factory):
    closed = f"http://127.0.0.1:{free_port()}"
    operator = operator_factory(*DRIVES, "--mlflow-tracking-uri", closed, env=FAST)
    kube.create("modeldeployments", md({"stable": {"modelUri": "models:/fraud@champion"}}))
    found = kube.wait_for("modeldeployments", "fraud", lambda o: condition(o, "ModelResolved").get("status") == "False")
    assert "models:/fraud@champion" in condition(found, "ModelResolved")["message"]
    assert kube.list("deployments") == []
    kube.wait_for("modeldeployments", "fraud", lambda _: "ModelResolveFailed" in reasons(kube))  # posted after the status write
    # Announced once: ten more decisions later (the operator logs each one), still one Event.
    decided = operator.log().count("default/fraud decided")
    wait_for(lambda: operator.log().count("default/fraud decided") >= decided + 10, message="ten more reconciles")
    assert [r for r in reasons(kube) if r.startswith("Model")] == ["ModelResolveFailed"]
    assert condition(kube.get("modeldeployments", "fraud"), "ModelResolved")["status"] == "False"


def test_an_hpa_scaled_track_keeps_its_replicas(kube, kubelet, operator_factory):
    operator_factory(*DRIVES, env=FAST)
    kube.create("modeldeployments", md({
        "stable": {"version": "1", "modelUri": "file:///models/1", "autoscaling": {"minReplicas": 2, "maxReplicas": 5}},
        "canary": {"version": "2", "modelUri": "file:///models/2", "image": "ghcr.io/example/serve:2", "weight": 25}}))
    hpa = kube.wait_for("horizontalpodautoscalers", "fraud-stable", lambda o: o, api_version="autoscaling/v2")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    # The HPA's decision, written as the HPA controller writes it (the scale subresource).
    kube.patch("deployments", "fraud-stable", {"spec": {"replicas": 3}}, subresource="scale?fieldManager=kube-controller-manager")
    kube.wait_for("modeldeployments", "fraud", lambda o: (o["status"].get("stable") or {}).get("replicas") == 3)
    kube.patch("modeldeployments", "fraud", {"metadata": {"annotations": {"touch": "1"}}})  # one more reconcile
    settled = kube.wait_for("modeldeployments", "fraud", lambda o: (o["status"].get("canary") or {}).get("ready")
                            and o["metadata"].get("annotations", {}).get("touch") == "1")
    assert kube.get("deployments", "fraud-stable")["spec"]["replicas"] == 3
    assert settled["status"]["stable"]["replicas"] == 3
    # The canary renders with its own image and runs (its pods are Ready).
    canary = kube.get("deployments", "fraud-canary")
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/example/serve:2"
    assert kube.get("deployments", "fraud-stable")["spec"]["template"]["spec"]["containers"][0]["image"] != "ghcr.io/example/serve:2"
    assert kube.get("poddisruptionbudgets", "fraud-stable", api_version="policy/v1")["spec"]["maxUnavailable"] == 1


def test_adding_autoscaling_to_a_running_track_keeps_its_replicas(kube, kubelet, operator_factory):
    """Server-side apply would reset replicas the operator stops setting to 1: it hands them over."""
    operator_factory(*DRIVES, env=FAST)
    kube.create("modeldeployments", md({"stable": {"version": "1", "modelUri": "file:///models/1", "replicas": 3}}))
    kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status", {}).get("stable") or {}).get("ready"))
    kube.patch("modeldeployments", "fraud", {"spec": {"stable": {"replicas": 4}}})  # applied: the operator alone owns replicas
    scaled = kube.wait_for("deployments", "fraud-stable", lambda d: d["spec"]["replicas"] == 4)
    assert replica_managers(scaled) == {"modelwarden"}
    kube.patch("modeldeployments", "fraud", {"spec": {"stable": {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}}}})
    kube.wait_for("horizontalpodautoscalers", "fraud-stable", lambda o: o, api_version="autoscaling/v2")
    kube.patch("modeldeployments", "fraud", {"spec": {"stable": {"image": "ghcr.io/example/serve:2"}}})  # a template change: an apply
    deployment = kube.wait_for("deployments", "fraud-stable",
                               lambda d: d["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/example/serve:2")
    assert deployment["spec"]["replicas"] == 4
    assert replica_managers(deployment) == {"modelwarden-handover"}


def replica_managers(deployment):
    return {e["manager"] for e in deployment["metadata"]["managedFields"] if "f:replicas" in e.get("fieldsV1", {}).get("f:spec", {})}
