"""The retraining Job contract: what the Job is told (env and the mounted context file, validated as
a Job), and what it may report (a termination message or an MLflow version): a bad result is refused
with a reason, never turned into a rollout."""

import json

import pytest

from modelwarden.builders.jobs import CONTEXT_VOLUME, RetrainContext, retrain_job
from modelwarden.commands.kubectl_view import describe_lineage, history, render_history, spec_patch
from modelwarden.contract.retraining import (
    CONTEXT_ANNOTATION,
    InvalidResult,
    ReportedModel,
    ResultPending,
    breach_id,
    from_model_version,
    parse_termination_message,
)
from modelwarden.retrainers.job import termination_message
from tests.unit.test_retrain_and_notifications import CONTEXT, OWNER, TEMPLATE
from tests.validation import validate_any

FULL = RetrainContext(**{**CONTEXT.__dict__, "breach_id": breach_id("ml", "gate-retrain-0123abcd"), "stable_version": "7",
                         "stable_model_uri": "models:/fraud/7", "mlflow_tracking_uri": "http://mlflow:5000",
                         "reference": {"track": "stable"}})


def test_the_job_is_told_its_context_in_env_and_in_a_mounted_file():
    job = retrain_job(OWNER, TEMPLATE, "gate-retrain-0123abcd", "Breach", FULL)
    assert validate_any(job) == []
    pod = job["spec"]["template"]
    context = json.loads(pod["metadata"]["annotations"][CONTEXT_ANNOTATION])
    assert context["MODELWARDEN_BREACH_ID"] == "ml/gate-retrain-0123abcd" and context["MODELWARDEN_STABLE_MODEL_URI"] == "models:/fraud/7"
    assert context["MODELWARDEN_FAILING_CHECKS"][0]["check"] == "drift/features" and context["MODELWARDEN_REFERENCE"] == {"track": "stable"}
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == CONTEXT_VOLUME)
    assert volume["downwardAPI"]["items"] == [{"path": "context.json",
                                               "fieldRef": {"fieldPath": f"metadata.annotations['{CONTEXT_ANNOTATION}']"}}]
    for container in (*pod["spec"]["initContainers"], *pod["spec"]["containers"]):
        values = {e["name"]: e["value"] for e in container["env"]}
        assert values["MODELWARDEN_CONTEXT_FILE"] == "/etc/modelwarden/retrain/context.json"
        assert values["MODELWARDEN_RESULT_FILE"] == "/dev/termination-log" and values["MODELWARDEN_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert {"name": CONTEXT_VOLUME, "mountPath": "/etc/modelwarden/retrain", "readOnly": True} in container["volumeMounts"]
    again = retrain_job(OWNER, TEMPLATE, "gate-retrain-0123abcd", "Breach", FULL)
    assert again == job  # deterministic: a repeat is the same Job (its name makes a second create a 409)


@pytest.mark.parametrize("message,expected", [
    ('{"modelUri": "models:/fraud/9"}', ReportedModel("models:/fraud/9", "9", "9")),
    ('{"modelUri": "s3://models/fraud/9/model.joblib", "version": "9", "runId": "abc123"}',
     ReportedModel("s3://models/fraud/9/model.joblib", "9", None, "abc123")),
])
def test_a_valid_termination_message(message, expected):
    assert parse_termination_message(message) == expected


@pytest.mark.parametrize("message,problem", [
    ("done!", "not JSON"),
    ("[1]", "JSON object"),
    ('{"version": "9"}', "no modelUri"),
    ('{"modelUri": "models:/fraud@champion"}', "alias or stage"),
    ('{"modelUri": "http://x/model", "version": "9"}', "plain http"),
    ('{"modelUri": "s3://models/m", "version": "-9"}', "label value"),
    ('{"modelUri": "s3://models/m"}', "label value"),
    ('{"modelUri": "s3://models/m", "version": "9", "runId": "../x"}', "MLflow run id"),
    ("x" * 5000, "longer than 4096"),
    ('{"modelUri": "s3://models/my model.joblib", "version": "9"}', "without whitespace"),
    ('{"modelUri": "https://x/' + "a" * 2100 + '", "version": "9"}', "at most 2048"),
])
def test_an_invalid_termination_message_says_why(message, problem):
    with pytest.raises(InvalidResult, match=problem):
        parse_termination_message(message)


def test_an_mlflow_version_tagged_with_the_breach():
    assert from_model_version({"name": "fraud", "version": "4", "run_id": "r4", "status": "READY"}) == ReportedModel(
        "models:/fraud/4", "4", "4", "r4", "mlflow")
    with pytest.raises(ResultPending, match="still registering"):  # read again later, never invalid for good
        from_model_version({"name": "fraud", "version": "4", "status": "PENDING_REGISTRATION"})
    with pytest.raises(InvalidResult, match="FAILED_REGISTRATION"):
        from_model_version({"name": "fraud", "version": "4", "status": "FAILED_REGISTRATION"})


def test_the_termination_message_is_read_from_a_succeeded_pod_in_container_order():
    def pod(phase, *messages):
        return {"spec": {"containers": [{"name": f"c{i}"} for i in range(len(messages))]},
                "status": {"phase": phase, "containerStatuses": [
                    {"name": f"c{i}", "state": {"terminated": {"message": m}}} for i, m in reversed(list(enumerate(messages)))]}}
    assert termination_message([pod("Failed", "x"), pod("Succeeded", "", "second"), pod("Succeeded", "third")]) == "second"
    assert termination_message([pod("Failed", '{"modelUri": "s3://b/k"}')]) == ""


MD = {"metadata": {"name": "fraud"}, "status": {
    "stable": {"version": "9", "modelUri": "models:/fraud/9", "resolvedUri": "models:/fraud/9"},
    "conditions": [{"type": "SpecBehind", "status": "True"}],
    "history": [{"version": "7", "modelUri": "s3://m/7", "reason": "Superseded"},
                {"version": "9", "modelUri": "models:/fraud/9", "reason": "Promoted", "lineage": {
                    "source": "retrain", "job": "gate-retrain-1", "policy": "gate", "breachId": "ml/gate-retrain-1",
                    "checks": ["drift/age"], "runId": "r9", "modelVersion": "9", "parentVersion": "7",
                    "gates": [{"stage": "shadow", "policy": "sg", "verdict": "Pass", "checks": ["drift/prediction", "agreement/rate"]},
                              {"stage": "canary", "policy": "cg", "verdict": "Pass"}]}}],
    "candidates": [{"id": "retrain:ml/gate-retrain-1", "version": "9", "outcome": "Promoted", "at": "2026-01-01T00:00:00Z"}]}}


def test_history_shows_lineage_and_export_spec_the_patch():
    entries = history(MD)
    assert entries[1]["lineage"]["job"] == "gate-retrain-1" and entries[0]["lineage"] is None
    text = render_history(entries, MD)
    assert "9: retrained by Job gate-retrain-1 (DriftPolicy gate, breach ml/gate-retrain-1: drift/age)" in text
    assert "gates shadow sg Pass (drift/prediction agreement/rate), canary cg Pass" in text and "Candidates:" in text
    assert describe_lineage({"source": "alias", "parentVersion": "7"}) == "from alias; parent 7"
    assert spec_patch(MD) == {"spec": {"stable": {"version": "9", "modelUri": "models:/fraud/9", "sha256": None}}}
    current = {**MD, "status": {**MD["status"], "conditions": [{"type": "SpecBehind", "status": "False"}]}}
    assert spec_patch(current) is None
