"""The closed loop end to end with real components: a real control plane (its Job controller), a real
`mlflow server`, real Prometheus scraping real `modelwarden serve` processes (the sandbox kubelet
fetches each model from MLflow), the operator, and a real training program run by the sandbox's Job
kubelet (sandbox/retrain.py: trains on fresh data, registers the next version in MLflow tagged with
the breach id).

Drift on stable -> the stable policy breaches -> one retraining Job -> v2 registered -> v2 in shadow
on mirrored traffic (the label-free gate: its predictions against stable's on the same requests) ->
canary -> promoted, with its lineage. A second run trains on shuffled labels: the shadow gate fails,
the candidate is rejected, stable is untouched.
"""

from __future__ import annotations

import copy
import datetime
import json
import uuid

import pytest

from modelwarden.sandbox import datagen
from modelwarden.sandbox.examples import train_example
from modelwarden.sandbox.jobrunner import JobRunner
from modelwarden.sandbox.kubelet import ProcessKubelet
from modelwarden.sandbox.traffic import TrafficGenerator
from tests.controlplane.support import wait_for
from tests.mlflow_server import client, log_profile, register_sklearn_model

pytestmark = pytest.mark.integration

FAST = {"MODELWARDEN_RECONCILE_INTERVAL": "0.3"}
DRIFT = {"amount": 1.5, "merchant_risk": 1.5}
CONTROLLERS = ("garbage-collector-controller", "serviceaccount-controller", "job-controller")


@pytest.fixture
def loop_cluster(tmp_path):
    """A real control plane whose Job controller runs, without the deployment controller (the sandbox kubelet is it)."""
    from tests.realcluster import Cluster

    started = Cluster(tmp_path / "cluster", controllers=CONTROLLERS).start()
    yield started
    started.stop()


def policy(name: str, track: str, drift: dict, **spec) -> dict:
    return {"apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": name, "namespace": "default"},
            "spec": {"targetRef": {"name": "fraud"}, "track": track, "interval": "2s", "window": "8s", "minSamples": 100,
                     "failureThreshold": 2, "drift": drift, **spec}}


def run_loop(tmp_path, cluster, prometheus, mlflow_server, *, shuffle: bool):
    """Everything up to the candidate's fate; returns (kube, the registered model's name, traffic)."""
    from tests.processes import OperatorProcess

    kube, url = cluster.kube, mlflow_server.url
    registered = f"fraud-loop-{uuid.uuid4().hex[:6]}"
    v1 = train_example("classifier", tmp_path / "v1", rows=3000)
    first = register_sklearn_model(url, registered, estimator=__import__("joblib").load(v1.model))
    log_profile(url, first.run_id, v1.profile.read_text())
    kube.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fraud-profile", "namespace": "default"},
                               "data": {"profile.json": v1.profile.read_text()}})
    kubelet = ProcessKubelet(cluster.url, prometheus, tmp_path / "kubelet", session=cluster.plane.session()).start()
    jobs = JobRunner(cluster.url, tmp_path / "jobs", session=cluster.plane.session()).start()
    operator = OperatorProcess(kubeconfig=cluster.operator_kubeconfig, log_path=tmp_path / "operator.log",
                               extra_args=("-A", "--mlflow-tracking-uri", url, "--prometheus-url", prometheus.url,
                                           "--scrape-interval", "1s"), env=FAST)
    operator.start(timeout=60)

    def servers():
        return {track: server for track in ("stable", "canary", "shadow")
                if (server := kubelet.server_for("default", f"fraud-{track}")) is not None}

    def status():
        return (kube.get("modeldeployments", "fraud") or {}).get("status") or {}

    weights = lambda: {"stable": status().get("weights", {}).get("stable", 100), "canary": status().get("weights", {}).get("canary", 0)}  # noqa: E731
    mirrors = lambda: {"shadow": status().get("weights", {}).get("mirror", 0)}  # noqa: E731
    traffic = TrafficGenerator(registered, servers, weights, rows_per_second=300, mirrors=mirrors)
    trainer = ["python", "-m", "modelwarden.sandbox.retrain", "--rows", "3000", "--shift", "amount=1.5,merchant_risk=1.5"]
    kube.create("modeldeployments", {
        "apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "fraud", "namespace": "default"},
        "spec": {"model": registered, "traffic": {"router": "istio"}, "stable": {"modelUri": f"models:/{registered}/1"},
                 "candidates": {"shadow": {"policy": "shadow-gate", "duration": "6s"},
                                "canary": {"steps": [{"weight": 50, "pause": "4s"}]}, "autoPromote": True, "cooldown": "1h"}}})
    kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status", {}).get("stable") or {}).get("ready"), timeout=180)
    traffic.start()
    kube.create("driftpolicies", policy("stable-drift", "stable", {"method": "psi", "threshold": 0.2},
                                        reference={"profileRef": {"configMap": {"name": "fraud-profile", "key": "profile.json"}}},
                                        actions={"retrain": {"cooldown": "1h", "jobTemplate": {"backoffLimit": 0, "template": {"spec": {
                                            "containers": [{"name": "train", "image": "trainer:1",
                                                            "command": trainer + (["--shuffle-labels"] if shuffle else [])}]}}}}}))
    kube.create("driftpolicies", policy("shadow-gate", "shadow", {}, reference={"track": "stable"}, agreement={"minRate": 0.98},
                                        tracking={"mlflow": {}}))  # each evaluation also an MLflow metric point
    kube.create("driftpolicies", policy("canary-gate", "canary", {}, reference={"track": "stable"},
                                        actions={"rollback": True}))
    traffic.drift = {"stable": datagen.Drift(shift=DRIFT), "canary": datagen.Drift(shift=DRIFT)}  # the world moved
    return kube, registered, (traffic, kubelet, jobs, operator)


