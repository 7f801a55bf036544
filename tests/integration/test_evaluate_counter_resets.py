"""Counter resets (a model server restarting) against a real Prometheus (#14): two servers of the
same model see exactly the same traffic; one restarts twice inside the judged window. Every
count the evaluation reads (feature histograms, predictions, feedback) is the same for both, and
so is every verdict: a restart is neither drift nor an error."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from modelwarden.api.driftpolicy import DriftPolicySpec, Verdict
from modelwarden.prometheus.client import PrometheusConfig, PrometheusProvider
from modelwarden.prometheus.collect import Target, evaluate
from tests.integration.evaluate_history import NORMAL_EDGES, History, bin_probabilities, format_le, hours_ago_aligned

HOUR = 60  # one-minute steps
PER_STEP = 200
FEATURES = ("f00", "f01", "f02")
RESTARTS = (HOUR + 20, HOUR + 45)  # both inside the last hour, the window judged


def server(history: History, model: str, resets: tuple[int, ...]) -> None:
    labels = {"model": model, "version": "1", "track": "stable"}
    bins = np.round(bin_probabilities(NORMAL_EDGES) * PER_STEP)
    for feature in FEATURES:
        cumulative = np.cumsum(bins)
        for edge, count in zip([*NORMAL_EDGES, np.inf], cumulative):
            history.counter("modelwarden_feature_value", "modelwarden_feature_value_bucket",
                            {**labels, "feature": feature, "le": format_le(edge)}, count, "histogram", resets)
    history.counter("modelwarden_predictions", "modelwarden_predictions_total", labels, bins.sum(), resets=resets)
    for predicted, actual, count in (("1", "1", 90), ("0", "0", 90), ("1", "0", 10), ("0", "1", 10)):
        history.counter("modelwarden_feedback", "modelwarden_feedback_total", {**labels, "predicted": predicted, "actual": actual},
                        count, resets=resets)


def test_a_restart_inside_the_window_changes_no_count_and_no_verdict(history_prometheus):
    history = History(hours_ago_aligned(3), 2 * HOUR, seed=3)
    server(history, "steady", ())
    server(history, "restarted", RESTARTS)
    prometheus = history_prometheus(history)
    spec = DriftPolicySpec.model_validate({
        "targetRef": {"name": "m"}, "window": "1h", "minSamples": 100, "reference": {"offset": "1h"},
        "drift": {"method": "psi", "predictions": False}, "performance": [{"metric": "accuracy", "min": 0.85}]})
    at = datetime.fromtimestamp(history.end, timezone.utc)
    with PrometheusProvider(PrometheusConfig(prometheus.url)) as provider:
        reports = {model: evaluate(spec, Target(model, versions={"stable": "1"}), provider, at).report for model in ("steady", "restarted")}
        seen = provider.query('resets(modelwarden_predictions_total{model="restarted"}[1h])', at).values.tolist()
    assert seen == [2.0]  # Prometheus holds both restarts
    steady, restarted = reports["steady"], reports["restarted"]
    assert steady.evaluation.verdict == restarted.evaluation.verdict == Verdict.PASS, restarted.evaluation.results
    np.testing.assert_allclose(restarted.drift[0].current_samples, steady.drift[0].current_samples)
    assert steady.drift[0].current_samples.min() > 0.9 * HOUR * PER_STEP  # the whole hour was counted, not only since the restart
    by_check = {model: {r.check: r.value for r in report.evaluation.results} for model, report in reports.items()}
    assert by_check["restarted"].keys() == by_check["steady"].keys()
    for check, value in by_check["steady"].items():
        assert abs(by_check["restarted"][check] - value) <= 1e-9 * max(1.0, abs(value)), (check, by_check)
    assert abs(by_check["steady"]["performance/accuracy"] - 0.9) < 1e-9
