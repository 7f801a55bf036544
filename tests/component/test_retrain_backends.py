"""Retraining where teams already retrain: the real operator on a real control plane launches one
run per breach in an Argo Workflow (Workflow CRD installed, phases driven by the test), a real
Airflow 3 (tests/airflow_server.py) and a Kubeflow Pipelines stand-in that validates every request
and response against KFP's published swagger (tests/kfp_standin.py; KFP's server cannot run here),
across 10 operator restarts during the breach, and follows each run to its outcome."""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path

import pytest
import requests
import yaml
from hera.workflows.models import Workflow

from tests.component.test_driftpolicy_controller import FAST, policy, reasons, start_canary, status
from tests.controlplane.support import wait_for

pytestmark = pytest.mark.timeout(900)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ARGO = "argoproj.io/v1alpha1"
RESTARTS = 10


def breach_with_restarts(kube, operator_factory, name: str, url: str, retrain: dict) -> dict:
    """A failing canary breaches (failureThreshold 2) while the operator is killed and restarted
    RESTARTS times at random moments (mid-evaluation, mid-launch, idle); returns the policy once
    status records the run."""
    operator = operator_factory("-A", env=FAST)
    start_canary(kube)
    kube.create("driftpolicies", policy(name, url, threshold=2, retrain=retrain))
    kube.wait_for("driftpolicies", name, lambda o: status(o).get("consecutiveFailures", 0) >= 1, timeout=90)
    rng = random.Random(22)
    for _ in range(RESTARTS):
        time.sleep(rng.uniform(0.0, 1.2))
        operator.kill()
        operator = operator_factory("-A", env=FAST)
    return kube.wait_for("driftpolicies", name, lambda o: (status(o).get("lastRetrain") or {}).get("jobName"), timeout=90)


def last_retrain(kube, name: str) -> dict:
    return status(kube.get("driftpolicies", name)).get("lastRetrain") or {}


