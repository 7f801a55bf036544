"""The real operator process evaluates DriftPolicies against Prometheus-API fakes (tests/simulators.py)
and acts through a real control plane: verdicts, rollback, retraining Jobs, CronJobs, faults, restarts."""

from __future__ import annotations

import copy
import random
import re
import time

import requests

from tests.controlplane.support import wait_for
from tests.processes import free_port

FAST = {"MODELWARDEN_RECONCILE_INTERVAL": "0.3"}  # policies tick on watch events and when due: no fast fallback
MD = {
    "apiVersion": "modelwarden.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "default"},
    "spec": {
        "model": "fraud",
        "stable": {"version": "1", "modelUri": "file:///m/1"},
        "canary": {"version": "2", "modelUri": "file:///m/2", "steps": [{"weight": 20, "pause": "1h"}]},
        "traffic": {"router": "istio"},
    },
}
# backoffLimit 0: a failed Pod fails the Job at once (the real Job controller backs off 10 s, 20 s, ... before retries).
TRAINER = {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "train", "image": "trainer:1", "env": [{"name": "MODELWARDEN_MODEL", "value": "x"}]}]}}}


def policy(name: str, url: str, threshold: int = 2, interval: str = "1s", **actions) -> dict:
    actions = {"rollback": True, "retrain": {"jobTemplate": TRAINER}, **actions}
    return {
        "apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "targetRef": {"name": "fraud"}, "track": "canary", "interval": interval, "window": "1m", "minSamples": 1,
            "failureThreshold": threshold, "checks": [{"name": "errors", "query": 'sum(errors{ {{ selector }} })', "max": 1}],
            "prometheus": {"url": url, "timeout": "1s"}, "actions": actions,
        },
    }


def status(obj: dict) -> dict:
    return obj.get("status") or {}


def reasons(kube, name: str | None = None) -> list[str]:
    return [e["reason"] for e in kube.list("events") if name is None or e.get("involvedObject", {}).get("name") == name]


