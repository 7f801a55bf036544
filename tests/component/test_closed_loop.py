"""The closed loop with the real operator and a real control plane (policies' Prometheus answers
from tests/simulators.py): a stable breach launches one retraining Job; its result runs in shadow,
passes the label-free gate, advances as a canary and is promoted, with its lineage, the user's spec
untouched, and the operator SIGKILLed at every stage; a bad result is rejected and stable stays."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

from tests.controlplane.support import wait_for

BIN = Path(sys.executable).parent

FAST = {"MODELWARDEN_RECONCILE_INTERVAL": "0.3"}
ARGS = ("-A", "--scrape-interval", "1s")
MD = {
    "apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "default"},
    "spec": {
        "model": "fraud", "stable": {"version": "1", "modelUri": "file:///m/1"}, "traffic": {"router": "istio"},
        "candidates": {"shadow": {"policy": "shadow-gate", "duration": "3s"},
                       "canary": {"steps": [{"weight": 30, "pause": "2s"}, {"weight": 60, "pause": "2s"}]},
                       "autoPromote": True, "cooldown": "1h"},
    },
}
TRAINER = {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}}}
RESULT = json.dumps({"modelUri": "file:///m/2", "version": "2"})


def policy(name: str, track: str, url: str, **actions) -> dict:
    return {"apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": name, "namespace": "default"},
            "spec": {"targetRef": {"name": "fraud"}, "track": track, "interval": "1s", "window": "4s", "minSamples": 1,
                     "failureThreshold": 2, "checks": [{"name": "errors", "query": 'sum(errors{ {{ selector }} })', "max": 1}],
                     "prometheus": {"url": url, "timeout": "1s"}, "actions": {"rollback": track == "canary", **actions}}}


def status(obj: dict | None) -> dict:
    return (obj or {}).get("status") or {}


def reasons(kube) -> list[str]:
    return [e["reason"] for e in kube.list("events")]


def start(kube, operator_factory, fake_prometheus):
    metrics = {track: fake_prometheus(value=0) for track in ("stable", "shadow", "canary")}
    operator = operator_factory(*ARGS, env=FAST)
    kube.create("modeldeployments", copy.deepcopy(MD))
    kube.wait_for("modeldeployments", "fraud", lambda o: (status(o).get("stable") or {}).get("ready"), timeout=90)
    kube.create("driftpolicies", policy("stable-drift", "stable", metrics["stable"].url, retrain={"jobTemplate": TRAINER}))
    kube.create("driftpolicies", policy("shadow-gate", "shadow", metrics["shadow"].url))
    kube.create("driftpolicies", policy("canary-gate", "canary", metrics["canary"].url))
    metrics["stable"].value = 5  # drift on stable: breach, one retraining Job
    breached = kube.wait_for("driftpolicies", "stable-drift", lambda o: (status(o).get("lastRetrain") or {}).get("jobName"), timeout=60)
    metrics["stable"].value = 0
    return operator, metrics, breached["status"]["lastRetrain"]["jobName"]


def candidate(kube) -> dict:
    return status(kube.get("modeldeployments", "fraud")).get("candidate") or {}


def command(cluster, program: str, *args: str) -> str:
    done = subprocess.run([str(BIN / program), *args, "--kubeconfig", str(cluster.kubeconfig_path)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def test_a_retrained_model_goes_shadow_canary_stable_by_itself_across_sigkills(cluster, kube, kubelet, operator_factory,
                                                                              fake_prometheus):
    operator, _, job = start(kube, operator_factory, fake_prometheus)
    spec = copy.deepcopy(kube.get("modeldeployments", "fraud")["spec"])
    env = {e["name"]: e.get("value", "") for e in kube.get("jobs", job)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELWARDEN_BREACH_ID"] == f"default/{job}" and env["MODELWARDEN_STABLE_VERSION"] == "1"
    assert env["MODELWARDEN_STABLE_MODEL_URI"] == "file:///m/1" and env["MODELWARDEN_CONTEXT_FILE"] == "/etc/modelwarden/retrain/context.json"
    pod_template = kube.get("jobs", job)["spec"]["template"]
    context = json.loads(pod_template["metadata"]["annotations"]["modelwarden.io/retrain-context"])
    assert context["MODELWARDEN_BREACH_ID"] == f"default/{job}" and isinstance(context["MODELWARDEN_FAILING_CHECKS"], list)

    kubelet.finish_job(job, succeeded=True, message=RESULT)
    stages = [
        ("the result is recorded", lambda: (status(kube.get("driftpolicies", "stable-drift")).get("lastRetrain") or {}).get("result")),
        ("the candidate runs in shadow", lambda: candidate(kube).get("stage") == "shadow"),
        ("the shadow gate passed: a canary", lambda: candidate(kube).get("stage") == "canary"),
        ("the canary's second step", lambda: status(kube.get("modeldeployments", "fraud")).get("canaryStep") == 1),
        ("promoted", lambda: (status(kube.get("modeldeployments", "fraud")).get("stable") or {}).get("version") == "2"),
    ]
    for what, reached in stages:
        wait_for(reached, timeout=120, message=what)
        operator.kill()  # SIGKILL at each stage: the next operator resumes from status alone
        operator = operator_factory(*ARGS, env=FAST)

    done = kube.wait_for("modeldeployments", "fraud", lambda o: next(
        (c for c in status(o).get("conditions", []) if c["type"] == "SpecBehind"), {}).get("status") == "True", timeout=60)
    st = done["status"]
    assert "candidate" not in st and [(r["version"], r["outcome"]) for r in st["candidates"]] == [("2", "Promoted")]
    lineage = st["stable"]["lineage"]
    assert (lineage["source"], lineage["job"], lineage["policy"], lineage["parentVersion"]) == ("retrain", job, "stable-drift", "1")
    assert lineage["breachId"] == f"default/{job}" and lineage["checks"] == ["custom/errors"]
    assert [g["stage"] for g in lineage["gates"]][:1] == ["shadow"] and "canary" in [g["stage"] for g in lineage["gates"]]
    assert [h["version"] for h in st["history"]] == ["1", "2"] and st["history"][-1]["lineage"]["job"] == job
    assert done["spec"] == spec  # the user's spec is never written
    assert len(kube.list("jobs")) == 1
    events = reasons(kube)
    for reason in ("CandidateStarted", "CandidateAdvanced", "CandidatePromoted"):
        assert events.count(reason) <= 1, (reason, events)  # an Event may be lost with a SIGKILL, never repeated

    # People see where it came from; Git catches up with the patch export-spec prints.
    shown = command(cluster, "kubectl-modelwarden", "history", "fraud")
    assert f"2: retrained by Job {job} (DriftPolicy stable-drift, breach default/{job}: custom/errors)" in shown
    assert "gates shadow shadow-gate Pass" in shown and "Promoted" in shown.split("Candidates:")[1]
    patch = json.loads(command(cluster, "modelwarden", "export-spec", "fraud", "-o", "json"))
    assert patch == {"spec": {"stable": {"version": "2", "modelUri": "file:///m/2", "sha256": None}}}
    kube.patch("modeldeployments", "fraud", patch)
    caught_up = kube.wait_for("modeldeployments", "fraud", lambda o: next(
        c for c in status(o)["conditions"] if c["type"] == "SpecBehind")["status"] == "False", timeout=60)
    assert caught_up["status"]["stable"]["version"] == "2" and "StableUpdated" not in reasons(kube)  # adopted, not rolled out
    assert command(cluster, "modelwarden", "export-spec", "fraud") == ""


def test_a_bad_retrained_model_is_rejected_in_shadow_and_stable_stays(kube, kubelet, operator_factory, fake_prometheus):
    _, metrics, job = start(kube, operator_factory, fake_prometheus)
    metrics["shadow"].value = 5  # the candidate's answers differ from stable's
    kubelet.finish_job(job, succeeded=True, message=RESULT)
    rejected = kube.wait_for("modeldeployments", "fraud", lambda o: status(o).get("candidates"), timeout=120)
    record = rejected["status"]["candidates"][-1]
    assert (record["version"], record["outcome"]) == ("2", "Rejected") and "shadow gate" in record["reason"]
    assert rejected["status"]["stable"]["version"] == "1" and "candidate" not in rejected["status"]
    wait_for(lambda: kube.get("deployments", "fraud-shadow") is None, timeout=60, message="the shadow's Deployment removed")
    wait_for(lambda: "CandidateRejected" in reasons(kube), timeout=30, message="the CandidateRejected Event")


def test_an_invalid_result_rolls_nothing_out(kube, kubelet, operator_factory, fake_prometheus):
    _, _, job = start(kube, operator_factory, fake_prometheus)
    kubelet.finish_job(job, succeeded=True, message='{"modelUri": "models:/fraud@champion"}')
    invalid = kube.wait_for("driftpolicies", "stable-drift", lambda o: (status(o).get("lastRetrain") or {}).get("resultError"), timeout=60)
    assert "alias or stage" in invalid["status"]["lastRetrain"]["resultError"]
    wait_for(lambda: "RetrainResultInvalid" in reasons(kube), timeout=30, message="the RetrainResultInvalid Event")
    assert "candidate" not in status(kube.get("modeldeployments", "fraud"))
