"""Issue 16, serving side, against real `modelwarden serve` processes: a model directory as the
storage initializer leaves it (model.skops, an MLflow sklearn model made by mlflow itself), the
skops trusted-types refusal, and a model served without a reference profile."""

from __future__ import annotations

import json
import operator
import os
import shutil

import joblib
import numpy as np
import pytest
import requests
import skops.io
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from modelwarden.contract import metrics
from modelwarden.sandbox import datagen
from tests.integration.test_serving_startup import one_line_error, serve

NAME = "fraud"
ROWS, _ = datagen.classification(40, seed=23)


def post(server, path: str, body) -> requests.Response:
    return requests.post(f"{server.url}{path}", data=json.dumps(body), timeout=10)


def answers(server) -> tuple[list, list]:
    """Labels (V1) and positive-class scores (V2) of ROWS."""
    v1 = post(server, f"/v1/models/{NAME}:predict", {"instances": ROWS.tolist()})
    assert v1.status_code == 200, v1.text
    tensor = {"name": "input", "datatype": "FP64", "shape": list(ROWS.shape), "data": ROWS.tolist()}
    v2 = post(server, f"/v2/models/{NAME}/infer", {"inputs": [tensor]})
    assert v2.status_code == 200, v2.text
    scores = next(output["data"] for output in v2.json()["outputs"] if output["name"] == "score")
    return v1.json()["predictions"], scores


def assert_serves_like(server, estimator) -> None:
    labels, scores = answers(server)
    assert labels == estimator.predict(ROWS).tolist()
    np.testing.assert_allclose(scores, estimator.predict_proba(ROWS)[:, 1], rtol=1e-12)


def scrape(server) -> dict[str, list]:
    found: dict[str, list] = {}
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def metadata(server) -> dict:
    answer = requests.get(f"{server.url}/v2/models/{NAME}", timeout=10)
    assert answer.status_code == 200
    return answer.json()


@pytest.fixture(scope="module")
def estimator(serving_examples):
    return joblib.load(serving_examples["classifier"].model)


@pytest.fixture(scope="module")
def mlflow_models(tmp_path_factory, serving_examples, estimator) -> dict[str, object]:
    """The example classifier saved by mlflow.sklearn.save_model itself, by serialization format
    (None: mlflow's default), each with the example's profile.json beside it."""
    import mlflow.sklearn

    root = tmp_path_factory.mktemp("mlflow")
    made = {}
    for serialization in (None, "cloudpickle", "pickle"):
        directory = root / (serialization or "default")
        mlflow.sklearn.save_model(estimator, str(directory), serialization_format=serialization)
        shutil.copy(serving_examples["classifier"].profile, directory / "profile.json")
        made[serialization] = directory
    return made


@pytest.fixture(scope="module")
def no_mlflow(tmp_path_factory) -> dict[str, str]:
    """An environment in which importing mlflow fails: the server must not need it."""
    shadow = tmp_path_factory.mktemp("no-mlflow")
    (shadow / "mlflow").mkdir()
    (shadow / "mlflow" / "__init__.py").write_text('raise ImportError("modelwarden serve must not import mlflow")\n')
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))}


def test_model_skops_directory_serves(tmp_path, serving_examples, estimator, start_model_server):
    skops.io.dump(estimator, tmp_path / "model.skops")
    shutil.copy(serving_examples["classifier"].profile, tmp_path / "profile.json")
    server = start_model_server(tmp_path, NAME, extra_args=("--prediction-log", "off"))
    assert_serves_like(server, estimator)
    assert metadata(server)["parameters"]["profile"] == "loaded"
    assert [sample.value for sample in scrape(server)[metrics.PROFILE_LOADED]] == [1.0]
    assert "(stable, classification, model.skops)" in server.log_tail(200)


def test_skops_model_with_an_untrusted_type_is_refused(tmp_path, start_model_server):
    untrusted = make_pipeline(FunctionTransformer(operator.neg), StandardScaler(), LogisticRegression())
    untrusted.fit(*datagen.classification(500, seed=5))
    skops.io.dump(untrusted, tmp_path / "model.skops")
    line = one_line_error(serve("--model", str(tmp_path), "--name", NAME))
    assert line == (
        f"modelwarden serve: error: refusing to load {tmp_path / 'model.skops'}: it needs types skops does not "
        "trust by default: _operator.neg; if you trust them, pass --trust-skops-types _operator.neg "
        "(env MODEL_SKOPS_TRUSTED)"
    )
    # The operator's word (here the environment variable) is what trusts it, and then it serves.
    server = start_model_server(tmp_path, NAME, env={"MODEL_SKOPS_TRUSTED": "_operator.neg"},
                                extra_args=("--prediction-log", "off"))
    assert_serves_like(server, untrusted)


@pytest.mark.parametrize("serialization", [None, "cloudpickle", "pickle"], ids=["default", "cloudpickle", "pickle"])
def test_mlflow_sklearn_model_serves_like_the_estimator(
    serialization, mlflow_models, no_mlflow, estimator, start_model_server
):
    directory = mlflow_models[serialization]
    flavor = yaml.safe_load((directory / "MLmodel").read_text())["flavors"]["sklearn"]
    written = flavor["serialization_format"]
    assert written == (serialization or "skops")  # mlflow 3.17.2 writes skops unless told otherwise
    assert (directory / flavor["pickled_model"]).is_file()
    server = start_model_server(directory, NAME, env=no_mlflow, extra_args=("--prediction-log", "off"))
    assert_serves_like(server, estimator)
    assert f"MLflow sklearn model ({written})" in server.log_tail(200)
    assert metadata(server)["parameters"]["profile"] == "loaded"


def test_a_model_without_profile_serves_without_drift_metrics(tmp_path, serving_examples, estimator, start_model_server):
    shutil.copy(serving_examples["classifier"].model, tmp_path / "model.joblib")
    server = start_model_server(tmp_path, NAME, version="3", track="canary", extra_args=("--prediction-log", "off"))
    warnings = [line for line in server.log_tail(200).splitlines() if line.startswith("modelwarden serve: warning:")]
    assert len(warnings) == 1
    assert "no reference profile" in warnings[0] and "serving without drift metrics" in warnings[0]
    assert "put profile.json beside the model or pass --profile" in warnings[0]

    about = metadata(server)
    assert about["parameters"]["profile"] == "missing"
    assert [tensor["name"] for tensor in about["inputs"]] == [f"x{i}" for i in range(ROWS.shape[1])]
    assert_serves_like(server, estimator)
    assert requests.post(f"{server.url}/v1/models/{NAME}:predict", data=b"{not json", timeout=10).status_code == 400

    found = scrape(server)
    labels = {"model": NAME, "version": "3", "track": "canary"}
    [loaded] = found[metrics.PROFILE_LOADED]
    assert (loaded.labels, loaded.value) == (labels, 0.0)
    assert not [name for name in found if name.startswith((metrics.FEATURE_VALUE, metrics.PREDICTION_VALUE))]
    assert metrics.PREDICTION_OUTLIERS not in found
    assert found[metrics.PREDICTIONS][0].value == 2 * len(ROWS)  # V1 and V2
    malformed = [s for s in found[metrics.CLIENT_ERRORS] if s.labels["reason"] == "malformed_json"]
    assert [s.value for s in malformed] == [1.0]
    assert found[metrics.INFERENCE_LATENCY + metrics.COUNT][0].value == 2
    assert sum(s.value for s in found[metrics.PREDICTED_CLASS]) == 2 * len(ROWS)
