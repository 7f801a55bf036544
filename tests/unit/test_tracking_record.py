"""What one evaluation records in MLflow (planning.tracking): the run's identity, the checks'
values at step = the evaluation's time, the verdict as a tag, the policy's settings as params."""

from __future__ import annotations

from datetime import datetime, timezone

from modelwarden.api.driftpolicy import CheckResult, DriftPolicySpec, Evaluation, Verdict
from modelwarden.planning.tracking import metric_key, tracking_record

AT = datetime(2026, 12, 3, 12, 0, 30, 250000, tzinfo=timezone.utc)


def spec(**tracking) -> DriftPolicySpec:
    return DriftPolicySpec.model_validate({
        "targetRef": {"name": "fraud"}, "track": "shadow", "window": "10m", "reference": {"track": "stable"},
        "drift": {"method": "psi"}, "agreement": {"minRate": 0.98}, "performance": [{"metric": "latency_p99", "max": 0.2}],
        **({"tracking": tracking} if tracking else {})})


EVALUATION = Evaluation(time=AT, verdict=Verdict.FAIL, samples=1200, results=[
    CheckResult(check="drift/features", verdict=Verdict.PASS, value=0.04),
    CheckResult(check="agreement/rate", verdict=Verdict.FAIL, value=0.93),
    CheckResult(check="performance/latency_p99", verdict=Verdict.INSUFFICIENT_DATA, value=None),
    CheckResult(check="custom/odd name:x", verdict=Verdict.PASS, value=float("nan")),
])


def test_an_untracked_policy_records_nothing():
    assert tracking_record("ml", "gate", 3, spec(), EVALUATION, "fraud", "9") is None
    assert tracking_record("ml", "gate", 3, spec(mlflow=None), EVALUATION, "fraud", "9") is None


def test_the_record_names_its_run_and_holds_the_checks_values_at_the_evaluations_second():
    record = tracking_record("ml", "gate", 3, spec(mlflow={}), EVALUATION, "fraud", "9")
    assert record.experiment == "modelwarden/ml/fraud" and record.run_name == "gate fraud v9"
    assert record.identity == {"modelwarden.io/namespace": "ml", "modelwarden.io/policy": "gate",
                               "modelwarden.io/model": "fraud", "modelwarden.io/version": "9"}
    assert record.metrics == {"drift/features": 0.04, "agreement/rate": 0.93, "samples": 1200.0}  # no value, no point
    assert (record.step, record.timestamp_ms) == (int(AT.timestamp()), int(AT.timestamp() * 1000))
    assert record.tags["modelwarden.io/verdict"] == "Fail" and record.tags["modelwarden.io/generation"] == "3"
    assert record.tags["modelwarden.io/check/agreement/rate"] == "Fail"
    assert record.tags["modelwarden.io/check/custom/odd name_x"] == "Pass"
    assert record.params == {"track": "shadow", "window": "10m", "interval": "1m", "alpha": "0.01", "minSamples": "1000",
                             "failureThreshold": "3", "reference": "track", "drift.method": "psi",
                             "performance.latency_p99": "max 0.2", "agreement.minRate": "0.98"}


def test_a_named_experiment_and_an_unknown_version():
    record = tracking_record("ml", "gate", None, spec(mlflow={"experiment": "fraud-monitoring"}), EVALUATION, "fraud", None)
    assert record.experiment == "fraud-monitoring" and record.identity["modelwarden.io/version"] == "unknown"
    assert metric_key("a:b*c/d e.f-g_h") == "a_b_c/d e.f-g_h"
