"""`modelwarden history POLICY --tensorboard DIR`: a DriftPolicy's history (from its status in the API
emulator, and the operator's own metrics from a real, backfilled Prometheus) written as TensorBoard
event files and read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.integration.evaluate_history import History, hours_ago_aligned
from tests.kubeclient import KubeClient

pytestmark = pytest.mark.integration
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def policy_with_history(kube: KubeClient) -> list[datetime]:
    kube.create("driftpolicies", {"apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy",
                                  "metadata": {"name": "gate", "namespace": "ml"},
                                  "spec": {"targetRef": {"name": "fraud"}, "performance": [{"metric": "accuracy", "min": 0.8}]}}, "ml")
    times = [NOW - timedelta(minutes=m) for m in (3, 2, 1)]
    kube.patch("driftpolicies", "gate", {"status": {
        "evaluations": [{"time": stamp(times[0]), "verdict": "Pass"},
                        {"time": stamp(times[1]), "verdict": "Fail", "failed": ["performance/accuracy"]},
                        {"time": stamp(times[2]), "verdict": "Error"}],
        "lastEvaluation": {"time": stamp(times[1]), "verdict": "Fail", "results": [
            {"check": "performance/accuracy", "verdict": "Fail", "value": 0.71}]}}}, "ml", subresource="status")
    return times


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelwarden", "history", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_status_and_the_operators_metrics_become_tensorboard_scalars(api_server, prometheus_factory, tmp_path):
    kube = KubeClient(api_server.url)
    times = policy_with_history(kube)
    history = History(start=hours_ago_aligned(1), steps=30)  # a point a minute for half an hour
    labels = {"namespace": "ml", "policy": "gate"}
    history.counter("modelwarden_operator_check_value", "modelwarden_operator_check_value",
                    {**labels, "check": "performance/accuracy"}, 0.03, kind="gauge")  # 0, 0.03, …, 0.9
    history.counter("modelwarden_operator_drift_score", "modelwarden_operator_drift_score",
                    {**labels, "check": "drift/features", "feature": "amount"}, 0.01, kind="gauge")
    history.counter("modelwarden_operator_check_value", "modelwarden_operator_check_value",
                    {"namespace": "ml", "policy": "another", "check": "performance/accuracy"}, 0.5, kind="gauge")
    prometheus = prometheus_factory(history.openmetrics())
    out = tmp_path / "tb"

    done = run("gate", "-n", "ml", "--kubeconfig", str(api_server.kubeconfig_path), "--tensorboard", str(out),
               "--prometheus", prometheus.url, "--since", "2h", "--step", "1m")
    assert done.returncode == 0, done.stderr
    events = EventAccumulator(str(out))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert scalars == {"breach/failing", "failing/performance/accuracy", "check/performance/accuracy",
                       "drift/drift/features/amount"}
    breach = [(e.step, e.value) for e in events.Scalars("breach/failing")]
    assert breach == [(int(times[0].timestamp()), 0.0), (int(times[1].timestamp()), 1.0)]  # the Error look says nothing
    accuracy = sorted((e.step, round(e.value, 6)) for e in events.Scalars("check/performance/accuracy"))
    from_prometheus = [(step, value) for step, value in accuracy if step != int(times[1].timestamp())]
    assert len(from_prometheus) >= 25 and all(step % 60 == 0 for step, _ in from_prometheus)  # one a minute
    assert max(value for _, value in from_prometheus) == pytest.approx(0.9)  # not another policy's series (up to 15)
    assert from_prometheus[0][1] < from_prometheus[-1][1]
    assert (int(times[1].timestamp()), 0.71) in accuracy  # the last evaluation's value, from status
    assert f"to {out}" in done.stdout

    printed = run("gate", "-n", "ml", "--kubeconfig", str(api_server.kubeconfig_path))
    assert printed.returncode == 0, printed.stderr
    assert "breach/failing" in printed.stdout and "0.71" in printed.stdout


def test_a_missing_policy_or_an_unreachable_prometheus_is_one_line_and_exit_1(api_server, tmp_path):
    from modelwarden.sandbox.processes import free_port

    missing = run("nope", "-n", "ml", "--kubeconfig", str(api_server.kubeconfig_path))
    assert missing.returncode == 1 and missing.stderr.strip() == "modelwarden history: DriftPolicy ml/nope not found"
    policy_with_history(KubeClient(api_server.url))
    down = run("gate", "-n", "ml", "--kubeconfig", str(api_server.kubeconfig_path), "--prometheus", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1 and "modelwarden history: http://" in down.stderr
    for since, step in (("soon", "1m"), ("1h", "0s")):
        bad = run("gate", "--since", since, "--step", step)
        assert bad.returncode == 2 and bad.stderr.startswith("modelwarden history: "), bad.stderr
