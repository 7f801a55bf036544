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
    assert record.tags["modelwarden.io/check/" + metric_key("custom/odd name:x")] == "Pass"
    assert record.params == {"track": "shadow", "window": "10m", "interval": "1m", "alpha": "0.01", "minSamples": "1000",
                             "failureThreshold": "3", "reference": "track", "drift.method": "psi",
                             "performance.latency_p99": "max 0.2", "agreement.minRate": "0.98"}


def test_a_named_experiment_and_an_unknown_version():
    record = tracking_record("ml", "gate", None, spec(mlflow={"experiment": "fraud-monitoring"}), EVALUATION, "fraud", None)
    assert record.experiment == "fraud-monitoring" and record.identity["modelwarden.io/version"] == "unknown"
    assert metric_key("a:b*c/d e.f-g_h").startswith("a_b_c/d e.f-g_h_") and metric_key("d e.f-g_h") == "d e.f-g_h"


def test_odd_class_labels_become_valid_distinct_mlflow_keys():
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name, _validate_tag_name

    labelled = DriftPolicySpec.model_validate({"targetRef": {"name": "fraud"}, "tracking": {"mlflow": {}}, "performance": [
        {"metric": "recall", "class": ">50K", "min": 0.5}, {"metric": "precision", "class": "a+b", "min": 0.5},
        {"metric": "precision", "class": "a_b", "min": 0.5}, {"metric": "f1", "class": "yes/", "min": 0.5}]})
    checks = ["performance/recall/>50K", "performance/precision/a+b", "performance/precision/a_b", "performance/f1/yes/",
              "performance/f1/" + "x" * 250]
    evaluation = Evaluation(time=AT, verdict=Verdict.PASS, results=[
        CheckResult(check=check, verdict=Verdict.PASS, value=0.6) for check in checks])
    record = tracking_record("ml", "gate", 1, labelled, evaluation, "fraud", "9")
    assert len(record.metrics) == len(checks) and len([t for t in record.tags if "/check/" in t]) == len(checks)  # none collide
    for key in record.metrics:
        _validate_metric_name(key)
    for key in record.tags:
        _validate_tag_name(key)
        assert len(key) <= 250
    for key in record.params:
        _validate_param_name(key)
    assert "performance/precision/a_b" in record.metrics  # a valid name is kept as it is


async def test_one_policys_records_are_logged_in_order_one_at_a_time_and_only_the_newest_waits(monkeypatch):
    import asyncio
    import threading

    from modelwarden.controller import tracking
    from modelwarden.controller.config import OperatorConfig

    logged, active, most = [], [0], [0]
    release = threading.Event()

    class SlowSink:
        def log(self, record):
            active[0] += 1
            most[0] = max(most[0], active[0])
            release.wait(10)
            logged.append(record.step)
            active[0] -= 1
            return "run-1"

    monkeypatch.setattr(tracking, "mlflow_sink", lambda config: SlowSink())
    reference = {"apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": "gate", "namespace": "ml", "uid": "u"}}
    records = [tracking_record("ml", "gate", 1, spec(mlflow={}), EVALUATION.model_copy(update={"time": AT.replace(minute=m)}),
                               "fraud", "9") for m in (1, 2, 3)]
    config = OperatorConfig(mlflow_tracking_uri="http://mlflow")
    for record in records:  # three evaluations while the first is still being logged
        tracking.record(config, reference, record)
        await asyncio.sleep(0.05)
    release.set()
    while tracking._logging:
        await asyncio.sleep(0.05)
    assert logged == [records[0].step, records[2].step] and most[0] == 1  # the second was replaced by the third
