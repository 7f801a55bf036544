"""`modelwarden evaluate` as a subprocess against a real Prometheus: exit codes and JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from tests.integration.evaluate_history import NORMAL_EDGES, History, bin_probabilities, hours_ago_aligned

MODELWARDEN = str(Path(sys.executable).with_name("modelwarden"))
POLICY = """
apiVersion: modelwarden.io/v1alpha1
kind: DriftPolicy
metadata: {name: churn-drift, namespace: ml}
spec:
  targetRef: {name: churn}
  window: 1h
  reference: {offset: 1h}
  drift: {predictions: false}
  checks:
    - name: volume
      query: 'sum(increase(modelwarden_predictions_total{model="{{ model }}"}[{{ window }}]))'
      min: 1000
"""


@pytest.fixture(scope="module")
def cli_prometheus(history_prometheus):
    """Three hours of model "churn": f01 shifts by 0.5σ in the third hour."""
    history = History(hours_ago_aligned(4), 180, seed=5)
    labels = {"model": "churn", "version": "3", "track": "stable"}
    for feature in ("f00", "f01", "f02", "f03"):
        def per_step(k: int, feature=feature) -> tuple[int, np.ndarray]:
            return 100, bin_probabilities(NORMAL_EDGES, 0.5 if feature == "f01" and k >= 120 else 0.0)

        history.histogram("modelwarden_feature_value", {**labels, "feature": feature}, NORMAL_EDGES, per_step)
    history.counter("modelwarden_predictions", "modelwarden_predictions_total", labels, 100)
    return history_prometheus(history), history


def run(server, *args: str, policy: str = POLICY, tmp_path: Path) -> subprocess.CompletedProcess:
    manifest = tmp_path / "policy.yaml"
    manifest.write_text(policy)
    return subprocess.run(
        [MODELWARDEN, "evaluate", "-f", str(manifest), "--prometheus", server.url, *args],
        capture_output=True, text=True, timeout=60,
    )


def rfc3339(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


def test_fail_exit_code_and_json(cli_prometheus, tmp_path):
    server, history = cli_prometheus
    done = run(server, "--at", rfc3339(history.end), "--output", "json", tmp_path=tmp_path)
    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    assert document["evaluation"]["verdict"] == "Fail"
    checks = {c["check"]: c for c in document["evaluation"]["results"]}
    assert checks["drift/features"]["verdict"] == "Fail" and checks["custom/volume"]["value"] == 6000
    features = {f["name"]: f for f in document["drift"][0]["features"]}
    assert [name for name, f in features.items() if f["verdict"] == "Fail"] == ["f01"]
    assert features["f00"]["currentSamples"] == 6000 and 0 <= features["f00"]["adjustedPValue"] <= 1
    assert set(document["timings"]) == {"querySeconds", "parseSeconds", "statisticsSeconds"}


def test_pass_exit_code_and_table(cli_prometheus, tmp_path):
    server, history = cli_prometheus
    done = run(server, "--at", rfc3339(history.start + 2 * 3600), tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("verdict Pass")
    assert "drift/features" in done.stdout and "custom/volume" in done.stdout


def test_insufficient_data_exit_code(cli_prometheus, tmp_path):
    server, history = cli_prometheus
    done = run(server, "--at", rfc3339(history.end), "--model", "someone-else", "-o", "json", tmp_path=tmp_path)
    assert done.returncode == 2
    assert json.loads(done.stdout)["evaluation"]["verdict"] == "InsufficientData"


def test_unreachable_prometheus_is_exit_2_with_error_checks(tmp_path):
    from modelwarden.sandbox.prometheus import free_port

    class Nowhere:
        url = f"http://127.0.0.1:{free_port()}"

    done = run(Nowhere, "-o", "json", "--timeout", "0.5", tmp_path=tmp_path)
    assert done.returncode == 2
    assert {c["verdict"] for c in json.loads(done.stdout)["evaluation"]["results"]} == {"Error"}


def test_bad_manifest_is_exit_2(tmp_path):
    class Anywhere:
        url = "http://127.0.0.1:1"

    done = run(Anywhere, policy="kind: DriftPolicy\nspec: {}\n", tmp_path=tmp_path)
    assert done.returncode == 2 and "targetRef" in done.stderr
