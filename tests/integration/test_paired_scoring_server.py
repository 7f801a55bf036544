"""Paired scoring against real `modelwarden serve` processes: a server of model A with model B as its
paired model counts, per (A's class, B's class), exactly the rows it was sent, and answers as A.
The paired model scores off the request's path, so counts are read once they caught up."""

from __future__ import annotations

import os
import subprocess
from collections import Counter

import joblib
import numpy as np
import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from sklearn.tree import DecisionTreeClassifier

from modelwarden.contract import environment as env
from modelwarden.contract import metrics
from modelwarden.sandbox import datagen
from modelwarden.sandbox.modelserver import ModelServerProcess
from modelwarden.serving.routes import build_app
from modelwarden.serving.service import ServeConfig
from modelwarden.serving.startup import load_service
from tests.controlplane.support import wait_for

NAME = "fraud"
BATCHES = [1, 2, 3, 5, 8, 13, 21, 34, 1, 55, 4, 7]  # one request each, alternately V1 and V2


@pytest.fixture(scope="module")
def stable_dir(tmp_path_factory):
    """Model B, "the stable's": a stump on the example classifier's training data, so the two
    classifiers agree on most rows but not all, in both directions."""
    x, y = datagen.classification(5000, seed=7)
    directory = tmp_path_factory.mktemp("stable-model")
    joblib.dump(DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y), directory / "model.joblib")
    return directory


def scrape(server) -> dict[str, list]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def predict(server, rows: np.ndarray, v2: bool) -> list:
    if v2:
        tensor = {"name": "input", "datatype": "FP64", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        body = {"inputs": [tensor]}
        response = requests.post(f"{server.url}/v2/models/{NAME}/infer", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["outputs"][0]["data"]
    response = requests.post(f"{server.url}/v1/models/{NAME}:predict", json={"instances": rows.tolist()}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


@pytest.mark.parametrize("threads", [0, 2], ids=["inline", "inference-threads"])
def test_pair_counts_are_exactly_the_two_models_predictions(threads, serving_examples, stable_dir, start_model_server):
    server = start_model_server(serving_examples["classifier"].directory, NAME, version="8", track="shadow",
                                paired_model=stable_dir, paired_version="7",
                                extra_args=("--prediction-log", "off", "--inference-threads", str(threads)))
    before = scrape(server)
    pairs = [s for s in before["modelwarden_paired_predictions"] if s.name == metrics.PAIRED_PREDICTIONS]
    assert {(s.labels[metrics.PREDICTED], s.labels[metrics.PAIRED_PREDICTED]): s.value for s in pairs} == {
        ("0", "0"): 0, ("0", "1"): 0, ("1", "0"): 0, ("1", "1"): 0}  # every pair there before any request
    own = {metrics.MODEL: NAME, metrics.VERSION: "8", metrics.TRACK: "shadow", metrics.PAIRED_VERSION: "7"}
    assert all(s.labels.items() >= own.items() for s in pairs)

    served_model = joblib.load(serving_examples["classifier"].model)
    stable_model = joblib.load(stable_dir / "model.joblib")
    x, _ = datagen.classification(sum(BATCHES), seed=31)
    expected: Counter[tuple[str, str]] = Counter()
    start = 0
    for i, size in enumerate(BATCHES):
        rows = x[start:start + size]
        start += size
        answered = predict(server, rows, v2=i % 2 == 1)
        assert answered == served_model.predict(rows).tolist()  # the served model's answer, not the paired one's
        expected.update((str(a), str(b)) for a, b in zip(served_model.predict(rows), stable_model.predict(rows)))

    def caught_up():
        scraped = scrape(server)
        rows = sum(s.value for s in scraped["modelwarden_paired_predictions"] if s.name == metrics.PAIRED_PREDICTIONS)
        return scraped if rows >= len(x) else None

    after = wait_for(caught_up, timeout=60, message="the paired model scored every row")
    counted = {(s.labels[metrics.PREDICTED], s.labels[metrics.PAIRED_PREDICTED]): s.value
               for s in after["modelwarden_paired_predictions"] if s.name == metrics.PAIRED_PREDICTIONS}
    assert counted == {(p, q): expected[p, q] for p in ("0", "1") for q in ("0", "1")}
    assert sum(counted.values()) == len(x) == after["modelwarden_predictions"][0].value
    assert expected["0", "1"] > 0 and expected["1", "0"] > 0 and expected["0", "0"] + expected["1", "1"] > 0
    unpaired = {s.labels[metrics.REASON]: s.value for s in after["modelwarden_paired_prediction_errors"]
                if s.name == metrics.PAIRED_PREDICTION_ERRORS}
    assert unpaired == {"behind": 0, "model_error": 0}


def test_a_regression_shadow_is_served_unpaired_with_a_warning(serving_examples, start_model_server):
    """Agreement is for classifiers: a regression candidate's shadow still serves (it is not refused)."""
    server = start_model_server(serving_examples["regressor"].directory, NAME, track="shadow",
                                paired_model=serving_examples["regressor"].directory, paired_version="7",
                                extra_args=("--prediction-log", "off"))
    x, _ = datagen.regression(3, seed=5)
    response = requests.post(f"{server.url}/v1/models/{NAME}:predict", json={"instances": x.tolist()}, timeout=10)
    assert response.status_code == 200
    assert "modelwarden_paired_predictions" not in scrape(server)
    assert "agreement is defined for two classifiers only, so requests are not paired" in server.log_tail(50)


def test_a_paired_model_that_takes_other_inputs_refuses_to_start(serving_examples, tmp_path):
    joblib.dump(DecisionTreeClassifier(max_depth=1).fit(np.arange(8.0).reshape(4, 2), [0, 1, 0, 1]), tmp_path / "model.joblib")
    server = ModelServerProcess(serving_examples["classifier"].directory, NAME, log_file=tmp_path / "serve.log",
                                paired_model=tmp_path, paired_version="7")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "MODELWARDEN_PAIRED_"))}
    result = subprocess.run(server.command(), capture_output=True, text=True, timeout=60, env=clean, check=False)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line == (f"modelwarden serve: error: the paired model {tmp_path / 'model.joblib'} takes 2 features but "
                    "the served model takes 6")