def promoted_or_stuck(kube):
    found = kube.get("modeldeployments", "fraud")
    if found["status"]["stable"]["version"] == "2":
        return found
    promoted_or_stuck.last = {"md": found["status"], **{p["metadata"]["name"]: {k: p.get("status", {}).get(k) for k in (
        "lastEvaluation", "evaluatedVersion", "consecutiveFailures")} for p in kube.list("driftpolicies")}}
    return None


def stop(parts) -> None:
    for part in parts:
        part.stop()


def test_drift_retrains_and_the_new_version_goes_shadow_canary_stable(tmp_path, loop_cluster, prometheus, mlflow_server):
    kube, registered, parts = run_loop(tmp_path, loop_cluster, prometheus, mlflow_server, shuffle=False)
    try:
        spec = copy.deepcopy(kube.get("modeldeployments", "fraud")["spec"])
        shadowing = kube.wait_for("modeldeployments", "fraud", lambda o: (o["status"].get("candidate") or {}).get("stage") == "shadow",
                                  timeout=240)
        candidate = shadowing["status"]["candidate"]
        assert candidate["version"] == "2" and candidate["resolvedUri"] == f"models:/{registered}/2"
        wait_for(lambda: parts[0].stats.mirrored > 0, timeout=60, message="mirrored requests reach the shadow")
        try:
            promoted = wait_for(lambda: promoted_or_stuck(kube), timeout=200, message="v2 promoted")
        except AssertionError as error:  # say where it stopped: the statuses that held it
            raise AssertionError(f"{error}: {json.dumps(getattr(promoted_or_stuck, 'last', None))[:8000]}") from None
        st = promoted["status"]
        lineage = st["stable"]["lineage"]
        (job,) = [j["metadata"]["name"] for j in kube.list("jobs")]
        assert (lineage["source"], lineage["job"], lineage["policy"], lineage["parentVersion"]) == ("retrain", job, "stable-drift", "1")
        assert lineage["breachId"] == f"default/{job}" and lineage["modelVersion"] == "2" and lineage["runId"]
        assert [g["stage"] for g in lineage["gates"]][0] == "shadow" and lineage["gates"][0]["verdict"] == "Pass"
        assert "agreement/rate" in lineage["gates"][0]["checks"]  # v2 agreed with v1 on the same mirrored rows
        assert any(g["stage"] == "canary" for g in lineage["gates"])
        assert lineage["windowStart"] < lineage["windowEnd"]
        assert st["history"][-1]["lineage"]["job"] == job and [r["outcome"] for r in st["candidates"]] == ["Promoted"]
        assert promoted["spec"] == spec
        retrain = kube.get("driftpolicies", "stable-drift")["status"]["lastRetrain"]
        assert retrain["result"] == {"modelUri": f"models:/{registered}/2", "version": "2", "modelVersion": "2",
                                     "runId": lineage["runId"], "reportedBy": "mlflow"}
        (run,) = parts[2].runs  # the Job controller's pod, run once by the sandbox's Job kubelet
        assert (run.job, run.exit_code, run.message) == (job, 0, "")  # reported through MLflow, not the termination message
        context = json.loads((tmp_path / "jobs" / "jobs" / "default" / run.pod / "context.json").read_text())
        assert context["MODELWARDEN_BREACH_ID"] == f"default/{job}" and context["MODELWARDEN_STABLE_MODEL_URI"] == f"models:/{registered}/1"
        assert f"tagged modelwarden.io/breach-id=default/{job}" in (tmp_path / "jobs" / "jobs" / "default" / run.pod / "output.log").read_text()
        # The shadow gate's evaluations of v2, next to the training runs in MLflow (spec.tracking).
        mlflow = client(mlflow_server.url)
        experiment = mlflow.get_experiment_by_name(f"modelwarden/default/{registered}")
        (tracked,) = mlflow.search_runs([experiment.experiment_id], "tags.`modelwarden.io/version` = '2'")
        agreement = {m.step: m.value for m in mlflow.get_metric_history(tracked.info.run_id, "agreement/rate")}
        passed = datetime.datetime.fromisoformat(lineage["gates"][0]["evaluatedAt"].replace("Z", "+00:00"))
        assert agreement[int(passed.timestamp())] >= 0.98  # the very evaluation that let v2 out of shadow
        assert tracked.data.params["agreement.minRate"] == "0.98" and tracked.data.tags["modelwarden.io/policy"] == "shadow-gate"
    finally:
        stop(parts)


