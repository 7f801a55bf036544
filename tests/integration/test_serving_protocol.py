"""KServe V1, Open Inference Protocol V2, feedback and bad input against real server processes."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import joblib
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from modelwarden.sandbox import datagen
from modelwarden.sandbox.modelserver import ModelServerProcess

NAME = "fraud"
MAX_BODY = 8192
FEEDBACK_CACHE = 5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("protocol")


@pytest.fixture(scope="module")
def server(serving_examples, workdir):
    process = ModelServerProcess(
        serving_examples["classifier"].directory,
        NAME,
        version="7",
        track="canary",
        log_file=workdir / "serve.log",
        extra_args=(
            "--max-body-bytes",
            str(MAX_BODY),
            "--feedback-cache-size",
            str(FEEDBACK_CACHE),
            "--prediction-log",
            str(workdir / "predictions.jsonl"),
        ),  # fmt: skip
    )
    with process:
        yield process


@pytest.fixture(scope="module")
def model(serving_examples):
    return joblib.load(serving_examples["classifier"].model)


def post(server, path: str, body, headers=None) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{server.url}{path}", data=data, headers=headers or {}, timeout=10)


def errors_by_reason(server) -> dict[str, float]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "modelwarden_prediction_errors")
    return {s.labels["reason"]: s.value for s in family.samples}


def test_v1_predict_matches_the_model_and_sets_headers(server, model):
    x, _ = datagen.classification(5, seed=21)
    response = post(server, f"/v1/models/{NAME}:predict", {"instances": x.tolist()})
    assert response.status_code == 200
    assert response.json() == {"predictions": model.predict(x).tolist()}
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])
    assert response.headers["X-Model-Version"] == "7" and response.headers["X-Model-Track"] == "canary"


def test_v1_named_instances_and_incoming_request_id(server, model, workdir):
    x, _ = datagen.classification(2, seed=22)
    instances = [dict(zip(datagen.FEATURE_NAMES, row)) for row in x.tolist()]
    response = post(server, f"/v1/models/{NAME}:predict", {"instances": instances}, {"X-Request-Id": "client-id-1"})
    assert response.json()["predictions"] == model.predict(x).tolist()
    assert response.headers["X-Request-Id"] == "client-id-1"
    log = [json.loads(line) for line in (workdir / "predictions.jsonl").read_text().splitlines()]
    entry = next(e for e in log if e["request_id"] == "client-id-1")
    assert entry["features"] == x.tolist() and entry["output"] == model.predict(x).tolist()
    assert (entry["version"], entry["track"], entry["model"]) == ("7", "canary", NAME) and "time" in entry


def test_v2_health_and_metadata(server):
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{NAME}/ready"):
        response = requests.get(server.url + path, timeout=5)
        assert response.status_code == 200 and response.headers["X-Model-Track"] == "canary"
    meta = requests.get(f"{server.url}/v2/models/{NAME}", timeout=5).json()
    assert meta["name"] == NAME and meta["versions"] == ["7"]
    assert [i["name"] for i in meta["inputs"]] == list(datagen.FEATURE_NAMES)
    assert {o["name"] for o in meta["outputs"]} == {"predict", "score"}


def test_v2_infer_tensor_and_named_inputs(server, model):
    x, _ = datagen.classification(3, seed=23)
    tensor = {
        "id": "v2-req",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 6], "data": x.ravel().tolist()}],
    }
    response = post(server, f"/v2/models/{NAME}/infer", tensor)
    body = response.json()
    assert response.status_code == 200 and body["id"] == "v2-req" == response.headers["X-Request-Id"]
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predict"]["data"] == model.predict(x).tolist() and outputs["predict"]["shape"] == [3]
    assert outputs["score"]["data"] == pytest.approx(model.predict_proba(x)[:, 1].tolist())
    named = {
        "inputs": [
            {"name": n, "datatype": "FP64", "shape": [3, 1], "data": x[:, j].tolist()}
            for j, n in enumerate(datagen.FEATURE_NAMES)
        ]
    }
    assert post(server, f"/v2/models/{NAME}/infer", named).json()["outputs"][0]["data"] == model.predict(x).tolist()


def test_feedback_by_request_id_is_used_once(server):
    x, _ = datagen.classification(2, seed=24)
    response = post(server, f"/v1/models/{NAME}:predict", {"instances": x.tolist()}, {"X-Request-Id": "fb-1"})
    predicted = response.json()["predictions"]
    ok = post(server, f"/v1/models/{NAME}/feedback", {"request_id": "fb-1", "actual": [1 - predicted[0], predicted[1]]})
    assert ok.status_code == 200 and ok.json() == {"accepted": 2}
    again = post(server, f"/v2/models/{NAME}/feedback", {"request_id": "fb-1", "actual": [0, 0]})
    assert again.status_code == 404 and "fb-1" in again.json()["error"]


def test_stateless_batch_feedback_on_v2_path(server):
    response = post(
        server, f"/v2/models/{NAME}/feedback", [{"predicted": 1, "actual": 0}, {"predicted": 0, "actual": 0}]
    )
    assert response.status_code == 200 and response.json() == {"accepted": 2}


def test_feedback_cache_evicts_the_oldest_request(server):
    row = datagen.classification(1, seed=25)[0].tolist()
    for i in range(FEEDBACK_CACHE + 1):
        post(server, f"/v1/models/{NAME}:predict", {"instances": row}, {"X-Request-Id": f"lru-{i}"})
    assert post(server, f"/v1/models/{NAME}/feedback", {"request_id": "lru-0", "actual": 1}).status_code == 404
    assert (
        post(server, f"/v1/models/{NAME}/feedback", {"request_id": f"lru-{FEEDBACK_CACHE}", "actual": 1}).status_code
        == 200
    )


GOOD_ROW = [120.0, 900.0, 6.0, 15.0, 2500.0, 0.5]
BAD_INPUTS = [
    ("malformed JSON", f"/v1/models/{NAME}:predict", b'{"instances": [[1, 2', 400, "malformed_json", "not valid JSON"),
    ("wrong feature count", f"/v1/models/{NAME}:predict", {"instances": [[1, 2, 3]]}, 400, "feature_count", "takes 6 features"),
    ("wrong feature names", f"/v1/models/{NAME}:predict", {"instances": [{"amount": 1}]}, 400, "feature_names", "missing"),
    ("non-numeric value", f"/v1/models/{NAME}:predict", {"instances": [[*GOOD_ROW[:5], "high"]]}, 400, "non_numeric", "merchant_risk"),
    ("NaN", f"/v1/models/{NAME}:predict", b'{"instances": [[1, 2, 3, 4, 5, NaN]]}', 400, "non_finite", "NaN"),
    ("Infinity", f"/v2/models/{NAME}/infer", b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 6], "data": [1, 2, 3, 4, 5, Infinity]}]}', 400, "non_finite", "infinite"),
    ("oversized body", f"/v1/models/{NAME}:predict", {"instances": [GOOD_ROW] * 400}, 413, "body_too_large", "limit"),
    ("unknown model", "/v1/models/nope:predict", {"instances": [GOOD_ROW]}, 404, "unknown_model", "'nope'"),
    ("unknown model on V2", "/v2/models/nope/infer", {"inputs": []}, 404, "unknown_model", "'nope'"),
    ("unknown request id", f"/v1/models/{NAME}/feedback", {"request_id": "never-seen", "actual": 1}, 404, "unknown_request_id", "never-seen"),
    ("unknown class in feedback", f"/v1/models/{NAME}/feedback", {"predicted": 1, "actual": "cat"}, 400, "unknown_class", "'cat'"),
    ("V2 unsupported datatype", f"/v2/models/{NAME}/infer", {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1, 6], "data": ["a"] * 6}]}, 400, "invalid_payload", "BYTES"),
]  # fmt: skip


@pytest.mark.parametrize("case, path, body, status, reason, fragment", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_a_counted_json_4xx(server, case, path, body, status, reason, fragment):
    before = errors_by_reason(server)
    response = post(server, path, body, {"Content-Type": "application/json"})
    assert response.status_code == status
    assert fragment in response.json()["error"]
    assert response.headers["X-Model-Version"] == "7" and response.headers["X-Request-Id"]
    after = errors_by_reason(server)
    assert after[reason] == before[reason] + 1
    assert sum(after.values()) == sum(before.values()) + 1


def test_oversized_chunked_body_without_content_length(server):
    before = errors_by_reason(server)
    chunks = (b" " * 1024 for _ in range(MAX_BODY // 1024 + 4))  # a generator makes requests send it chunked
    response = requests.post(f"{server.url}/v1/models/{NAME}:predict", data=chunks, timeout=10)
    assert response.status_code == 413 and str(MAX_BODY) in response.json()["error"]
    assert errors_by_reason(server)["body_too_large"] == before["body_too_large"] + 1


def test_garbage_flood_does_not_block_good_requests(server, model):
    x, _ = datagen.classification(1, seed=26)
    garbage = [b"{", b"[]", b'{"instances": "x"}', b"\xff\xfe", b'{"instances": [[null]]}'] * 20

    def send(body):
        return post(server, f"/v1/models/{NAME}:predict", body).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, garbage))
    assert set(statuses) == {400}
    assert (
        post(server, f"/v1/models/{NAME}:predict", {"instances": x.tolist()}).json()["predictions"]
        == model.predict(x).tolist()
    )


def test_unknown_route_is_json_404(server):
    response = requests.get(f"{server.url}/nothing/here", timeout=5)
    assert response.status_code == 404 and "error" in response.json()


def test_regressor_feedback_and_no_metrics(serving_examples, start_model_server):
    server = start_model_server(
        serving_examples["regressor"].directory, "price", extra_args=("--prediction-log", "off", "--no-metrics")
    )
    x, _ = datagen.regression(2, seed=27)
    predictions = post(server, "/v1/models/price:predict", {"instances": x.tolist()}).json()["predictions"]
    assert all(isinstance(p, float) for p in predictions) and len(predictions) == 2
    assert post(server, "/v1/models/price/feedback", {"predicted": 3.0, "actual": 1.5}).json() == {"accepted": 1}
    response = requests.get(f"{server.url}/metrics", timeout=5)
    assert response.status_code == 404 and "--no-metrics" in response.json()["error"]


def test_regressor_feedback_sums_reach_metrics(serving_examples, start_model_server):
    server = start_model_server(
        serving_examples["regressor"].directory, "price", extra_args=("--prediction-log", "off")
    )
    post(server, "/v1/models/price/feedback", [{"predicted": 3.0, "actual": 1.5}, {"predicted": 10, "actual": 12}])
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["modelwarden_feedback_squared_error_sum"] == 1.5**2 + 2**2
    assert values["modelwarden_feedback_absolute_error_sum"] == 3.5
    assert values["modelwarden_feedback_observations_total"] == 2
