"""The retraining backends' pure parts: what each is sent (validated against the backend's own
published models: hera's Argo models, KFP's swagger) and how each one's answer reads as a JobState."""

from __future__ import annotations

import datetime
import json

import pytest
from hera.workflows.models import Workflow
from pydantic import ValidationError

from modelwarden.api.actions import RetrainSpec
from modelwarden.api.retrainers import AirflowRetrain, ArgoWorkflowRetrain, KubeflowRetrain
from modelwarden.builders.jobs import PolicyOwner, RetrainContext
from modelwarden.builders.retrainruns import airflow_dag_run, argo_workflow, external_run_name, kubeflow_run
from modelwarden.contract.retraining import CONTEXT_ANNOTATION
from modelwarden.planning.retraining import JobOutcome, run_noun
from modelwarden.planning.runstates import airflow_state, kubeflow_state, workflow_result_parameter, workflow_state
from tests.kfp_standin import SPEC, validator

OWNER = PolicyOwner("drift", "ml", "uid-1")
CONTEXT = RetrainContext(model="fraud", namespace="ml", track="stable", policy="drift", reason="psi/amount failed 2/2",
                         version="3", failing_checks=({"check": "psi/amount", "value": 0.4},), breach_id="ml/drift-retrain-1a2b3c4d",
                         window_start=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
                         window_end=datetime.datetime(2026, 1, 1, 1, tzinfo=datetime.timezone.utc), stable_version="3")
INLINE = {"entrypoint": "train", "arguments": {"parameters": [{"name": "epochs", "value": "5"}, {"name": "MODELWARDEN_MODEL", "value": "x"}]},
          "templates": [{"name": "train", "container": {"image": "trainer:1", "args": ["{{workflow.parameters.MODELWARDEN_BREACH_ID}}"]}}]}


def hera_round_trip(body: dict) -> dict:
    """Argo's published model of a Workflow: it must parse, and give back every field we sent (none unknown to Argo)."""
    return Workflow.model_validate(body).model_dump(by_alias=True, exclude_none=True)


@pytest.mark.parametrize("source", [{"workflowTemplateRef": {"name": "fraud-retrain", "clusterScope": True}}, {"workflowSpec": INLINE}])
def test_every_workflow_validates_against_argos_models_and_carries_the_context(source):
    argo = ArgoWorkflowRetrain.model_validate({**source, "parameters": {"dataset": "s3://data/fraud"}, "metadata": {"labels": {"team": "risk"}}})
    body = argo_workflow(OWNER, argo, "drift-retrain-1a2b3c4d", "Breach", CONTEXT)
    assert hera_round_trip(body) == body
    arguments = {p["name"]: p["value"] for p in body["spec"]["arguments"]["parameters"]}
    assert arguments["MODELWARDEN_BREACH_ID"] == "ml/drift-retrain-1a2b3c4d" and arguments["MODELWARDEN_TRIGGER"] == "Breach"
    assert arguments["MODELWARDEN_MODEL"] == "fraud"  # ours win over a same-named template argument
    assert arguments["dataset"] == "s3://data/fraud" and json.loads(arguments["MODELWARDEN_CONTEXT"])["MODELWARDEN_VERSION"] == "3"
    assert len(arguments) == len(body["spec"]["arguments"]["parameters"])  # no name twice
    meta = body["metadata"]
    assert meta["name"] == "drift-retrain-1a2b3c4d" and meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["labels"]["team"] == "risk" and meta["labels"]["modelwarden.io/trigger"] == "breach"
    assert json.loads(meta["annotations"][CONTEXT_ANNOTATION])["MODELWARDEN_FAILING_CHECKS"][0]["check"] == "psi/amount"
    if "workflowSpec" in source:
        assert arguments["epochs"] == "5" and body["spec"]["templates"] == INLINE["templates"]
    else:
        assert body["spec"]["workflowTemplateRef"] == {"name": "fraud-retrain", "clusterScope": True}