def test_a_model_trained_on_shuffled_labels_is_rejected_and_stable_stays(tmp_path, loop_cluster, prometheus, mlflow_server):
    kube, registered, parts = run_loop(tmp_path, loop_cluster, prometheus, mlflow_server, shuffle=True)
    try:
        done = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"].get("candidates"), timeout=420)
        record = done["status"]["candidates"][-1]
        assert (record["version"], record["outcome"]) == ("2", "Rejected") and record["reason"].startswith("shadow gate: "), record
        assert "agreement/rate" in record["reason"], record  # it disagreed with v1 on the same mirrored rows
        assert done["status"]["stable"]["version"] == "1" and done["status"]["stable"]["resolvedUri"] == f"models:/{registered}/1"
        assert "candidate" not in done["status"] and len(kube.list("jobs")) == 1
        wait_for(lambda: parts[1].server_for("default", "fraud-shadow") is None, timeout=60, message="the shadow stopped")
    finally:
        stop(parts)


def test_a_version_an_mlflow_alias_moves_to_goes_shadow_canary_stable(tmp_path, loop_cluster, prometheus, mlflow_server):
    """source: alias — no breach, no Job: a team registers v2 and moves `challenger` to it; the
    operator takes it as a candidate (shadow, paired with v1, then canary) and promotes it."""
    import joblib

    from modelwarden.contract.profile import Profile
    from modelwarden.serving.sharededges import on_edges_of
    from tests.mlflow_server import set_alias
    from tests.processes import OperatorProcess

    kube, url = loop_cluster.kube, mlflow_server.url
    registered = f"fraud-alias-{uuid.uuid4().hex[:6]}"
    v1 = train_example("classifier", tmp_path / "v1", rows=3000)
    first = register_sklearn_model(url, registered, estimator=joblib.load(v1.model))
    log_profile(url, first.run_id, v1.profile.read_text())
    kubelet = ProcessKubelet(loop_cluster.url, prometheus, tmp_path / "kubelet", session=loop_cluster.plane.session()).start()
    operator = OperatorProcess(kubeconfig=loop_cluster.operator_kubeconfig, log_path=tmp_path / "operator.log",
                               extra_args=("-A", "--mlflow-tracking-uri", url, "--prometheus-url", prometheus.url,
                                           "--scrape-interval", "1s"), env=FAST)
    operator.start(timeout=60)

    def status():
        return (kube.get("modeldeployments", "fraud") or {}).get("status") or {}

    servers = lambda: {t: s for t in ("stable", "canary", "shadow") if (s := kubelet.server_for("default", f"fraud-{t}")) is not None}  # noqa: E731
    weights = lambda: {"stable": status().get("weights", {}).get("stable", 100), "canary": status().get("weights", {}).get("canary", 0)}  # noqa: E731
    traffic = TrafficGenerator(registered, servers, weights, rows_per_second=300,
                               mirrors=lambda: {"shadow": status().get("weights", {}).get("mirror", 0)})
    parts = [traffic, kubelet, operator]
    try:
        kube.create("modeldeployments", {
            "apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "fraud", "namespace": "default"},
            "spec": {"model": registered, "traffic": {"router": "istio"}, "stable": {"modelUri": f"models:/{registered}/1"},
                     "storage": {"resolveInterval": "2s"},
                     "candidates": {"source": "alias", "aliasUri": f"models:/{registered}@challenger",
                                    "shadow": {"policy": "shadow-gate", "duration": "6s"},
                                    "canary": {"steps": [{"weight": 50, "pause": "4s"}]}, "autoPromote": True}}})
        kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status", {}).get("stable") or {}).get("ready"), timeout=180)
        spec = copy.deepcopy(kube.get("modeldeployments", "fraud")["spec"])
        traffic.start()
        kube.create("driftpolicies", policy("shadow-gate", "shadow", {}, reference={"track": "stable"}, agreement={"minRate": 0.98}))
        kube.create("driftpolicies", policy("canary-gate", "canary", {}, reference={"track": "stable"}, actions={"rollback": True}))
        # v2: the same recipe on other rows of the same world, profiled on v1's bucket edges.
        v2 = train_example("classifier", tmp_path / "v2", rows=3000, seed=11)
        shared = on_edges_of(Profile.from_json(v2.profile.read_text()), Profile.from_json(v1.profile.read_text()), v2.data, str(v2.model))
        second = register_sklearn_model(url, registered, estimator=joblib.load(v2.model))
        log_profile(url, second.run_id, shared.to_json())
        assert "candidate" not in status() and not status().get("candidates")  # nothing moved yet: nothing offered
        set_alias(url, registered, "challenger", second.version)
        shadowing = kube.wait_for("modeldeployments", "fraud", lambda o: (o["status"].get("candidate") or {}).get("stage") == "shadow",
                                  timeout=120)
        assert shadowing["status"]["candidate"]["id"] == f"alias:models:/{registered}/2"
        promoted = wait_for(lambda: (found := kube.get("modeldeployments", "fraud"))["status"]["stable"]["version"] == "2" and found,
                            timeout=200, message="v2 promoted")
        lineage = promoted["status"]["stable"]["lineage"]
        assert (lineage["source"], lineage["modelVersion"], lineage["runId"], lineage["parentVersion"]) == ("alias", "2", second.run_id, "1")
        assert lineage["gates"][0]["stage"] == "shadow" and "agreement/rate" in lineage["gates"][0]["checks"]
        assert [r["outcome"] for r in promoted["status"]["candidates"]] == ["Promoted"]
        assert promoted["spec"] == spec  # the user's spec is never written
    finally:
        stop(parts)
