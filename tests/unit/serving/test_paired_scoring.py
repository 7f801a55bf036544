"""Paired scoring (serving.paired): a second classifier scores the served rows, and the server
counts rows per (predicted, paired_predicted) pair for the operator's agreement rate."""

from __future__ import annotations

import argparse
import threading
import time

import joblib
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.tree import DecisionTreeClassifier

from modelwarden.commands.serve import config_from_args, configure
from modelwarden.contract import environment as env
from modelwarden.contract import metrics
from modelwarden.sandbox import datagen
from modelwarden.sandbox.modelserver import ModelServerProcess
from modelwarden.serving.model import ModelRunner
from modelwarden.serving.paired import PairedScoring
from modelwarden.serving.service import ServeConfig, StartupError
from modelwarden.serving.startup import load_service

LABELS = {metrics.MODEL: "fraud", metrics.VERSION: "8", metrics.TRACK: "shadow"}
X, Y = datagen.classification(400, seed=3)


@pytest.fixture(scope="module")
def paired_dir(tmp_path_factory):
    """A different classifier on the same data (a stump): it disagrees with the example model on some rows."""
    directory = tmp_path_factory.mktemp("paired")
    joblib.dump(DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, Y), directory / "model.joblib")
    return directory


def scrape(registry: CollectorRegistry) -> dict[str, list]:
    text = generate_latest(registry).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def pairs_of(samples) -> dict[tuple[str, str], float]:
    return {(s.labels[metrics.PREDICTED], s.labels[metrics.PAIRED_PREDICTED]): s.value for s in samples
            if s.name == metrics.PAIRED_PREDICTIONS}


def paired_service(examples, paired_dir, **config):
    return load_service(ServeConfig(model_uri=str(examples["classifier"].directory), name="fraud", version="8",
                                    track="shadow", prediction_log="off", paired_model=str(paired_dir),
                                    paired_version="7", **config))


def scoring(classes=("0", "1"), paired_classes=(0, 1)) -> tuple[PairedScoring, CollectorRegistry]:
    estimator = LogisticRegression().fit(np.arange(len(paired_classes) * 2.0).reshape(-1, 1),
                                         list(paired_classes) * 2)
    registry = CollectorRegistry()
    return PairedScoring(ModelRunner(estimator), "7", LABELS, list(classes), registry), registry


def test_every_known_pair_is_exported_at_zero_from_the_start():
    _, registry = scoring(classes=("0", "1", "2"), paired_classes=(0, 1))
    families = scrape(registry)
    pairs = families[metrics.PAIRED_PREDICTIONS.removesuffix("_total")]
    assert pairs_of(pairs) == {(p, q): 0.0 for p in ("0", "1", "2") for q in ("0", "1")}
    assert all(s.labels == {**LABELS, metrics.PAIRED_VERSION: "7", metrics.PREDICTED: s.labels[metrics.PREDICTED],
                            metrics.PAIRED_PREDICTED: s.labels[metrics.PAIRED_PREDICTED]} for s in pairs)
    errors = families[metrics.PAIRED_PREDICTION_ERRORS.removesuffix("_total")]
    assert {s.labels[metrics.REASON]: s.value for s in errors} == {"behind": 0, "model_error": 0}
    assert all(s.name == metrics.PAIRED_PREDICTION_ERRORS and s.labels == {**LABELS, metrics.PAIRED_VERSION: "7",
                                                                          metrics.REASON: s.labels[metrics.REASON]} for s in errors)


def test_rows_are_counted_per_pair_with_canonical_labels():
    paired, registry = scoring()
    paired.count(np.array([0, 1, 1, 0, 1]), np.array([0.0, 1.0, 0.0, 0.0, 1.0]))  # 1.0 and 1 are one class
    paired.count(np.array([1]), np.array([1]))
    assert pairs_of(scrape(registry)["modelwarden_paired_predictions"]) == {
        ("0", "0"): 2, ("0", "1"): 0, ("1", "0"): 1, ("1", "1"): 3}


def test_a_pair_outside_the_known_classes_is_added_when_first_seen():
    paired, registry = scoring()
    paired.count(np.array(["7", "0"], dtype=object), np.array([1, 0]))
    assert pairs_of(scrape(registry)["modelwarden_paired_predictions"]) == {
        ("0", "0"): 1, ("0", "1"): 0, ("1", "0"): 0, ("1", "1"): 0, ("7", "1"): 1}


def test_a_batch_of_another_length_is_refused():
    paired, _ = scoring()
    with pytest.raises(ValueError, match="predictions"):
        paired.count(np.array([0, 1]), np.array([0]))


async def test_the_served_request_is_scored_by_both_models(examples, paired_dir):
    service = paired_service(examples, paired_dir)
    rows = X[:50]
    outputs = await service.predict(rows)
    service.record("r1", rows, outputs, time.perf_counter())
    service.score_paired(rows, outputs)
    assert service.paired.drain()
    served = joblib.load(examples["classifier"].model).predict(rows)
    stump = joblib.load(paired_dir / "model.joblib").predict(rows)
    expected = {(str(p), str(q)): float(np.sum((served == p) & (stump == q))) for p in (0, 1) for q in (0, 1)}
    families = scrape(service.registry)
    assert pairs_of(families["modelwarden_paired_predictions"]) == expected
    assert expected[("0", "1")] + expected[("1", "0")] > 0  # the two models do disagree somewhere
    assert families["modelwarden_predictions"][0].value == 50  # the served model's own counts as always
    assert families["modelwarden_predictions"][0].labels[metrics.TRACK] == "shadow"
    service.close()


