"""Failures that need a broken model or a server bug: an in-process aiohttp server on loopback."""

from __future__ import annotations

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from modelwarden.serving.routes import build_app
from modelwarden.serving.service import ServeConfig
from modelwarden.serving.startup import load_service

ROW = [120.0, 900.0, 6.0, 15.0, 2500.0, 0.5]


@pytest.fixture
async def client(serving_examples):
    service = load_service(
        ServeConfig(model_uri=str(serving_examples["classifier"].directory), name="m", prediction_log="off")
    )
    async with TestClient(TestServer(build_app(service))) as client:
        client.service = service
        yield client


async def errors(client) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    family = next(f for f in text_string_to_metric_families(text) if f.name == "modelwarden_prediction_errors")
    return {s.labels["reason"]: s.value for s in family.samples}


async def test_model_failure_is_a_counted_500_and_the_server_keeps_serving(client, monkeypatch):
    def broken(rows):
        raise RuntimeError("weights are corrupt")

    monkeypatch.setattr(client.service.runner, "predict", broken)
    response = await client.post("/v1/models/m:predict", json={"instances": [ROW]})
    assert response.status == 500
    assert "weights are corrupt" in (await response.json())["error"]
    assert (await errors(client))["model_error"] == 1
    monkeypatch.undo()
    assert (await client.post("/v1/models/m:predict", json={"instances": [ROW]})).status == 200


async def test_a_server_bug_is_a_json_500_with_the_request_id(client, monkeypatch):
    def bug(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(client.service, "record", bug)
    response = await client.post("/v1/models/m:predict", json={"instances": [ROW]}, headers={"X-Request-Id": "bug-1"})
    assert response.status == 500 and "bug-1" in (await response.json())["error"]
    assert response.headers["X-Request-Id"] == "bug-1"
    assert (await errors(client))["internal_error"] == 1


@pytest.fixture
async def text_client(tmp_path):
    """A pipeline with a one-hot encoded text column, profiled with --categorical."""
    import joblib
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from modelwarden.serving.profile import build_profile_from_csv

    rows = [[float(i % 7), ["red", "blue", "green"][i % 3]] for i in range(60)]
    labels = [int(colour == "red") for _, colour in rows]
    encoder = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), [1])], remainder="passthrough")
    model = make_pipeline(encoder, LogisticRegression()).fit(np.array(rows, dtype=object), labels)
    joblib.dump(model, tmp_path / "model.joblib")
    (tmp_path / "train.csv").write_text(
        "size,colour,label\n" + "".join(f"{s},{c},{y}\n" for (s, c), y in zip(rows, labels))
    )
    profile = build_profile_from_csv(
        tmp_path / "train.csv", "label", bins=4, categorical=frozenset({"colour"}), model=str(tmp_path / "model.joblib")
    )
    (tmp_path / "profile.json").write_text(profile.to_json())
    service = load_service(ServeConfig(model_uri=str(tmp_path), name="colours", prediction_log="off"))
    async with TestClient(TestServer(build_app(service))) as client:
        yield client


async def test_text_categories_end_to_end(text_client):
    response = await text_client.post(
        "/v1/models/colours:predict", json={"instances": [[1.0, "red"], {"size": 2, "colour": "purple"}]}
    )
    assert response.status == 200 and (await response.json())["predictions"][0] == 1
    named = [
        {"name": "size", "datatype": "FP64", "shape": [1], "data": [3.0]},
        {"name": "colour", "datatype": "BYTES", "shape": [1], "data": ["blue"]},
    ]
    response = await text_client.post("/v2/models/colours/infer", json={"inputs": named})
    assert (await response.json())["outputs"][0]["data"] == [0]
    metadata = await (await text_client.get("/v2/models/colours")).json()
    assert [i["datatype"] for i in metadata["inputs"]] == ["FP64", "BYTES"]
    text = await (await text_client.get("/metrics")).text()
    colour = {
        s.labels["le"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "modelwarden_feature_value"
        for s in f.samples
        if s.name.endswith("_bucket") and s.labels["feature"] == "colour"
    }
    assert colour == {"0.0": 1.0, "1.0": 1.0, "2.0": 2.0, "+Inf": 3.0}  # blue, green, red, then unseen purple
