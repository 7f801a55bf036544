"""The analysis engine against a real Prometheus holding a backfilled metrics-contract history.

Three hours of one-minute samples for model "fraud": the stable track is clean for two hours,
then f05 shifts by 0.3σ and f17 widens 1.5× and accuracy drops from 0.9 to 0.8. The canary track
(third hour only) has f09 shifted, worse accuracy and more errors than stable.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from modelwarden.api.driftpolicy import DriftPolicySpec, Verdict
from modelwarden.prometheus.collect import Target, evaluate
from modelwarden.prometheus.client import PrometheusConfig, PrometheusProvider
from tests.integration.evaluate_history import NORMAL_EDGES, History, bin_probabilities, hours_ago_aligned

FEATURES = [f"f{i:02d}" for i in range(20)]
SCORE_EDGES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
LATENCY_EDGES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
PER_STEP = 100
HOUR = 60  # steps


def _track(history: History, track: str, version: str, drifted: dict[str, tuple[float, float]], active_from: int,
           accuracy_by_hour: tuple[float, float, float], errors_per_step: int, client_errors_per_step: int | None = None) -> None:
    """``client_errors_per_step`` set: the track's server splits client (4xx) from server (5xx)
    errors, as `modelwarden serve` does now, and is flooded with that many bad requests per step;
    unset: an older server exporting only the all-errors counter."""
    labels = {"model": "fraud", "version": version, "track": track}
    active = np.arange(history.steps) >= active_from
    n = np.where(active, PER_STEP, 0)
    for feature in FEATURES:
        mean, scale = drifted.get(feature, (0.0, 1.0))

        def per_step(k: int, mean=mean, scale=scale) -> tuple[int, np.ndarray]:
            late = k >= 2 * HOUR
            return int(n[k]), bin_probabilities(NORMAL_EDGES, mean if late else 0.0, scale if late else 1.0)

        history.histogram("modelwarden_feature_value", {**labels, "feature": feature}, NORMAL_EDGES, per_step)
    score = np.full(len(SCORE_EDGES) + 1, 1 / (len(SCORE_EDGES) + 1))
    history.histogram("modelwarden_prediction_value", labels, SCORE_EDGES, lambda k: (int(n[k]), score))
    latency = np.array([0.05, 0.2, 0.3, 0.2, 0.15, 0.07, 0.02, 0.01, 0.0])
    history.histogram("modelwarden_inference_latency_seconds", labels, LATENCY_EDGES, lambda k: (int(n[k]), latency))
    history.counter("modelwarden_inference_latency_seconds", "modelwarden_inference_latency_seconds_count", labels, n, "histogram")
    history.counter("modelwarden_predictions", "modelwarden_predictions_total", labels, n)
    history.counter("modelwarden_prediction_errors", "modelwarden_prediction_errors_total", {**labels, "reason": "model_error"}, np.where(active, errors_per_step, 0))
    if client_errors_per_step is not None:
        history.counter("modelwarden_server_errors", "modelwarden_server_errors_total", {**labels, "reason": "model_error"}, np.where(active, errors_per_step, 0))
        history.counter("modelwarden_server_errors", "modelwarden_server_errors_total", {**labels, "reason": "internal_error"}, 0)
        flood = np.where(active, client_errors_per_step, 0)
        history.counter("modelwarden_client_errors", "modelwarden_client_errors_total", {**labels, "reason": "malformed_json"}, flood)
        history.counter("modelwarden_prediction_errors", "modelwarden_prediction_errors_total", {**labels, "reason": "malformed_json"}, flood)
    history.counter("modelwarden_prediction_outliers", "modelwarden_prediction_outliers_total", labels, np.where(active, 1, 0))
    hour = np.minimum(np.arange(history.steps) // HOUR, 2)
    correct = np.array(accuracy_by_hour)[hour] * n / 2
    wrong = n / 2 - correct
    for predicted, actual, count in (("1", "1", correct), ("0", "0", correct), ("1", "0", wrong), ("0", "1", wrong)):
        history.counter("modelwarden_feedback", "modelwarden_feedback_total", {**labels, "predicted": predicted, "actual": actual}, np.round(count))


@pytest.fixture(scope="module")
def scenario(history_prometheus):
    history = History(hours_ago_aligned(4), 3 * HOUR, seed=11)
    # stable: a current server flooded with 50 bad requests a step (ignored by error_rate);
    # canary: an older server, judged through the fallback to the all-errors counter's 5xx reasons.
    _track(history, "stable", "1", {"f05": (0.3, 1.0), "f17": (0.0, 1.5)}, 0, (0.9, 0.9, 0.8), 1, client_errors_per_step=50)
    _track(history, "canary", "2", {"f09": (0.3, 1.0)}, 2 * HOUR, (0.9, 0.9, 0.7), 5)
    server = history_prometheus(history)
    provider = PrometheusProvider(PrometheusConfig(server.url, timeout_seconds=10))
    yield server, provider, history
    provider.close()


def _at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def _spec(**fields) -> DriftPolicySpec:
    return DriftPolicySpec.model_validate({"targetRef": {"name": "fraud-deployment"}, "window": "1h", **fields})


def _results(report) -> dict[str, object]:
    return {result.check: result for result in report.evaluation.results}


def test_offset_reference_finds_exactly_the_drifted_features(scenario):
    server, provider, history = scenario
    spec = _spec(reference={"offset": "1h"}, drift={})
    timed = evaluate(spec, Target("fraud", versions={"stable": "1"}), provider, _at(history.end))
    features, prediction = timed.report.drift
    assert timed.report.evaluation.verdict is Verdict.FAIL
    assert features.drifted_names == ["f05", "f17"]
    assert features.tested.all() and (features.current_samples == HOUR * PER_STEP).all()
    assert _results(timed.report)["drift/prediction"].verdict is Verdict.PASS
    assert prediction.current_samples.tolist() == [HOUR * PER_STEP]


def test_the_same_policy_passes_before_the_drift(scenario):
    _, provider, history = scenario
    spec = _spec(reference={"offset": "1h"}, drift={})
    timed = evaluate(spec, Target("fraud", versions={"stable": "1"}), provider, _at(history.start + 2 * HOUR * 60))
    assert timed.report.evaluation.verdict is Verdict.PASS, timed.report.evaluation.results
    assert timed.report.evaluation.samples == HOUR * PER_STEP


def test_canary_against_stable_track(scenario):
    _, provider, history = scenario
    spec = _spec(
        track="canary",
        reference={"track": "stable"},
        drift={"predictions": False},
        comparison={"track": "stable", "metrics": ["accuracy", "error_rate"]},
    )
    timed = evaluate(spec, Target("fraud", versions={"stable": "1", "canary": "2"}), provider, _at(history.end))
    results = _results(timed.report)
    # stable drifted too (f05, f17) in the same hour: relative to stable, the canary differs on all three.
    assert timed.report.drift[0].drifted_names == ["f05", "f09", "f17"]
    assert results["comparison/accuracy"].verdict is Verdict.FAIL  # 0.7 vs 0.8
    assert results["comparison/error_rate"].verdict is Verdict.FAIL  # 5% vs 1%
    assert results["comparison/accuracy"].value < 1e-6


def test_performance_outliers_and_custom_checks(scenario):
    server, provider, history = scenario
    spec = _spec(
        performance=[
            {"metric": "accuracy", "min": 0.85},
            {"metric": "f1", "min": 0.5},
            {"metric": "latency_p99", "max": 1.0},
            {"metric": "error_rate", "max": 0.05},
        ],
        outliers={"maxRate": 0.05},
        checks=[{"name": "volume", "query": 'sum(increase(modelwarden_predictions_total{model="{{ model }}",track="{{ track }}"}[{{ window }}]))', "min": 1000}],
    )
    at = _at(history.end)
    timed = evaluate(spec, Target("fraud", versions={"stable": "1"}), provider, at)
    results = _results(timed.report)
    assert results["performance/accuracy"].verdict is Verdict.FAIL
    assert results["performance/accuracy"].value == pytest.approx(0.8)
    assert results["performance/f1"].value == pytest.approx(0.8)
    assert results["performance/error_rate"].value == pytest.approx(1 / 101)  # 50 client errors a step left out
    assert results["outliers/rate"].value == pytest.approx(0.01)
    assert results["custom/volume"].value == pytest.approx(6000)
    promql_p99 = server.query(
        'histogram_quantile(0.99, sum by (le) (increase(modelwarden_inference_latency_seconds_bucket{model="fraud",track="stable"}[1h])))',
        at=history.end,
    )
    assert results["performance/latency_p99"].value == pytest.approx(float(promql_p99[0]["value"][1]), rel=1e-9)
    assert timed.report.evaluation.verdict is Verdict.FAIL


def test_no_data_is_insufficient_never_fail(scenario):
    _, provider, history = scenario
    spec = _spec(reference={"offset": "1h"}, drift={}, performance=[{"metric": "accuracy", "min": 0.9}], outliers={"maxRate": 0.01})
    timed = evaluate(spec, Target("no-such-model"), provider, _at(history.end))
    verdicts = {result.verdict for result in timed.report.evaluation.results}
    assert verdicts == {Verdict.INSUFFICIENT_DATA}
    assert timed.report.evaluation.verdict is Verdict.INSUFFICIENT_DATA


def test_a_bad_custom_query_is_an_error_of_that_check_only(scenario):
    """Unparsable PromQL and unknown template variables are refused with the spec now (api/checks.py);
    a query Prometheus itself refuses at run time (an invalid regular expression) is still an Error of that check."""
    _, provider, history = scenario
    spec = _spec(
        performance=[{"metric": "accuracy", "min": 0.5}],
        checks=[{"name": "broken", "query": 'sum(label_replace(modelwarden_predictions_total{model="{{ model }}"}, "a", "x", "b", "("))', "max": 1}],
    )
    timed = evaluate(spec, Target("fraud", versions={"stable": "1"}), provider, _at(history.end))
    results = _results(timed.report)
    assert results["custom/broken"].verdict is Verdict.ERROR and "QueryError" in results["custom/broken"].message
    assert "regular expression" in results["custom/broken"].message  # Prometheus's own reason is passed on
    assert results["performance/accuracy"].verdict is Verdict.PASS
    assert timed.report.evaluation.verdict is Verdict.ERROR
