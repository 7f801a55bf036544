"""`modelwarden backtest` against a real Prometheus holding 14 days of backfilled history.

The history: model "fraud", three features scraped every 5 minutes; on day 10 feature f01 moves
by 1σ. The backtest must act only after the onset (and within failureThreshold × interval of
it), fetch each histogram with one range query per side (counted in Prometheus's query log),
count the false alarms of the healthy days exactly as a direct replay of instant evaluations does,
and suggest a threshold that, applied, keeps that period within one false alarm per 30 days.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelwarden.contract.profile import Distribution, PredictionProfile, Profile
from tests.conftest import prometheus_servers
from tests.integration.evaluate_history import NORMAL_EDGES, History, bin_probabilities

MODELWARDEN = str(Path(sys.executable).with_name("modelwarden"))
SCRAPE = 300  # seconds between the backfilled samples
DAY = 86400
DAYS = 14
ONSET_DAY = 10
PER_SCRAPE = 200  # observations per feature per scrape: 2400 per 1h window
LABELS = {"model": "fraud", "version": "1", "track": "stable"}

# The sensible policy: ks against the training profile, 3 failing evaluations in a row act.
PROFILE_POLICY = """
apiVersion: modelwarden.io/v1alpha1
kind: DriftPolicy
metadata: {name: fraud-drift, namespace: ml}
spec:
  targetRef: {name: fraud}
  interval: 30m
  window: 1h
  failureThreshold: 3
  reference: {profileRef: {configMap: {name: fraud-profile, key: profile.json}}}
  drift: {predictions: false}
  actions: {rollback: true, retrain: {jobTemplate: {template: {spec: {restartPolicy: Never, containers: [{name: t, image: trainer}]}}}}}
"""

# A noisy one: PSI 0.01 against the same hour a day earlier fails by chance now and then.
NOISY_POLICY = """
apiVersion: modelwarden.io/v1alpha1
kind: DriftPolicy
metadata: {name: fraud-noisy, namespace: ml}
spec:
  targetRef: {name: fraud}
  interval: 30m
  window: 1h
  failureThreshold: 2
  reference: {offset: 1d}
  drift: {method: psi, threshold: 0.01, predictions: false}