def test_a_kubeflow_run_validates_against_kfps_swagger():
    kubeflow = KubeflowRetrain.model_validate({"url": "http://ml-pipeline.kubeflow:8888", "pipelineId": "p-1", "pipelineVersionId": "v-2",
                                               "experimentId": "e-3", "serviceAccount": "pipeline-runner", "parameters": {"epochs": 5}})
    body = kubeflow_run(kubeflow, external_run_name("ml", "drift-retrain-1a2b3c4d"), "Manual", CONTEXT)
    create = SPEC["paths"]["/apis/v2beta1/runs"]["post"]
    schema = next(p for p in create["parameters"] if p["in"] == "body")["schema"]
    assert list(validator(schema).iter_errors(body)) == []
    assert body["display_name"] == "modelwarden.ml.drift-retrain-1a2b3c4d" and body["experiment_id"] == "e-3"
    parameters = body["runtime_config"]["parameters"]
    assert parameters["epochs"] == 5 and json.loads(parameters["modelwarden_context"])["MODELWARDEN_TRIGGER"] == "Manual"
    quiet = kubeflow.model_copy(update={"context_parameter": ""})
    assert kubeflow_run(quiet, "x", "Manual", CONTEXT)["runtime_config"]["parameters"] == {"epochs": 5}


def test_an_airflow_run_is_named_and_told_the_context():
    airflow = AirflowRetrain.model_validate({"url": "http://airflow:8080", "dagId": "fraud_retrain", "conf": {"MODELWARDEN_MODEL": "x", "size": 3}})
    body = airflow_dag_run(airflow, external_run_name("ml", "drift-retrain-1a2b3c4d"), "Breach", CONTEXT)
    assert set(body) == {"dag_run_id", "logical_date", "conf", "note"} and body["logical_date"] is None
    assert body["dag_run_id"] == "modelwarden.ml.drift-retrain-1a2b3c4d"
    assert body["conf"]["MODELWARDEN_MODEL"] == "fraud" and body["conf"]["size"] == 3
    assert body["conf"]["MODELWARDEN_FAILING_CHECKS"] == [{"check": "psi/amount", "value": 0.4}]  # typed, not a string


@pytest.mark.parametrize(("phase", "outcome"), [(None, JobOutcome.RUNNING), ("Pending", JobOutcome.RUNNING), ("Running", JobOutcome.RUNNING),
                                                ("Succeeded", JobOutcome.SUCCEEDED), ("Failed", JobOutcome.FAILED),
                                                ("Error", JobOutcome.FAILED), ("Terminating", JobOutcome.RUNNING)])
def test_a_workflow_phase_reads_as_an_outcome(phase, outcome):
    workflow = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"modelwarden.io/trigger": "breach"}},
                "status": {"phase": phase, "finishedAt": "2026-01-01T00:05:00Z", "message": "child 'train' failed",
                           "outputs": {"parameters": [{"name": "modelwarden-result", "value": "{}"}]}}}
    state = workflow_state("w", workflow)
    assert state.outcome == outcome and state.trigger == "breach"
    assert ("child 'train' failed" in state.message) == (outcome == JobOutcome.FAILED)
    assert workflow_result_parameter(workflow, "modelwarden-result") == "{}" and workflow_result_parameter({}, "modelwarden-result") == ""
    # Without a globalName Argo records the entrypoint's outputs on the root node only (named as the Workflow).
    root = {"metadata": {"name": "w"}, "status": {"nodes": {"w-123": {"outputs": {"parameters": [{"name": "modelwarden-result", "value": "no"}]}},
                                                           "w": {"outputs": {"parameters": [{"name": "modelwarden-result", "value": "yes"}]}}}}}
    assert workflow_result_parameter(root, "modelwarden-result") == "yes"


@pytest.mark.parametrize(("state", "outcome"), [("queued", JobOutcome.RUNNING), ("running", JobOutcome.RUNNING),
                                                ("success", JobOutcome.SUCCEEDED), ("failed", JobOutcome.FAILED), ("", JobOutcome.RUNNING)])
def test_an_airflow_state_reads_as_an_outcome(state, outcome):
    found = airflow_state("r", {"state": state, "end_date": "2026-01-01T00:05:00Z", "queued_at": "2026-01-01T00:00:00Z"})
    assert found.outcome == outcome and found.started_at is not None