async def test_the_paired_model_runs_off_the_requests_path_and_a_backlog_is_left_unpaired(examples, paired_dir, monkeypatch):
    service = paired_service(examples, paired_dir)
    release, entered = threading.Event(), threading.Event()
    threads: list[int] = []
    predict = service.paired.runner.predict

    def slow(rows):
        threads.append(threading.get_ident())
        entered.set()
        release.wait(10)
        return predict(rows)

    monkeypatch.setattr(service.paired.runner, "predict", slow)
    service.paired._max_pending = 2
    rows = X[:5]
    outputs = await service.predict(rows)
    for _ in range(4):  # returns at once although the paired model is stuck on the first
        service.score_paired(rows, outputs)
    assert entered.wait(10) and threads[0] != threading.get_ident()
    assert service.paired.snapshot()[1] == {"behind": 2, "model_error": 0}  # two queued, two left unpaired
    release.set()
    assert service.paired.drain()
    counts, unpaired = service.paired.snapshot()
    assert sum(counts.values()) == 10 and unpaired == {"behind": 2, "model_error": 0}
    service.close()


async def test_a_failing_paired_model_is_counted_and_never_fails_the_request(examples, paired_dir, monkeypatch):
    service = paired_service(examples, paired_dir)

    def broken(rows):
        raise RuntimeError("the stable's weights are corrupt")

    monkeypatch.setattr(service.paired.runner, "predict", broken)
    rows = X[:3]
    outputs = await service.predict(rows)
    predicted = service.record("r1", rows, outputs, time.perf_counter())
    service.score_paired(rows, outputs)  # does not raise
    assert service.paired.drain()
    assert predicted == joblib.load(examples["classifier"].model).predict(rows).tolist()
    families = scrape(service.registry)
    unpaired = {s.labels[metrics.REASON]: s.value for s in families["modelwarden_paired_prediction_errors"]}
    assert unpaired == {"behind": 0, "model_error": 1}
    assert set(pairs_of(families["modelwarden_paired_predictions"]).values()) == {0}
    assert families["modelwarden_predictions"][0].value == 3
    assert not any(s.value for s in families["modelwarden_prediction_errors"])  # the request itself is no error
    service.close()


def test_a_regression_model_is_served_unpaired_with_a_warning(examples, tmp_path):
    joblib.dump(Ridge().fit(*datagen.regression(100, seed=1)), tmp_path / "model.joblib")
    service = load_service(ServeConfig(model_uri=str(examples["regressor"].directory), name="m", prediction_log="off",
                                       paired_model=str(tmp_path)))
    assert service.paired is None
    assert any("agreement is defined for two classifiers only, so requests are not paired" in w for w in service.warnings)


def test_a_paired_model_of_another_task_is_not_paired(examples, tmp_path, paired_dir):
    joblib.dump(Ridge().fit(*datagen.regression(100, seed=1)), tmp_path / "model.joblib")
    service = load_service(ServeConfig(model_uri=str(examples["classifier"].directory), name="m", prediction_log="off",
                                       paired_model=str(tmp_path)))
    assert service.paired is None
    assert any(f"the paired model {tmp_path / 'model.joblib'} is a regression model and the served model a "
               "classification model" in w for w in service.warnings)


def test_pairs_beyond_the_series_budget_are_not_exported(examples, paired_dir):
    service = paired_service(examples, paired_dir, max_series=237 + 5)  # the profile's 237 fit; its 2 × 2 + 2 pairs do not
    assert service.paired is None and any("add 6 series (classes × its classes) to 237, more than --max-series 242" in w
                                          for w in service.warnings)
    assert paired_service(examples, paired_dir, max_series=237 + 6).paired is not None


def test_a_paired_model_that_does_not_load_or_takes_other_inputs_is_refused(examples, tmp_path):
    with pytest.raises(StartupError, match=r"cannot load the paired model \(--paired-model\): model not found"):
        paired_service(examples, tmp_path / "gone")
    joblib.dump(LogisticRegression().fit(X[:, :3], Y), tmp_path / "model.joblib")
    with pytest.raises(StartupError, match="takes 3 features but the served model takes 6"):
        paired_service(examples, tmp_path)


def test_without_metrics_nothing_is_paired(examples, tmp_path):
    service = paired_service(examples, tmp_path / "gone", metrics=False)  # not even loaded
    assert service.paired is None


def test_flags_and_environment(monkeypatch):
    def parse(*argv: str) -> ServeConfig:
        parser = argparse.ArgumentParser()
        configure(parser)
        return config_from_args(parser.parse_args(["--model", "m", "--name", "n", *argv]))

    for name in (env.PAIRED_MODEL_PATH, env.PAIRED_MODEL_URI, env.PAIRED_MODEL_VERSION):
        monkeypatch.delenv(name, raising=False)
    assert (parse().paired_model, parse().paired_version) == (None, "unknown")
    flagged = parse("--paired-model", "/s", "--paired-version", "3")
    assert (flagged.paired_model, flagged.paired_version) == ("/s", "3")
    monkeypatch.setenv(env.PAIRED_MODEL_URI, "file:///uri")
    assert parse().paired_model == "file:///uri"
    monkeypatch.setenv(env.PAIRED_MODEL_PATH, "/mnt/paired")
    monkeypatch.setenv(env.PAIRED_MODEL_VERSION, "41")
    assert (parse().paired_model, parse().paired_version) == ("/mnt/paired", "41")


def test_model_server_process_passes_the_paired_model(tmp_path):
    assert "--paired-model" not in ModelServerProcess("/m", "n", log_file=tmp_path / "a.log").command()
    server = ModelServerProcess("/m", "n", paired_model="/p", paired_version="6", log_file=tmp_path / "b.log")
    command = server.command()
    assert command[command.index("--paired-model"):][:4] == ["--paired-model", "/p", "--paired-version", "6"]
