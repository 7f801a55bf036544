"""The whole loop with real components: model-server processes (stable, canary) scraped by a real
Prometheus, the real operator against the API emulator, and real receivers (a Slack stand-in, a
signed webhook, Debian's Alertmanager, aiosmtpd).

Clean traffic passes; drifted traffic with worse labels on the canary fails the policy twice in a
row, which rolls the canary back, launches exactly one retraining Job and alerts everywhere.
"""

from __future__ import annotations

import base64
import datetime
import re
import time
import uuid

import requests

from modelwarden.sandbox import datagen
from tests.processes import free_port

FAST = {"MODELWARDEN_RECONCILE_INTERVAL": "0.3"}  # policies tick on watch events and when due: no fast fallback
HMAC_KEY = "s3cret-signing-key"
INTERVAL_SECONDS = 2


def send(server, n: int, seed: int, drift: datagen.Drift = datagen.Drift(), batch: int = 100) -> None:
    """Predictions, then ground-truth feedback for every one of them."""
    x, y = datagen.classification(n, seed, drift)
    for start in range(0, n, batch):
        rows, labels = x[start:start + batch].tolist(), y[start:start + batch].tolist()
        response = requests.post(f"{server.url}/v1/models/{server.name}:predict", json={"instances": rows}, timeout=10)
        response.raise_for_status()
        feedback = [{"predicted": p, "actual": a} for p, a in zip(response.json()["predictions"], labels)]
        requests.post(f"{server.url}/v1/models/{server.name}/feedback", json=feedback, timeout=10).raise_for_status()