"""


def start_of_history() -> int:
    """Fifteen days ago on a whole half hour (backfilled blocks lie in the past; grid-aligned)."""
    now = int(datetime.now(timezone.utc).timestamp())
    return (now - (DAYS + 1) * DAY) // 1800 * 1800


@pytest.fixture(scope="module")
def fraud_history(tmp_path_factory):
    start = start_of_history()
    history = History(start, DAYS * DAY // SCRAPE, seed=11, step=SCRAPE)
    onset_step = ONSET_DAY * DAY // SCRAPE
    for feature in ("f00", "f01", "f02"):
        def per_step(k: int, feature: str = feature) -> tuple[int, np.ndarray]:
            shifted = feature == "f01" and k >= onset_step
            return PER_SCRAPE, bin_probabilities(NORMAL_EDGES, 1.0 if shifted else 0.0)

        history.histogram("modelwarden_feature_value", {**LABELS, "feature": feature}, NORMAL_EDGES, per_step)
    history.counter("modelwarden_predictions", "modelwarden_predictions_total", LABELS, PER_SCRAPE)
    with prometheus_servers(lambda: tmp_path_factory.mktemp("prometheus-backtest")) as make:
        server = make(history.openmetrics(), query_log=True)
        yield server, start, start + ONSET_DAY * DAY


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory) -> Path:
    counts = np.round(bin_probabilities(NORMAL_EDGES) * 1_000_000).astype(int)
    features = [Distribution(name=name, kind="numeric", edges=list(map(float, NORMAL_EDGES)), counts=counts.tolist(),
                             count=int(counts.sum()), mean=0.0, std=1.0) for name in ("f00", "f01", "f02")]
    prediction = PredictionProfile(name="prediction", kind="numeric", edges=list(map(float, NORMAL_EDGES)),
                                   counts=counts.tolist(), count=int(counts.sum()), task="regression", source="model")
    path = tmp_path_factory.mktemp("profile") / "profile.json"
    path.write_text(Profile(target="label", rows=1_000_000, bins=20, features=features, prediction=prediction).to_json())
    return path


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


def backtest(server, policy: str, tmp_path: Path, *args: str) -> dict:
    manifest = tmp_path / f"policy-{abs(hash(policy))}.yaml"
    manifest.write_text(policy)
    done = subprocess.run([MODELWARDEN, "backtest", "-f", str(manifest), "--prometheus", server.url, "-o", "json", *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def range_queries(server, since: int) -> list[str]:
    return [entry["params"]["query"] for entry in server.logged_queries()[since:] if entry["params"].get("step")]


def test_acts_only_after_the_onset_and_soon(fraud_history, profile_file, tmp_path):
    server, start, onset = fraud_history
    logged = len(server.logged_queries())
    report = backtest(server, PROFILE_POLICY, tmp_path, "--from", rfc3339(start + 3600), "--to", rfc3339(start + DAYS * DAY),
                      "--profile", str(profile_file), "--good-until", rfc3339(onset))
    times = [datetime.fromisoformat(a["time"].replace("Z", "+00:00")).timestamp() for a in report["actions"]]
    assert times, report
    assert min(times) > onset, f"acted before the drift began: {report['actions'][:3]}"
    # The first action is due within failureThreshold x interval of the onset: 3 x 30 minutes.
    assert min(times) <= onset + 3 * 1800, report["actions"][:3]
    first = [a for a in report["actions"] if a["time"] == report["actions"][0]["time"]]
    assert {a["action"] for a in first} == {"alert", "rollback", "retrain"}
    assert all(a["checks"] == ["drift/features"] for a in first)
    assert report["falseAlarms"]["breaches"] == 0 and report["falseAlarms"]["days"] == pytest.approx((ONSET_DAY * DAY - 3600 + 1800) / DAY, abs=1e-6)  # evaluations x interval
    # One range query per histogram per side (the profile is the reference: the current side only)
    # and one for the counters, for the whole 14 days.
    queries = range_queries(server, logged)
    assert len([q for q in queries if "modelwarden_feature_value_bucket" in q]) == 1, queries
    assert len(queries) == 2, queries
    shares = {c["check"]: c for c in report["checks"]}
    assert shares["drift/features"]["evaluations"] == report["evaluations"] == (DAYS * DAY - 3600) // 1800 + 1


def test_false_alarms_match_a_direct_count_and_the_suggestion_holds(fraud_history, tmp_path):
    server, start, onset = fraud_history
    first, good_until = start + DAY, onset
    logged = len(server.logged_queries())
    report = backtest(server, NOISY_POLICY, tmp_path, "--from", rfc3339(first), "--to", rfc3339(start + DAYS * DAY),
                      "--good-until", rfc3339(good_until))
    queries = range_queries(server, logged)
    feature_queries = [q for q in queries if "modelwarden_feature_value_bucket" in q]
    assert len(feature_queries) == 2 and sum("offset 1d" in q for q in feature_queries) == 1, queries  # current and reference

    # The direct count: an instant evaluation at every half hour of the healthy days, by the same
    # library the operator uses (one instant query per part), and the operator's streak rule.
    from modelwarden.api.driftpolicy import DriftPolicy, Verdict
    from modelwarden.prometheus.client import PrometheusConfig, PrometheusProvider
    from modelwarden.prometheus.collect import Target, evaluate

    spec = DriftPolicy.model_validate(yaml.safe_load(NOISY_POLICY)).spec
    verdicts = []
    with PrometheusProvider(PrometheusConfig(url=server.url, timeout_seconds=30)) as provider:
        for moment in range(first, good_until + 1, 1800):
            at = datetime.fromtimestamp(moment, timezone.utc)
            verdicts.append(evaluate(spec, Target(model="fraud", namespace="ml"), provider, at).report.evaluation.verdict)
    streak, breached, breaches = 0, False, 0
    for verdict in verdicts:
        if verdict == Verdict.FAIL:
            streak += 1
            if streak >= spec.failure_threshold and not breached:
                breaches, breached = breaches + 1, True
        elif verdict == Verdict.PASS:
            streak, breached = 0, False
    failing = sum(v == Verdict.FAIL for v in verdicts)
    alarms = report["falseAlarms"]
    assert (alarms["evaluations"], alarms["failingEvaluations"], alarms["breaches"]) == (len(verdicts), failing, breaches)
    assert failing > 0 and breaches > 0, "the noisy policy is meant to raise false alarms by chance"
    assert alarms["perDay"] == pytest.approx(breaches / alarms["days"], rel=1e-4)
    breach_actions = [a for a in report["actions"] if a["action"] == "alert" and a["detail"] == "Breach"
                      and datetime.fromisoformat(a["time"].replace("Z", "+00:00")).timestamp() <= good_until]
    assert len(breach_actions) >= breaches

    # The suggested PSI threshold, applied, keeps the healthy days within the budget (0 for 9 days)
    # and still finds the drift.
    [suggestion] = report["thresholds"]
    assert suggestion["field"] == "spec.drift.threshold" and suggestion["allowedBreaches"] == 0
    assert suggestion["breachesAtCurrent"] == breaches and suggestion["suggested"] > 0.01
    tuned = NOISY_POLICY.replace("threshold: 0.01", f"threshold: {suggestion['suggested']}")
    again = backtest(server, tuned, tmp_path, "--from", rfc3339(first), "--to", rfc3339(start + DAYS * DAY),
                     "--good-until", rfc3339(good_until))
    assert again["falseAlarms"]["breaches"] == 0
    assert any(datetime.fromisoformat(b.replace("Z", "+00:00")).timestamp() > onset for b in again["breaches"])


def test_table_and_plot(fraud_history, profile_file, tmp_path):
    server, start, onset = fraud_history
    manifest = tmp_path / "policy.yaml"
    manifest.write_text(PROFILE_POLICY)
    plot = tmp_path / "backtest.png"
    done = subprocess.run([MODELWARDEN, "backtest", "-f", str(manifest), "--prometheus", server.url, "--profile", str(profile_file),
                           "--from", rfc3339(onset - DAY), "--to", rfc3339(onset + DAY), "--plot", str(plot)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("backtest of fraud-drift from ")
    assert "rollback" in done.stdout and "drift/features" in done.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    manifest = tmp_path / "policy.yaml"
    manifest.write_text(PROFILE_POLICY)
    done = subprocess.run([MODELWARDEN, "backtest", "-f", str(manifest), "--prometheus", "http://127.0.0.1:1",
                           "--from", "2026-11-02T10:00:00", "--to", "2026-11-03T10:00:00Z"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--from" in done.stderr and "timezone" in done.stderr
    done = subprocess.run([MODELWARDEN, "backtest", "-f", str(manifest), "--prometheus", "http://127.0.0.1:1",
                           "--from", "2026-11-03T10:00:00Z", "--to", "2026-11-02T10:00:00Z"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "before its start" in done.stderr
    done = subprocess.run([MODELWARDEN, "backtest", "-f", str(manifest), "--prometheus", "http://127.0.0.1:1",
                           "--from", "2026-11-02T10:00:00Z", "--to", "2026-11-03T10:00:00Z"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--profile" in done.stderr  # a profileRef policy needs the profile


def test_an_unreachable_prometheus_is_error_verdicts_never_an_action_and_exit_2(tmp_path):
    """Every evaluation is an Error (the range queries fail), an Error never acts, and the
    incomplete replay says so: the report is printed and the exit status is 2."""
    from modelwarden.sandbox.prometheus import free_port

    manifest = tmp_path / "policy.yaml"
    manifest.write_text(PROFILE_POLICY.replace("profileRef: {configMap: {name: fraud-profile, key: profile.json}}", "offset: 1d"))
    done = subprocess.run([MODELWARDEN, "backtest", "-f", str(manifest), "--prometheus", f"http://127.0.0.1:{free_port()}",
                           "--from", "2026-11-02T10:00:00Z", "--to", "2026-11-02T12:00:00Z", "--timeout", "0.5", "-o", "json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "incomplete" in done.stderr
    report = json.loads(done.stdout)
    assert report["verdicts"]["Error"] == report["evaluations"] == 5
    assert report["actions"] == [] and report["breaches"] == []
    assert report["failedRangeQueries"] and all("Unreachable" in e["error"] for e in report["errors"])