def env_of(job: dict) -> dict:
    return {e["name"]: e.get("value", "") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def start_canary(kube) -> None:
    kube.create("modeldeployments", copy.deepcopy(MD))
    kube.wait_for("modeldeployments", "fraud", lambda o: (status(o).get("canary") or {}).get("ready"), timeout=90)


def metric_lines(port: int, name: str) -> list[str]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return [line for line in text.splitlines() if line.startswith(name)]


def test_breach_rolls_back_retrains_once_and_recovers(kube, kubelet, operator_factory, fake_prometheus):
    prometheus = fake_prometheus(value=0)
    metrics_port = free_port()
    operator_factory("-A", "--metrics-port", str(metrics_port), env=FAST)
    start_canary(kube)
    broken_receiver = fake_prometheus(mode="error")  # answers every POST with HTTP 500
    kube.create("driftpolicies", policy("gate", prometheus.url, alert={
        "webhook": {"url": f"{broken_receiver.url}/hook"}, "slack": {"webhookSecretRef": {"name": "missing", "key": "url"}}}))
    passing = kube.wait_for("driftpolicies", "gate", lambda o: status(o).get("phase") == "Passing")
    result = passing["status"]["lastEvaluation"]["results"][0]
    assert result["check"] == "custom/errors" and result["value"] == 0.0 and result["threshold"] == 1.0
    assert 'model="fraud"' in requests.utils.unquote(prometheus.queries[-1])

    prometheus.value = 5.0  # the canary starts failing
    rolled = kube.wait_for("modeldeployments", "fraud", lambda o: status(o).get("phase") == "RolledBack")
    # On the threshold's evaluation, or the next one when the reconcile ran after it (a busy machine).
    assert re.search(r"gate failed [23]x \(custom/errors\)", rolled["status"]["rollback"]["reason"]), rolled["status"]["rollback"]
    gate = kube.wait_for("driftpolicies", "gate", lambda o: (status(o).get("lastRetrain") or {}).get("jobName"))
    st = gate["status"]
    assert st["phase"] == "Failing" and st["consecutiveFailures"] >= 2
    assert next(c for c in st["conditions"] if c["type"] == "Breached")["status"] == "True"
    first_fail = next(e["time"] for e in st["evaluations"] if e["verdict"] == "Fail")
    assert st["failingSince"] == first_fail
    jobs = kube.list("jobs")
    assert [j["metadata"]["name"] for j in jobs] == [st["lastRetrain"]["jobName"]] and st["lastRetrain"]["trigger"] == "Breach"
    job = jobs[0]
    assert job["metadata"]["name"].startswith("gate-retrain-")
    assert job["metadata"]["ownerReferences"][0]["uid"] == gate["metadata"]["uid"]
    assert job["metadata"]["labels"]["modelwarden.io/policy"] == "gate"
    env = env_of(job)
    assert env["MODELWARDEN_MODEL"] == "fraud" and env["MODELWARDEN_VERSION"] == "2" and env["MODELWARDEN_TRACK"] == "canary"
    assert env["MODELWARDEN_POLICY"] == "gate" and env["MODELWARDEN_TRIGGER"] == "Breach" and '"custom/errors"' in env["MODELWARDEN_FAILING_CHECKS"]
    assert env["MODELWARDEN_WINDOW_START"] < env["MODELWARDEN_WINDOW_END"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"

    # More failing evaluations of the same breach: no second Job, one alert, one rollback request.
    kube.wait_for("driftpolicies", "gate", lambda o: status(o)["consecutiveFailures"] >= st["consecutiveFailures"] + 2)
    assert len(kube.list("jobs")) == 1
    events = reasons(kube, "gate")
    assert events.count("QualityDegraded") == 2  # the first Fail (1/2), then the breach alert's own Event
    for reason in ("RollbackRequested", "RetrainLaunched", "AlertSent"):
        assert events.count(reason) == 1, (reason, events)
    # Failed channels are reported (after bounded retries) without holding anything up.
    failed = {e["message"].split(":")[0]: e["message"] for e in kube.list("events") if e["reason"] == "AlertFailed"}
    assert set(failed) == {"webhook", "slack"} and "HTTP 500" in failed["webhook"] and "Secret missing not found" in failed["slack"]
    assert len(broken_receiver.queries) == 3
    assert "delivered to event" in next(e["message"] for e in kube.list("events") if e["reason"] == "AlertSent")

    # The Job finishes; status follows it.
    kubelet.finish_job(job["metadata"]["name"], succeeded=True)
    done = kube.wait_for("driftpolicies", "gate", lambda o: status(o)["lastRetrain"]["outcome"] == "Succeeded")
    assert done["status"]["lastRetrain"]["finishedAt"]
    # Events are posted after the status write that decided them, by kopf's poster: wait for it.
    wait_for(lambda: "RetrainSucceeded" in reasons(kube, "gate"), timeout=30, message="the RetrainSucceeded Event")

    # A manual trigger acts once per token.
    kube.patch("driftpolicies", "gate", {"metadata": {"annotations": {"modelwarden.io/retrain": "ticket-1"}}})
    manual = kube.wait_for("driftpolicies", "gate", lambda o: status(o).get("retrainToken") == "ticket-1")
    assert manual["status"]["lastRetrain"]["trigger"] == "Manual"
    manual_job = kube.get("jobs", manual["status"]["lastRetrain"]["jobName"])
    assert env_of(manual_job)["MODELWARDEN_TRIGGER"] == "Manual" and manual_job["metadata"]["labels"]["modelwarden.io/trigger"] == "manual"
    kubelet.finish_job(manual_job["metadata"]["name"], succeeded=False)
    kube.wait_for("driftpolicies", "gate", lambda o: status(o)["lastRetrain"]["outcome"] == "Failed")
    wait_for(lambda: "RetrainFailed" in reasons(kube, "gate"), timeout=30, message="the RetrainFailed Event")
    assert len(kube.list("jobs")) == 2

    # Recovery.
    prometheus.value = 0.0
    recovered = kube.wait_for("driftpolicies", "gate", lambda o: status(o).get("phase") == "Passing")
    assert recovered["status"]["consecutiveFailures"] == 0 and "failingSince" not in recovered["status"]
    kube.wait_for("driftpolicies", "gate", lambda o: next(c for c in status(o)["conditions"] if c["type"] == "Breached")["status"] == "False")
    wait_for(lambda: "Recovered" in reasons(kube, "gate"), timeout=30, message="the Recovered Event")
    assert len(kube.list("jobs")) == 2

    # Operator metrics, and their removal with the policy.
    fails = [line for line in metric_lines(metrics_port, "modelwarden_operator_evaluations_total") if 'policy="gate"' in line and 'verdict="Fail"' in line]
    assert fails and float(fails[0].split()[-1]) >= 2
    assert any('check="custom/errors"' in line for line in metric_lines(metrics_port, "modelwarden_operator_check_value"))
    assert 'modelwarden_operator_canary_weight{modeldeployment="fraud",namespace="default"} 0.0' in metric_lines(
        metrics_port, "modelwarden_operator_canary_weight")
    assert any('action="retrain"' in line for line in metric_lines(metrics_port, "modelwarden_operator_actions_total"))
    notifications = metric_lines(metrics_port, "modelwarden_operator_notifications_total")
    assert any('channel="event"' in line and 'outcome="sent"' in line for line in notifications)
    assert any('channel="webhook"' in line and 'outcome="failed"' in line for line in notifications)
    assert metric_lines(metrics_port, "modelwarden_operator_evaluation_duration_seconds_count")
    kube.delete("driftpolicies", "gate")
    deadline = time.monotonic() + 10
    while any('policy="gate"' in line for line in metric_lines(metrics_port, "modelwarden_operator_")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any('policy="gate"' in line for line in metric_lines(metrics_port, "modelwarden_operator_"))


def test_evaluations_reuse_one_keep_alive_connection_to_prometheus(kube, kubelet, operator_factory, fake_prometheus):
    prometheus = fake_prometheus(value=0.0)
    operator_factory("-A", env=FAST)
    start_canary(kube)
    kube.create("driftpolicies", policy("gate", prometheus.url))
    kube.wait_for("driftpolicies", "gate", lambda o: len(status(o).get("evaluations") or []) >= 5, timeout=60)
    assert len(prometheus.queries) >= 5
    assert prometheus.connections <= 2, (prometheus.connections, len(prometheus.queries))  # not one per evaluation


def test_schedule_keeps_a_cronjob_and_suspend_stops_evaluating(kube, kubelet, operator_factory, fake_prometheus):
    prometheus = fake_prometheus(value=0)
    operator_factory("-A", env=FAST)
    start_canary(kube)
    body = policy("gate", prometheus.url, interval="1s")
    body["spec"]["actions"]["retrain"]["schedule"] = "@daily"
    kube.create("driftpolicies", body)
    cronjob = kube.wait_for("cronjobs", "gate-retrain", lambda o: True)
    assert cronjob["spec"]["schedule"] == "@daily" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["metadata"]["ownerReferences"][0]["kind"] == "DriftPolicy"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", "") for e in pod["containers"][0]["env"]}
    assert env["MODELWARDEN_TRIGGER"] == "Schedule" and env["MODELWARDEN_VERSION"] == "2" and env["MODELWARDEN_MODEL"] == "fraud"
    kube.patch("driftpolicies", "gate", {"spec": {"actions": {"retrain": {"schedule": "0 3 * * 1"}}}})
    kube.wait_for("cronjobs", "gate-retrain", lambda o: o["spec"]["schedule"] == "0 3 * * 1")
    kube.patch("driftpolicies", "gate", {"spec": {"actions": {"retrain": {"schedule": None}}}})
    deadline = time.monotonic() + 10
    while kube.get("cronjobs", "gate-retrain") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kube.get("cronjobs", "gate-retrain") is None

    kube.patch("driftpolicies", "gate", {"spec": {"suspend": True}})
    suspended = kube.wait_for("driftpolicies", "gate", lambda o: status(o).get("phase") == "Suspended")
    count = len(suspended["status"]["evaluations"])
    time.sleep(2.5)  # more than two intervals
    assert len(kube.get("driftpolicies", "gate")["status"]["evaluations"]) == count


def test_faults_never_act(kube, kubelet, operator_factory, fake_prometheus):
    """Prometheus stopped / 500 / slower than the timeout / empty, a missing Secret or profile:
    Error or InsufficientData, never an action."""
    servers = {
        "error": (fake_prometheus(mode="error"), "Error"),
        "slow": (fake_prometheus(mode="slow", delay=2.5), "Error"),
        "empty": (fake_prometheus(mode="empty"), "InsufficientData"),
        "stopped": (fake_prometheus(), "Error"),
    }
    servers["stopped"][0].stop()
    operator_factory("-A", env=FAST)
    start_canary(kube)
    for name, (server, _) in servers.items():
        kube.create("driftpolicies", policy(name, server.url, threshold=1))
    # What an evaluation needs besides Prometheus: a Secret and a profile ConfigMap that do not exist.
    healthy = fake_prometheus(value=5)  # would fail the check, if the evaluation could run
    no_secret = policy("no-secret", healthy.url, threshold=1)
    no_secret["spec"]["prometheus"]["bearerTokenSecretRef"] = {"name": "prometheus-token", "key": "token"}
    no_profile = policy("no-profile", healthy.url, threshold=1)
    no_profile["spec"].update(reference={"profileRef": {"configMap": {"name": "fraud-profile"}}}, drift={"method": "psi"})
    for body in (no_secret, no_profile):
        kube.create("driftpolicies", body)
    servers |= {"no-secret": (healthy, "Error"), "no-profile": (healthy, "Error")}
    for name, (_, phase) in servers.items():
        done = kube.wait_for("driftpolicies", name, lambda o: len(status(o).get("evaluations") or []) >= 3, timeout=90)
        st = done["status"]
        assert st["phase"] == phase, (name, st["lastEvaluation"])
        assert {e["verdict"] for e in st["evaluations"]} == {phase}
        assert st.get("consecutiveFailures", 0) == 0 and "lastRetrain" not in st and "lastAction" not in st
    assert kube.list("jobs") == []
    md = kube.get("modeldeployments", "fraud")
    assert md["status"]["phase"] == "Progressing" and "rollback" not in md["status"]
    events = reasons(kube)
    assert events.count("EvaluationError") == 5 and events.count("InsufficientData") == 1  # once per transition
    assert not {"RollbackRequested", "RetrainLaunched", "CanaryAborted", "AlertSent"} & set(events)
    def message(name: str) -> str:
        return kube.get("driftpolicies", name)["status"]["lastEvaluation"]["results"][0]["message"]

    assert "Timeout" in message("slow") or "timed out" in message("slow")
    assert "Secret prometheus-token not found" in message("no-secret")
    assert "ConfigMap fraud-profile has no key profile.json" in message("no-profile")
    assert not healthy.queries


def test_restarts_during_a_breach_create_exactly_one_job(kube, kubelet, operator_factory, fake_prometheus):
    prometheus = fake_prometheus(value=5)
    operator = operator_factory("-A", env=FAST)
    start_canary(kube)
    kube.create("driftpolicies", policy("gate", prometheus.url, threshold=2))
    kube.wait_for("driftpolicies", "gate", lambda o: status(o).get("consecutiveFailures", 0) >= 1)
    rng = random.Random(7)
    for _ in range(20):
        time.sleep(rng.uniform(0.0, 1.2))  # kill at any moment: mid-evaluation, mid-Job-creation, idle
        operator.kill()
        operator = operator_factory("-A", env=FAST)
    final = kube.wait_for("driftpolicies", "gate", lambda o: (status(o).get("lastRetrain") or {}).get("jobName"), timeout=60)
    time.sleep(1.5)
    jobs = kube.list("jobs")
    assert [j["metadata"]["name"] for j in jobs] == [final["status"]["lastRetrain"]["jobName"]]
    assert kube.get("modeldeployments", "fraud")["status"]["phase"] == "RolledBack"
    assert reasons(kube, "gate").count("RollbackRequested") == 1


def test_more_due_policies_than_workers_say_their_evaluations_run_late(kube, kubelet, operator_factory, fake_prometheus):
    # One worker, six policies of one model due together every 20 s, each evaluation 3 s (a slow
    # Prometheus, within the evaluation's budget of one interval): a round takes ~18 s, so the
    # last evaluations start past the tolerance (max(10 s, interval/4)).
    prometheus = fake_prometheus(mode="slow", delay=3.0, value=0.0)
    operator_factory("-A", "--policy-workers", "1", env=FAST)
    start_canary(kube)
    names = [f"gate{i}" for i in range(6)]
    for name in names:
        body = policy(name, prometheus.url, interval="20s")
        body["spec"]["prometheus"]["timeout"] = "10s"
        # A query of its own: identical queries of one model's policies are fetched once (shared).
        body["spec"]["checks"][0]["query"] = f'sum(errors{{ {{{{ selector }}}}, gate="{name}"}})'
        kube.create("driftpolicies", body)

    def lagging(name: str) -> dict | None:
        found = next((c for c in status(kube.get("driftpolicies", name)).get("conditions") or [] if c["type"] == "EvaluationLagging"), None)
        return found if found and found["status"] == "True" else None

    late_name = wait_for(lambda: next((name for name in names if lagging(name)), None), timeout=180, message="EvaluationLagging")
    late = lagging(late_name)
    assert late["reason"] == "Late" and "after it was due" in late["message"], late
    # Prometheus fast again and the others gone: an evaluation on time clears the condition.
    for name in names:
        if name != late_name:
            kube.delete("driftpolicies", name)
    prometheus.mode = "value"

    def cleared() -> dict | None:
        found = next((c for c in status(kube.get("driftpolicies", late_name)).get("conditions") or [] if c["type"] == "EvaluationLagging"), None)
        return found if found and found["status"] == "False" else None

    assert wait_for(cleared, timeout=120, message="EvaluationLagging cleared")["reason"] == "OnTime"


def test_the_policies_of_one_model_judge_one_instant_and_fetch_each_query_once(kube, kubelet, operator_factory, fake_prometheus):
    prometheus = fake_prometheus(value=0)
    metrics_port = free_port()
    operator_factory("-A", "--metrics-port", str(metrics_port), env=FAST)
    start_canary(kube)
    names = ["errors-a", "errors-b", "errors-c"]
    for name in names:
        kube.create("driftpolicies", policy(name, prometheus.url, interval="2s"))
        time.sleep(0.7)  # created at different moments, with different uids: still one cohort

    def times(name: str) -> set[str]:
        return {e["time"] for e in status(kube.get("driftpolicies", name)).get("evaluations") or []}

    common = wait_for(lambda: set.intersection(*(times(name) for name in names)), timeout=90, message="a shared instant")
    assert common
    # Every (query, instant) reached Prometheus once, whichever policy asked first.
    paths = list(prometheus.queries)
    assert paths and len(paths) == len(set(paths)), [p for p in set(paths) if paths.count(p) > 1]
    shared = [line for line in metric_lines(metrics_port, "modelwarden_operator_prometheus_queries_total") if 'outcome="shared"' in line]
    assert shared and float(shared[0].split()[-1]) >= 2 * len(common)