def warm_up(server) -> None:
    """Create every series before the traffic that counts: increase() cannot see a series' first value."""
    x, _ = datagen.classification(1, seed=99)
    requests.post(f"{server.url}/v1/models/{server.name}:predict", json={"instances": x.tolist()}, timeout=10).raise_for_status()
    feedback = [{"predicted": p, "actual": a} for p in (0, 1) for a in (0, 1)]
    requests.post(f"{server.url}/v1/models/{server.name}/feedback", json=feedback, timeout=10).raise_for_status()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_drifted_canary_is_rolled_back_retrained_and_alerted(
    prometheus, serving_examples, start_model_server, kube, kubelet, operator_factory, alertmanager, http_receivers, smtp_receiver,
):
    example = serving_examples["classifier"]
    model = f"fraud-{uuid.uuid4().hex[:8]}"
    servers = {
        track: start_model_server(example.directory, model, version=version, track=track, extra_args=("--prediction-log", "off"))
        for track, version in (("stable", "1"), ("canary", "2"))
    }
    # The labels Kubernetes service discovery would add: every built-in query matches the namespace.
    prometheus.set_targets([(s.address, {"pod": f"{track}-0", "namespace": "default"}) for track, s in servers.items()])
    for server in servers.values():
        warm_up(server)
    prometheus.wait_for(f'count by (track) (modelwarden_feedback_total{{model="{model}"}})',
                        lambda result: len(result) == 2 and all(r["value"][1] == "4" for r in result), timeout=60)

    slack, webhook = http_receivers(), http_receivers(signing_key=HMAC_KEY.encode())
    kube.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alerting", "labels": {"modelwarden.io/policy-use": "true"}},
                            "data": {"slack-url": b64(f"{slack.url}/services/T000/B000/XXXX"), "hmac": b64(HMAC_KEY)}})
    metrics_port = free_port()
    operator_factory("-A", "--prometheus-url", prometheus.url, "--metrics-port", str(metrics_port), env=FAST)
    kube.create("modeldeployments", {
        "apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "fraud"},
        "spec": {"model": model, "stable": {"version": "1", "modelUri": "file:///m/1"},
                 "canary": {"version": "2", "modelUri": "file:///m/2", "steps": [{"weight": 50, "pause": "1h"}]},
                 "traffic": {"router": "istio"}},
    })
    kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status", {}).get("canary") or {}).get("ready"), timeout=90)
    kube.create("driftpolicies", {
        "apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": "fraud-canary"},
        "spec": {
            "targetRef": {"name": "fraud"}, "track": "canary", "interval": f"{INTERVAL_SECONDS}s", "window": "1m",
            "minSamples": 100, "failureThreshold": 2, "reference": {"track": "stable"},
            "drift": {"method": "ks"}, "performance": [{"metric": "accuracy", "min": 0.8}],
            "actions": {
                "rollback": True,
                "retrain": {"jobTemplate": {"template": {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}}}},
                "alert": {
                    "slack": {"webhookSecretRef": {"name": "alerting", "key": "slack-url"}},
                    "webhook": {"url": f"{webhook.url}/hooks/modelwarden", "hmacSecretRef": {"name": "alerting", "key": "hmac"}},
                    "alertmanager": {"url": alertmanager.url, "labels": {"team": "ml"}},
                    "email": {"host": "127.0.0.1", "port": smtp_receiver.port, "starttls": False,
                              "from": "modelwarden@example.com", "to": ["ml-team@example.com"]},
                },
            },
        },
    })

    # Clean traffic with feedback on both tracks: the canary passes.
    send(servers["stable"], 500, seed=1)
    send(servers["canary"], 500, seed=2)
    passing = kube.wait_for("driftpolicies", "fraud-canary",
                            lambda o: (o.get("status", {}).get("lastEvaluation") or {}).get("verdict") == "Pass", timeout=40)
    assert {r["check"] for r in passing["status"]["lastEvaluation"]["results"]} >= {"drift/features", "drift/prediction", "performance/accuracy"}

    # Drifted features and noisy labels on the canary only.
    drifted_at = time.monotonic()
    send(servers["canary"], 1500, seed=3, drift=datagen.Drift(shift={"amount": 2.0, "merchant_risk": -1.5}, label_noise=0.4))
    rolled = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"].get("phase") == "RolledBack", timeout=90)
    seen_at, seen_after = datetime.datetime.now(datetime.timezone.utc), time.monotonic() - drifted_at
    policy = kube.get("driftpolicies", "fraud-canary")
    first_fail = parse_time(policy["status"]["failingSince"])
    rollback_at = parse_time(rolled["status"]["rollback"]["at"])
    latency = (rollback_at - first_fail).total_seconds()  # rollback.at has whole seconds: a lower bound
    observed = (seen_at - first_fail).total_seconds()  # includes the test's 0.1 s polling: an upper bound
    print(f"\nbreach-to-rollback latency: {latency:.2f} s from rollback.at, <= {observed:.2f} s observed "
          f"(interval {INTERVAL_SECONDS} s); drifted traffic sent -> RolledBack seen: {seen_after:.1f} s")
    failing = {r["check"] for r in policy["status"]["lastEvaluation"]["results"] if r["verdict"] == "Fail"}
    assert {"drift/features", "performance/accuracy"} <= failing, policy["status"]["lastEvaluation"]
    # Acted at the threshold's evaluation or the next one: counted in evaluations, not seconds (the
    # latency is a benchmark: benchmarks/breach_latency.py).
    assert rolled["status"]["rollback"]["fromVersion"] == "2"
    assert re.search(r"fraud-canary failed [23]x", rolled["status"]["rollback"]["reason"]), rolled["status"]["rollback"]

    # Exactly one retraining Job, with the context, even after more failing evaluations.
    kube.wait_for("driftpolicies", "fraud-canary", lambda o: o["status"]["consecutiveFailures"] >= 4, timeout=90)
    jobs = kube.list("jobs")
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    env = {e["name"]: e.get("value", "") for e in jobs[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELWARDEN_MODEL"] == model and env["MODELWARDEN_VERSION"] == "2" and env["MODELWARDEN_TRACK"] == "canary"
    assert env["MODELWARDEN_NAMESPACE"] == "default" and env["MODELWARDEN_POLICY"] == "fraud-canary"
    assert "drift/features" in env["MODELWARDEN_FAILING_CHECKS"] and env["MODELWARDEN_REASON"]
    assert env["MODELWARDEN_WINDOW_START"] and env["MODELWARDEN_WINDOW_END"]

    # Every receiver got the alert.
    slack_message = wait_until(lambda: slack.received, 20, "Slack")[0]
    assert slack_message.path == "/services/T000/B000/XXXX"
    assert "fraud-canary" in slack_message.json()["text"] and slack_message.json()["blocks"][0]["type"] == "header"
    hook = wait_until(lambda: webhook.received, 20, "webhook")[0]
    assert hook.headers["X-Modelwarden-Signature"].startswith("t=") and hook.rejection is None  # HMAC over t + body, fresh t
    assert hook.json()["status"] == "firing" and hook.json()["labels"]["policy"] == "fraud-canary"
    alerts = wait_until(lambda: alertmanager.alerts(alertname="DriftPolicyBreached", policy="fraud-canary"), 20, "Alertmanager")
    assert alerts[0]["labels"] | {"model": model, "namespace": "default", "severity": "critical", "track": "canary", "team": "ml"} == alerts[0]["labels"]
    assert "fraud-canary" in alerts[0]["annotations"]["summary"]
    mail = wait_until(lambda: smtp_receiver.messages, 20, "email")[0]
    assert mail["to"] == ["ml-team@example.com"] and "DriftPolicy fraud-canary breached" in mail["data"]
    # Events are posted after the deliveries they report: wait for the last of them.
    expected_events = {"DriftDetected", "RollbackRequested", "RetrainLaunched", "AlertSent"}
    def policy_events() -> list[str]:
        found = [e["reason"] for e in kube.list("events") if e["involvedObject"].get("name") == "fraud-canary"]
        return found if expected_events <= set(found) else []

    events = wait_until(policy_events, 20, "the breach's Events")
    assert "AlertFailed" not in events

    # The operator's own metrics: per-feature drift scores (largest first, bounded) and the canary weight.
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    scores = {line.split('feature="')[1].split('"')[0]: float(line.split()[-1])
              for line in text.splitlines() if line.startswith("modelwarden_operator_drift_score{") and 'check="drift/features"' in line}
    assert set(scores) == set(datagen.FEATURE_NAMES) and max(scores, key=scores.get) == "amount"
    assert 'modelwarden_operator_canary_weight{modeldeployment="fraud",namespace="default"} 0.0' in text