@pytest.mark.parametrize(("state", "outcome"), [("PENDING", JobOutcome.RUNNING), ("RUNNING", JobOutcome.RUNNING), ("PAUSED", JobOutcome.RUNNING),
                                                ("CANCELING", JobOutcome.RUNNING), ("SUCCEEDED", JobOutcome.SUCCEEDED),
                                                ("FAILED", JobOutcome.FAILED), ("CANCELED", JobOutcome.FAILED), ("SKIPPED", JobOutcome.FAILED)])
def test_a_kubeflow_state_reads_as_an_outcome(state, outcome):
    run = {"state": state, "created_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:05:00Z",
           "state_history": [{"state": state, "update_time": "2026-01-01T00:05:00Z", "error": {"code": 2, "message": "train: OOMKilled"}}]}
    found = kubeflow_state("r", run)
    assert found.outcome == outcome
    assert ("OOMKilled" in found.message) == (outcome == JobOutcome.FAILED)


def test_a_retrain_spec_names_exactly_one_backend():
    job = {"template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}}
    airflow = {"url": "http://airflow:8080", "dagId": "d"}
    assert RetrainSpec.model_validate({"jobTemplate": job}).backend == "Job"
    assert RetrainSpec.model_validate({"airflow": airflow}).backend == "Airflow"
    assert run_noun("Airflow") == "Airflow DAG run" and run_noun(None) == "Job"
    for bad, why in [({}, "exactly one"), ({"jobTemplate": job, "airflow": airflow}, "exactly one"),
                     ({"airflow": airflow, "schedule": "@daily"}, "schedule"),
                     ({"argoWorkflow": {"workflowTemplateRef": {"name": "t"}, "workflowSpec": INLINE}}, "exactly one of workflowTemplateRef"),
                     ({"argoWorkflow": {"workflowSpec": {"entrypoint": "nope", "templates": [{"name": "t"}]}}}, "no template is named"),
                     ({"argoWorkflow": {"workflowTemplateRef": {"name": "t"}, "parameters": {"MODELWARDEN_MODEL": "x"}}}, "operator's"),
                     ({"argoWorkflow": {"workflowTemplateRef": {"name": "t"}, "parameters": {"a b": "x"}}}, "letters, digits"),
                     ({"airflow": {**airflow, "timeout": "2m"}}, "timeout: at most 60s"),
                     ({"airflow": {**airflow, "pollInterval": "500ms"}}, "pollInterval: at least 1s"),
                     ({"kubeflow": {"url": "http://k:1", "pipelineId": "p", "pipelineVersionId": "v", "parameters": {"modelwarden_context": "{}"}}},
                      "contextParameter")]:
        with pytest.raises(ValidationError, match=why):
            RetrainSpec.model_validate(bad)


def test_a_run_its_backend_cannot_report_on_stays_running_and_says_why_once():
    from modelwarden.api.driftpolicy import DriftPolicyStatus, RetrainStatus
    from modelwarden.planning import policy
    from modelwarden.planning.retraining import JobState

    started = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    running = DriftPolicyStatus(last_retrain=RetrainStatus(job_name="drift-retrain-1", started_at=started, trigger="Breach", backend="Airflow"))
    blind = JobState("drift-retrain-1", JobOutcome.RUNNING, message="its backend cannot say now: HTTP 503")
    first = policy.follow_job(running, blind, started)
    assert first.status.last_retrain.outcome == "Running" and first.status.last_retrain.follow_error.endswith("HTTP 503")
    assert [(e.reason, e.message) for e in first.events] == [
        ("RetrainUnobservable", "Airflow DAG run drift-retrain-1: its backend cannot say now: HTTP 503")]
    again = policy.follow_job(first.status, blind, started)
    assert again.events == [] and again.status.last_retrain.follow_error is not None  # said once
    seen = policy.follow_job(again.status, JobState("drift-retrain-1", JobOutcome.RUNNING), started)
    assert seen.status.last_retrain.follow_error is None and seen.events == []


def test_runs_listed_from_a_backend_are_adopted_with_their_backend_and_lineage():
    from modelwarden.api.driftpolicy import DriftPolicyStatus
    from modelwarden.planning.retraining import adopt_unrecorded_job

    conf = {**json.loads(CONTEXT.document()), "MODELWARDEN_TRIGGER": "Breach"}
    listed = airflow_state("drift-retrain-1a2b3c4d", {"state": "running", "run_after": "2026-01-01T01:00:00Z", "conf": conf})
    assert listed.trigger == "breach" and listed.told["breach_id"] == "ml/drift-retrain-1a2b3c4d"
    adopted = adopt_unrecorded_job(DriftPolicyStatus(), [listed], "Airflow").last_retrain
    assert (adopted.job_name, adopted.backend, adopted.trigger, adopted.checks) == ("drift-retrain-1a2b3c4d", "Airflow", "Breach", ["psi/amount"])
    parameters = {"modelwarden_context": json.dumps(conf)}
    run = kubeflow_state("drift-retrain-1a2b3c4d", {"state": "PENDING", "created_at": "2026-01-01T01:00:00Z",
                                                    "runtime_config": {"parameters": parameters}}, "modelwarden_context")
    assert run.trigger == "breach" and run.told["parent_version"] == "3"
    assert kubeflow_state("x", {"state": "PENDING", "runtime_config": {"parameters": {"modelwarden_context": "not json"}}},
                          "modelwarden_context").told == {}


def test_a_run_older_than_the_policy_is_never_adopted():
    from modelwarden.api.driftpolicy import DriftPolicyStatus
    from modelwarden.planning.retraining import adopt_unrecorded_job

    created = datetime.datetime(2026, 2, 1, tzinfo=datetime.timezone.utc)
    conf = {**json.loads(CONTEXT.document()), "MODELWARDEN_TRIGGER": "Breach"}
    old = airflow_state("drift-retrain-0ld", {"state": "success", "run_after": "2026-01-01T00:00:00Z", "conf": conf})  # a deleted namesake's
    new = airflow_state("drift-retrain-n3w", {"state": "running", "run_after": "2026-02-01T00:00:30Z", "conf": conf})
    assert adopt_unrecorded_job(DriftPolicyStatus(), [old], "Airflow", created).last_retrain is None
    assert adopt_unrecorded_job(DriftPolicyStatus(), [old, new], "Airflow", created).last_retrain.job_name == "drift-retrain-n3w"


def test_an_adopted_manual_run_takes_its_token_and_is_not_launched_again():
    from modelwarden.api.driftpolicy import DriftPolicyStatus, RetrainStatus
    from modelwarden.planning import policy
    from modelwarden.planning.retraining import retrain_job_name
    from tests.unit.test_policy_decisions import T0, ctx

    context = ctx()
    adopted = DriftPolicyStatus(last_retrain=RetrainStatus(job_name=retrain_job_name(context.name, "manual:t1"), started_at=T0,
                                                           trigger="Manual", outcome="Failed", finished_at=T0))
    step = policy.manual_retrain(context, adopted, "t1", T0)
    assert step.retrain is None and step.status.retrain_token == "t1"
    assert policy.manual_retrain(context, adopted, "t2", T0).retrain is not None  # a new token is a new run


def test_a_tick_counts_a_run_finished_only_when_it_finished():
    from modelwarden.api.driftpolicy import DriftPolicyStatus, RetrainStatus
    from modelwarden.planning import tick
    from modelwarden.planning.retraining import JobState
    from tests.unit.test_policy_decisions import T0, ctx

    running = DriftPolicyStatus(last_retrain=RetrainStatus(job_name="r", started_at=T0, trigger="Breach", backend="Kubeflow"))
    blind = tick.decide_tick(ctx(), running, tick.Observations(target_found=True, job=JobState("r", JobOutcome.RUNNING, message="down")), T0)
    assert blind.finished is None and [e.reason for e in blind.events] == ["RetrainUnobservable"]
    done = tick.decide_tick(ctx(), blind.status, tick.Observations(target_found=True, job=JobState("r", JobOutcome.FAILED, T0)), T0)
    assert done.finished == JobOutcome.FAILED and done.status.last_retrain.follow_error is None


def test_a_kubeflow_run_without_a_context_parameter_is_known_by_its_description():
    kubeflow = KubeflowRetrain.model_validate({"url": "http://k:1", "pipelineId": "p", "pipelineVersionId": "v", "contextParameter": ""})
    body = kubeflow_run(kubeflow, "modelwarden.ml.drift-retrain-1", "Manual", CONTEXT)
    assert kubeflow_state("drift-retrain-1", {**body, "state": "RUNNING", "created_at": "2026-01-01T00:00:00Z"}).trigger == "manual"