def test_paired_model_from_the_environment(serving_examples, stable_dir, start_model_server):
    server = start_model_server(serving_examples["classifier"].directory, NAME, extra_args=("--prediction-log", "off"),
                                env={env.PAIRED_MODEL_PATH: str(stable_dir), env.PAIRED_MODEL_VERSION: "41"})
    predict(server, datagen.classification(3, seed=5)[0], v2=False)

    def counted():
        samples = [s for s in scrape(server)["modelwarden_paired_predictions"] if s.name == metrics.PAIRED_PREDICTIONS]
        return samples if sum(s.value for s in samples) == 3 else None

    samples = wait_for(counted, timeout=60, message="three rows paired")
    assert {s.labels[metrics.PAIRED_VERSION] for s in samples} == {"41"}


async def test_a_failing_paired_model_never_fails_a_request(serving_examples, stable_dir, monkeypatch):
    service = load_service(ServeConfig(model_uri=str(serving_examples["classifier"].directory), name=NAME,
                                       prediction_log="off", paired_model=str(stable_dir)))

    def broken(rows):
        raise RuntimeError("the stable's weights are corrupt")

    monkeypatch.setattr(service.paired.runner, "predict", broken)
    x, _ = datagen.classification(4, seed=9)
    async with TestClient(TestServer(build_app(service))) as client:
        v1 = await client.post(f"/v1/models/{NAME}:predict", json={"instances": x.tolist()})
        v2 = await client.post(f"/v2/models/{NAME}/infer", json={"inputs": [
            {"name": "input", "datatype": "FP64", "shape": [4, 6], "data": x.ravel().tolist()}]})
        assert v1.status == 200 and v2.status == 200
        expected = joblib.load(serving_examples["classifier"].model).predict(x).tolist()
        assert (await v1.json())["predictions"] == expected == (await v2.json())["outputs"][0]["data"]
        assert service.paired.drain()
        text = await (await client.get("/metrics")).text()
    families = {family.name: family.samples for family in text_string_to_metric_families(text)}
    unpaired = {s.labels[metrics.REASON]: s.value for s in families["modelwarden_paired_prediction_errors"]}
    assert unpaired == {"behind": 0, "model_error": 2}
    assert not any(s.value for s in families["modelwarden_server_errors"])
    assert not any(s.value for s in families["modelwarden_paired_predictions"] if s.name == metrics.PAIRED_PREDICTIONS)
