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


# -- a scripted Prometheus that answers garbage (issue 14, item 7) ---------------------------------

GARBAGE = {
    "data is null": b'{"status": "success", "data": null}',
    "result is a string": b'{"status": "success", "data": {"resultType": "vector", "result": "garbage"}}',
    "value is not a number": b'{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "abc"]}]}}',
    "series without metric": b'{"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "3"]}]}}',
    "scalar of the wrong shape": b'{"status": "success", "data": {"resultType": "scalar", "result": "x"}}',
    "not JSON": b"<html>proxy error</html>",
    "a JSON list": b"[1, 2, 3]",
}


class GarbagePrometheus:
    """Answers every query 200 with ``answer(query)``: a scripted backend, loopback only."""

    def __init__(self, answer) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlparse

        self.queries: list[str] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                query = parse_qs(urlparse(self.path).query)["query"][0]
                scripted.queries.append(query)
                body = answer(query)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_malformed_prometheus_answers_are_exit_2_with_error_checks(kind, tmp_path):
    server = GarbagePrometheus(lambda query: GARBAGE[kind])
    try:
        done = run(server, "-o", "json", "--timeout", "2", tmp_path=tmp_path)
    finally:
        server.close()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    results = json.loads(done.stdout)["evaluation"]["results"]
    assert results and {r["verdict"] for r in results} == {"Error"}
    assert server.queries, "the scripted Prometheus was never asked"


def test_a_failing_check_beside_a_malformed_answer_is_exit_2_not_1(tmp_path):
    """The custom check fails (volume 5 < 1000); the feature histograms come back malformed: the
    verdict is Fail, but the evaluation is incomplete, so the exit status is 2."""
    volume = b'{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "5"]}]}}'
    server = GarbagePrometheus(lambda query: volume if "modelwarden_predictions_total" in query and "label_replace" not in query
                               else GARBAGE["series without metric"])
    try:
        done = run(server, "-o", "json", "--timeout", "2", tmp_path=tmp_path)
    finally:
        server.close()
    document = json.loads(done.stdout)
    checks = {c["check"]: c["verdict"] for c in document["evaluation"]["results"]}
    assert checks["custom/volume"] == "Fail" and checks["drift/features"] == "Error"
    assert document["evaluation"]["verdict"] == "Fail"
    assert done.returncode == 2, done.stderr
