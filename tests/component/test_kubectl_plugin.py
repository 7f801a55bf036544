"""`kubectl modelwarden` (the kubectl-modelwarden console script) against the real operator process
and a real control plane, as the cluster's admin: every action is asserted on status, Events and
the route's weights, and the spec stays byte for byte what the user wrote."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

from tests.component.test_driftpolicy_controller import policy as evaluating_policy
from tests.component.test_modeldeployment_controller import DRIVES, FAST, MD, count_events, pass_current_step, phase_is, policy

PLUGIN = Path(sys.executable).parent / "kubectl-modelwarden"


def plugin(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PLUGIN), "--kubeconfig", str(cluster.kubeconfig_path), *args],
                          capture_output=True, text=True, timeout=180)


def ok(cluster, *args: str) -> str:
    done = plugin(cluster, *args)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def canary_weight(kube) -> int:
    service = kube.get("virtualservices", "fraud", api_version="networking.istio.io/v1")
    return next(r["weight"] for r in service["spec"]["http"][0]["route"] if r["destination"]["host"].startswith("fraud-canary"))


def spec_of(kube) -> tuple[str, int]:
    md = kube.get("modeldeployments", "fraud")
    return json.dumps(md["spec"], sort_keys=True), md["metadata"]["generation"]


def rollout(steps):
    body = copy.deepcopy(MD)
    del body["spec"]["shadow"]
    body["spec"]["traffic"] = {"router": "istio"}
    body["spec"]["canary"]["steps"] = steps
    return body


def test_pause_resume_approve_and_promote_a_canary(cluster, kube, kubelet, operator_factory):
    operator_factory(*DRIVES, env=FAST)
    kube.create("driftpolicies", policy("gate", "canary"))
    kube.create("modeldeployments", rollout([{"weight": 10, "pause": "1s"}, {"weight": 50, "pause": "1s", "approval": "required"},
                                             {"weight": 80, "pause": "1h"}]))
    kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status") or {}).get("canary", {}).get("ready"))
    written = spec_of(kube)
    view = json.loads(ok(cluster, "get", "fraud", "-o", "json"))
    assert (view["phase"], view["step"], [p["name"] for p in view["policies"]]) == ("Progressing", "1/3", ["gate"])
    assert view["tracks"]["stable"]["version"] == "7" and view["tracks"]["canary"]["version"] == "8"

    # Paused: a passing gate moves nothing; the decision that saw the Pass (status.verdict) held the step.
    assert "acknowledged" in ok(cluster, "pause", "fraud")
    assert kube.get("modeldeployments", "fraud")["status"]["phase"] == "Paused"
    pass_current_step(kube, "gate")
    held = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"].get("verdict") == "Pass")
    assert held["status"]["canaryStep"] == 0 and canary_weight(kube) == 10
    ok(cluster, "resume", "fraud")
    kube.wait_for("modeldeployments", "fraud", lambda o: o["status"].get("canaryStep") == 1)

    # Step 2 needs a person: after its pause and a passing gate it waits, Suspended-like, for approve.
    pass_current_step(kube, "gate")
    kube.wait_for("modeldeployments", "fraud", phase_is("Paused"))
    assert "awaits approval" in ok(cluster, "get", "fraud")
    ok(cluster, "approve", "fraud")
    kube.wait_for("modeldeployments", "fraud", lambda o: o["status"].get("canaryStep") == 2)
    kube.wait_for("virtualservices", "fraud", lambda v: canary_weight(kube) == 80, api_version="networking.istio.io/v1")

    # Step 3 pauses an hour: promote declares it done, which promotes the canary.
    ok(cluster, "promote", "fraud")
    done = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"]["stable"]["version"] == "8")
    assert done["status"]["requests"]["promote"] and done["status"]["requests"]["approve"]
    assert count_events(kube, "StepApproved") == 1 and count_events(kube, "CanaryPaused") == 1
    assert count_events(kube, "CanaryResumed") == 1 and count_events(kube, "CanaryPromoted") == 1
    assert count_events(kube, "CanaryStepAdvanced", at_least=2) == 2
    history = json.loads(ok(cluster, "history", "fraud", "-o", "json"))
    assert [(h["version"], h["reason"]) for h in history] == [("7", "Initial"), ("8", "Promoted")]
    assert spec_of(kube) == written  # annotations only: the spec and its generation never changed


def test_abort_retry_and_promote_full(cluster, kube, kubelet, operator_factory):
    operator_factory(*DRIVES, env=FAST)
    kube.create("driftpolicies", policy("gate", "canary"))
    kube.create("modeldeployments", rollout([{"weight": 20, "pause": "1h"}, {"weight": 60, "pause": "1h"}]))
    kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status") or {}).get("canary", {}).get("ready"))
    written = spec_of(kube)
    ok(cluster, "abort", "fraud")
    aborted = kube.get("modeldeployments", "fraud")["status"]
    assert aborted["phase"] == "RolledBack" and aborted["rollback"]["reason"].startswith("aborted on request")
    kube.wait_for("virtualservices", "fraud", lambda v: canary_weight(kube) == 0, api_version="networking.istio.io/v1")
    assert "acknowledged" in ok(cluster, "retry", "fraud")
    kube.wait_for("modeldeployments", "fraud", phase_is("Progressing"))
    ok(cluster, "promote", "fraud", "--full")
    promoted = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"]["stable"]["version"] == "8")
    assert "canary" not in promoted["status"]
    assert count_events(kube, "CanaryAborted") == 1 and count_events(kube, "RetryRequested") == 1
    assert "on request (modelwarden.io/promote-full=" in next(e["message"] for e in kube.list("events") if e["reason"] == "CanaryPromoted")
    # Nothing to act on now: acknowledged, and said so (exit 1 with the reason, and an Event).
    ignored = plugin(cluster, "abort", "fraud")
    assert ignored.returncode == 1 and "nothing was done: no canary in progress" in ignored.stderr, ignored.stderr
    assert count_events(kube, "RequestIgnored") == 1
    assert spec_of(kube) == written


def test_evaluate_now_and_the_errors_a_person_sees(cluster, kube, kubelet, operator_factory, fake_prometheus):
    prometheus = fake_prometheus(value=0)
    operator_factory("-A", env=FAST)
    kube.create("modeldeployments", rollout([{"weight": 20, "pause": "1h"}]))
    body = evaluating_policy("gate", prometheus.url, interval="1h")
    body["spec"]["window"] = "1h"
    kube.create("driftpolicies", body)
    first = kube.wait_for("driftpolicies", "gate", lambda o: (o.get("status") or {}).get("lastEvaluation"), timeout=120)
    looked = len(first["status"]["evaluations"])
    out = ok(cluster, "evaluate-now", "gate")
    assert "evaluated: Pass" in out and "custom/errors" in out
    again = kube.get("driftpolicies", "gate")["status"]
    assert len(again["evaluations"]) == looked + 1 and again["evaluateToken"]  # exactly one more, an hour early
    assert count_events(kube, "EvaluationRequested") == 1
    missing = plugin(cluster, "promote", "nothing-here")
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr
