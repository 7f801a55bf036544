"""DriftPolicy evaluations recorded in a real `mlflow server` (registry.mlflow_tracking): one run per
(namespace, policy, model, version), found again by a fresh tracker (a restarted operator), with
every check's value at each evaluation's step, the latest verdict as a tag and the settings as params."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from modelwarden.api.driftpolicy import CheckResult, DriftPolicySpec, Evaluation, Verdict
from modelwarden.planning.tracking import tracking_record
from modelwarden.registry.base import RegistryError, RegistryUnavailable
from modelwarden.registry.mlflow import MlflowRegistry
from modelwarden.registry.mlflow_tracking import MlflowTracker
from modelwarden.sandbox.processes import free_port
from tests.mlflow_server import client

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
SPEC = DriftPolicySpec.model_validate({"targetRef": {"name": "fraud"}, "track": "shadow", "reference": {"track": "stable"},
                                       "drift": {}, "agreement": {"minRate": 0.98}, "tracking": {"mlflow": {}}})


def evaluation(minute: int, agreement: float, verdict: Verdict) -> Evaluation:
    return Evaluation(time=T0 + timedelta(minutes=minute), verdict=verdict, samples=1000 + minute, results=[
        CheckResult(check="drift/features", verdict=Verdict.PASS, value=0.01 * minute),
        CheckResult(check="agreement/rate", verdict=verdict, value=agreement)])


def test_three_evaluations_are_three_steps_of_one_run_whoever_logs_them(mlflow_server):
    namespace = f"ns-{free_port()}"  # a fresh experiment per run of the test module
    records = [tracking_record(namespace, "gate", 1, SPEC, evaluation(m, a, v), "fraud", "9")
               for m, a, v in ((0, 0.99, Verdict.PASS), (1, 0.985, Verdict.PASS), (2, 0.95, Verdict.FAIL))]
    runs = [MlflowTracker(MlflowRegistry(mlflow_server.url)).log(record) for record in records]  # a new tracker each time
    assert len(set(runs)) == 1
    mlflow = client(mlflow_server.url)
    experiment = mlflow.get_experiment_by_name(f"modelwarden/{namespace}/fraud")
    (run,) = mlflow.search_runs([experiment.experiment_id])
    assert run.info.run_id == runs[0] and run.info.run_name == "gate fraud v9"
    history = mlflow.get_metric_history(run.info.run_id, "agreement/rate")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (int(r.step), v) for r, v in zip(records, (0.99, 0.985, 0.95))]
    assert [m.step - records[0].step for m in sorted(history, key=lambda m: m.step)] == [0, 60, 120]
    assert len(mlflow.get_metric_history(run.info.run_id, "samples")) == 3
    assert run.data.tags["modelwarden.io/verdict"] == "Fail" and run.data.tags["modelwarden.io/policy"] == "gate"
    assert run.data.params["agreement.minRate"] == "0.98" and run.data.params["track"] == "shadow"

    another_version = tracking_record(namespace, "gate", 1, SPEC, evaluation(3, 0.99, Verdict.PASS), "fraud", "10")
    assert MlflowTracker(MlflowRegistry(mlflow_server.url)).log(another_version) not in runs  # a run per version
    assert len(mlflow.search_runs([experiment.experiment_id])) == 2


def test_an_unreachable_or_refusing_server_is_an_error_naming_it(mlflow_server):
    record = tracking_record("ml", "gate", 1, SPEC, evaluation(0, 0.99, Verdict.PASS), "fraud", "9")
    with pytest.raises(RegistryUnavailable, match="is unreachable"):
        MlflowTracker(MlflowRegistry(f"http://127.0.0.1:{free_port()}")).log(record)
    bad = tracking_record("ml", "gate", 1, SPEC.model_copy(update={"tracking": SPEC.tracking.model_copy(update={
        "mlflow": SPEC.tracking.mlflow.model_copy(update={"experiment": "x" * 501})})}), evaluation(0, 0.99, Verdict.PASS), "fraud", "9")
    with pytest.raises(RegistryError, match="MLflow at http://127.0.0.1"):
        MlflowTracker(MlflowRegistry(mlflow_server.url)).log(bad)


def test_a_run_found_without_its_params_gets_them_and_odd_labels_are_accepted(mlflow_server):
    """A run whose first batch never arrived (created, then the call failed) gets its params with the
    next evaluation; class labels MLflow would refuse as keys are logged under valid ones."""
    namespace = f"ns-{free_port()}"
    spec = DriftPolicySpec.model_validate({"targetRef": {"name": "income"}, "tracking": {"mlflow": {}},
                                           "performance": [{"metric": "recall", "class": ">50K", "min": 0.5}]})
    record = tracking_record(namespace, "gate", 1, spec, Evaluation(time=T0, verdict=Verdict.PASS, results=[
        CheckResult(check="performance/recall/>50K", verdict=Verdict.PASS, value=0.61)]), "income", "3")
    mlflow = client(mlflow_server.url)
    experiment = mlflow.create_experiment(record.experiment)
    orphan = mlflow.create_run(experiment, tags=record.identity, run_name=record.run_name)  # no params, no metrics
    assert MlflowTracker(MlflowRegistry(mlflow_server.url)).log(record) == orphan.info.run_id
    run = mlflow.get_run(orphan.info.run_id)
    (key,) = [k for k in run.data.metrics]
    assert key.startswith("performance/recall/_50K_") and run.data.metrics[key] == 0.61
    assert any(k.startswith("performance.recall.") for k in run.data.params) and run.data.params["track"] == "stable"