def install_workflow_crd(kube) -> None:
    crd = yaml.safe_load((FIXTURES / "argo" / "workflows.crd.yaml").read_text())
    kube.session.post(f"{kube.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd).raise_for_status()
    wait_for(lambda: kube.session.get(f"{kube.url}/apis/{ARGO}/namespaces/default/workflows").status_code == 200,
             timeout=60, message="the Workflow CRD served")


def set_workflow_status(kube, name: str, workflow_status: dict) -> None:
    """What Argo's controller would write (its CRD has no status subresource: a patch of the object)."""
    kube.patch("workflows", name, {"status": workflow_status}, api_version=ARGO)


def test_argo_one_workflow_per_breach_across_restarts_followed_through_its_phases(kube, kubelet, operator_factory, fake_prometheus):
    install_workflow_crd(kube)
    prometheus = fake_prometheus(value=5)
    template = {"entrypoint": "train", "templates": [{"name": "train", "container": {
        "image": "trainer:1", "args": ["--breach", "{{workflow.parameters.MODELWARDEN_BREACH_ID}}"]},
        "outputs": {"parameters": [{"name": "modelwarden-result", "valueFrom": {"path": "/tmp/result.json"}}]}}]}
    retrain = {"argoWorkflow": {"workflowSpec": template, "parameters": {"dataset": "s3://data/fraud"}, "pollInterval": "1s"}}
    recorded = breach_with_restarts(kube, operator_factory, "argo-gate", prometheus.url, retrain)["status"]["lastRetrain"]
    time.sleep(2.0)  # a second Workflow, if one were launched, would show by now
    workflows = kube.list("workflows", api_version=ARGO)
    assert [w["metadata"]["name"] for w in workflows] == [recorded["jobName"]]
    assert recorded["backend"] == "ArgoWorkflow" and recorded["outcome"] == "Running" and recorded["trigger"] == "Breach"
    workflow = workflows[0]
    sent = {k: workflow[k] for k in ("apiVersion", "kind", "spec")} | {"metadata": {
        k: workflow["metadata"][k] for k in ("name", "namespace", "labels", "annotations", "ownerReferences")}}
    assert Workflow.model_validate(sent).model_dump(by_alias=True, exclude_none=True) == sent  # Argo's own models
    arguments = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert arguments["MODELWARDEN_BREACH_ID"] == recorded["breachId"] and arguments["dataset"] == "s3://data/fraud"
    assert workflow["metadata"]["ownerReferences"][0]["kind"] == "DriftPolicy"

    name = recorded["jobName"]
    set_workflow_status(kube, name, {"phase": "Running", "startedAt": "2026-12-01T00:00:00Z"})
    time.sleep(2.0)
    assert last_retrain(kube, "argo-gate")["outcome"] == "Running"
    result = {"modelUri": "s3://models/fraud/7", "version": "7"}
    # As Argo records it: the entrypoint's outputs on the root node (status.outputs only for a globalName).
    set_workflow_status(kube, name, {"phase": "Succeeded", "finishedAt": "2026-12-01T00:10:00Z", "nodes": {name: {
        "id": name, "name": name, "type": "Pod", "templateName": "train", "phase": "Succeeded",
        "outputs": {"parameters": [{"name": "modelwarden-result", "value": json.dumps(result)}]}}}})
    done = kube.wait_for("driftpolicies", "argo-gate", lambda o: status(o)["lastRetrain"]["outcome"] != "Running", timeout=60)
    finished = done["status"]["lastRetrain"]
    assert finished["outcome"] == "Succeeded", finished
    assert finished["result"] == {"modelUri": "s3://models/fraud/7", "version": "7", "reportedBy": "workflowOutput"}
    events = reasons(kube, "argo-gate")
    # At most once (an operator killed between the status write and posting its Event says nothing).
    assert events.count("RetrainLaunched") + events.count("RetrainAdopted") <= 1
    assert events.count("RetrainSucceeded") == 1 and "RetrainFailed" not in events
    assert len(kube.list("workflows", api_version=ARGO)) == 1


@pytest.fixture
def airflow(tmp_path):
    from tests.airflow_server import AirflowServer

    server = AirflowServer(tmp_path / "airflow", FIXTURES / "airflow" / "dags").start()
    yield server
    server.stop()


def opted_in_secret(kube, name: str, data: dict[str, str]) -> None:
    kube.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": {"modelwarden.io/policy-use": "true"}},
                            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def test_airflow_one_dag_run_per_breach_across_restarts_to_success_and_to_failure(kube, kubelet, operator_factory, fake_prometheus, airflow):
    opted_in_secret(kube, "airflow-user", {"username": airflow.username, "password": airflow.password})
    prometheus = fake_prometheus(value=5)
    retrain = {"airflow": {"url": airflow.url, "dagId": "modelwarden_retrain", "authSecretRef": {"secretName": "airflow-user"},
                           "conf": {"dataset": "s3://data/fraud"}, "pollInterval": "1s", "timeout": "30s"}, "cooldown": "1h"}  # 1h: the manual run below is not replaced by this breach launched again
    recorded = breach_with_restarts(kube, operator_factory, "airflow-gate", prometheus.url, retrain)["status"]["lastRetrain"]
    run_id = f"modelwarden.default.{recorded['jobName']}"
    api = airflow.session()
    done = kube.wait_for("driftpolicies", "airflow-gate", lambda o: status(o)["lastRetrain"]["outcome"] != "Running", timeout=240)
    finished = done["status"]["lastRetrain"]
    runs = api.get(f"{airflow.api}/dags/modelwarden_retrain/dagRuns", timeout=30).json()["dag_runs"]
    assert [r["dag_run_id"] for r in runs] == [run_id]  # one run for the breach, across the restarts
    assert finished["outcome"] == "Succeeded" and finished["backend"] == "Airflow", finished
    assert "no MLflow tracking URI" in finished["resultError"]  # nothing to roll out: said, not guessed
    conf = json.loads((airflow.conf_dir / f"{run_id}.json").read_text())
    assert conf["MODELWARDEN_BREACH_ID"] == recorded["breachId"] and conf["dataset"] == "s3://data/fraud"
    assert conf["MODELWARDEN_FAILING_CHECKS"][0]["check"] == "custom/errors"

    # A manual run of a DAG that fails: followed to "failed".
    body = kube.get("driftpolicies", "airflow-gate")
    body["spec"]["actions"]["retrain"]["airflow"]["conf"] = {"fail": True}
    body["metadata"]["annotations"] = {"modelwarden.io/retrain": "again"}
    kube.session.put(f"{kube.url}/apis/modelwarden.io/v1alpha1/namespaces/default/driftpolicies/airflow-gate", json=body).raise_for_status()
    failed = kube.wait_for("driftpolicies", "airflow-gate", lambda o: status(o)["lastRetrain"]["trigger"] == "Manual"
                           and status(o)["lastRetrain"]["outcome"] != "Running", timeout=240)["status"]["lastRetrain"]
    assert failed["outcome"] == "Failed" and failed["jobName"] != recorded["jobName"], failed
    states = {r["dag_run_id"]: r["state"] for r in api.get(f"{airflow.api}/dags/modelwarden_retrain/dagRuns", timeout=30).json()["dag_runs"]}
    assert states == {run_id: "success", f"modelwarden.default.{failed['jobName']}": "failed"}
    events = reasons(kube, "airflow-gate")
    assert events.count("RetrainSucceeded") == 1 and events.count("RetrainFailed") == 1
    launched = [e["message"] for e in kube.list("events") if e["reason"] in ("RetrainLaunched", "RetrainAdopted")]
    # Each run said launched once, or adopted once when its status write was lost (a restart, or a
    # write refused because the policy changed meanwhile); the breach's run at most once (its operator
    # may have been killed after the status write, before posting the Event).
    assert sum(failed["jobName"] in m for m in launched) == 1 and sum(recorded["jobName"] in m for m in launched) <= 1


def test_kubeflow_one_run_per_breach_across_restarts_every_request_valid_for_kfps_swagger(kube, kubelet, operator_factory, fake_prometheus):
    from tests.kfp_standin import KfpStandIn

    opted_in_secret(kube, "kfp-token", {"token": "s3cret"})
    with KfpStandIn(token="s3cret") as kfp:
        prometheus = fake_prometheus(value=5)
        retrain = {"kubeflow": {"url": kfp.url, "pipelineId": "p-fraud", "pipelineVersionId": "v-4", "experimentId": "e-1",
                                "parameters": {"epochs": 5}, "tokenSecretRef": {"name": "kfp-token", "key": "token"}, "pollInterval": "1s"}}
        recorded = breach_with_restarts(kube, operator_factory, "kfp-gate", prometheus.url, retrain)["status"]["lastRetrain"]
        time.sleep(2.0)
        assert [r["display_name"] for r in kfp.runs.values()] == [f"modelwarden.default.{recorded['jobName']}"]
        assert kfp.invalid == [] and not getattr(kfp, "bugs", [])  # every request the operator sent was valid
        (run_id, run), = kfp.runs.items()
        assert run["pipeline_version_reference"] == {"pipeline_id": "p-fraud", "pipeline_version_id": "v-4"}
        context = json.loads(run["runtime_config"]["parameters"]["modelwarden_context"])
        assert context["MODELWARDEN_BREACH_ID"] == recorded["breachId"] and run["runtime_config"]["parameters"]["epochs"] == 5
        kfp.set_state(run_id, "RUNNING")
        asked = len(kfp.requests)
        wait_for(lambda: len(kfp.requests) >= asked + 2, timeout=60, message="the running run asked for again")
        assert last_retrain(kube, "kfp-gate")["outcome"] == "Running"
        kfp.set_state(run_id, "FAILED", error={"code": 2, "message": "train: OOMKilled"})
        done = kube.wait_for("driftpolicies", "kfp-gate", lambda o: status(o)["lastRetrain"]["outcome"] != "Running", timeout=60)
        assert done["status"]["lastRetrain"]["outcome"] == "Failed"
        failed = [e for e in kube.list("events") if e["reason"] == "RetrainFailed"]
        assert len(failed) == 1 and "OOMKilled" in failed[0]["message"] and "Kubeflow run" in failed[0]["message"]
        assert len(kfp.runs) == 1 and kfp.invalid == []
        assert all(r[1] == "/apis/v2beta1/runs" or r[1].startswith("/apis/v2beta1/runs/") for r in kfp.requests)


def lose_the_status_write(kube, name: str) -> None:
    """What a lost status write leaves behind: the run exists, status does not record it, and the
    breach the next evaluation decides is another one (failingSince of a re-judged instant), so its
    run would have another name: only adoption keeps it to one run."""
    kube.patch("driftpolicies", name, {"status": {"lastRetrain": None, "lastAction": None,
                                                  "failingSince": "2026-12-03T00:00:00Z"}}, subresource="status")


@pytest.mark.parametrize("backend", ["argoWorkflow", "airflow", "kubeflow"])
def test_a_run_whose_status_write_was_lost_is_adopted_not_launched_again(kube, kubelet, operator_factory, fake_prometheus, backend, request):
    from tests.kfp_standin import KfpStandIn

    prometheus = fake_prometheus(value=5)
    with KfpStandIn() as kfp:
        if backend == "argoWorkflow":
            install_workflow_crd(kube)
            retrain = {"argoWorkflow": {"workflowTemplateRef": {"name": "fraud-retrain"}, "pollInterval": "1s"}}
            runs = lambda: [w["metadata"]["name"] for w in kube.list("workflows", api_version=ARGO)]  # noqa: E731
        elif backend == "airflow":
            airflow = request.getfixturevalue("airflow")
            opted_in_secret(kube, "airflow-token", {"token": airflow.token()})
            retrain = {"airflow": {"url": airflow.url, "dagId": "modelwarden_retrain", "pollInterval": "1s", "timeout": "30s",
                                   "tokenSecretRef": {"name": "airflow-token", "key": "token"}, "conf": {"fail": True}}}
            api = airflow.session()
            runs = lambda: [r["dag_run_id"].removeprefix("modelwarden.default.")  # noqa: E731
                            for r in api.get(f"{airflow.api}/dags/modelwarden_retrain/dagRuns", timeout=30).json()["dag_runs"]]
        else:
            retrain = {"kubeflow": {"url": kfp.url, "pipelineId": "p", "pipelineVersionId": "v", "pollInterval": "1s"}}
            runs = lambda: [r["display_name"].removeprefix("modelwarden.default.") for r in kfp.runs.values()]  # noqa: E731
        operator = operator_factory("-A", env=FAST)
        start_canary(kube)
        kube.create("driftpolicies", policy("lost", prometheus.url, threshold=2, retrain=retrain))
        first = kube.wait_for("driftpolicies", "lost", lambda o: (status(o).get("lastRetrain") or {}).get("jobName"), timeout=90)
        launched = first["status"]["lastRetrain"]["jobName"]
        assert runs() == [launched]
        operator.kill()
        lose_the_status_write(kube, "lost")
        operator_factory("-A", env=FAST)
        adopted = kube.wait_for("driftpolicies", "lost", lambda o: (status(o).get("lastRetrain") or {}).get("jobName"), timeout=90)
        looks = adopted["status"]["looks"]
        kube.wait_for("driftpolicies", "lost", lambda o: status(o)["looks"] >= looks + 5, timeout=90)  # five more failing evaluations
        assert runs() == [launched] and kfp.invalid == []
        record = last_retrain(kube, "lost")
        # Still running; the Airflow DAG run (conf "fail") may have failed by now: followed either way.
        assert record["jobName"] == launched and record["trigger"] == "Breach"
        assert record["outcome"] == ("Running" if backend != "airflow" else record["outcome"]) and record["outcome"] != "Succeeded"
        assert record["backend"] == {"argoWorkflow": "ArgoWorkflow", "airflow": "Airflow", "kubeflow": "Kubeflow"}[backend]
        assert record["breachId"] == first["status"]["lastRetrain"]["breachId"]  # its lineage, from what it was told
        # Adopted after the lost write (the first operator, killed as soon as status showed the run,
        # may not have posted its RetrainLaunched yet: Events follow the status write).
        said = reasons(kube, "lost")
        assert said.count("RetrainAdopted") >= 1 and said.count("RetrainLaunched") + said.count("RetrainAdopted") <= 2
