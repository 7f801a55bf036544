"""Poisoned values, client-error floods, strict V2 tensors and the byte-bounded feedback cache,
against real `modelwarden serve` processes (issue 14, items 5 and 7)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from modelwarden.sandbox import datagen
from modelwarden.serving.service import FeedbackCache

NAME = "price"
ROWS_PER_REQUEST = 500
CACHE_BYTES = 3 * FeedbackCache.entry_bytes("0" * 32, np.zeros(ROWS_PER_REQUEST))  # three requests' predictions


@pytest.fixture(scope="module")
def regressor(serving_examples, tmp_path_factory):
    from modelwarden.sandbox.modelserver import ModelServerProcess

    process = ModelServerProcess(
        serving_examples["regressor"].directory, NAME, version="3", track="canary",
        log_file=tmp_path_factory.mktemp("poisoning") / "serve.log",
        extra_args=("--prediction-log", "off", "--feedback-cache-bytes", str(CACHE_BYTES)),
    )  # fmt: skip
    with process:
        yield process


def post(server, path: str, body, method: str = "POST") -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.request(method, f"{server.url}{path}", data=data, timeout=10)


def samples(server) -> dict[tuple[str, tuple], float]:
    """Every modelwarden_* sample by (name, labels other than model/version/track)."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("modelwarden_"):
                extra = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("model", "version", "track")))
                found[(sample.name, extra)] = sample.value
    return found


def total(found: dict, name: str) -> float:
    return sum(value for (sample, _), value in found.items() if sample == name)


def test_poisoned_feedback_is_refused_counted_and_the_sums_stay_finite(regressor):
    before = samples(regressor)
    assert post(regressor, f"/v1/models/{NAME}/feedback", {"predicted": 10.0, "actual": 13.0}).json() == {"accepted": 1}
    poisoned = [
        {"predicted": 1e200, "actual": -1e200},
        [{"predicted": 1.0, "actual": 2.0}, {"predicted": 1e308, "actual": 0.0}],  # one bad item refuses the batch
        {"predicted": 5.0, "actual": 1e120},
    ]
    for body in poisoned:
        answer = post(regressor, f"/v1/models/{NAME}/feedback", body)
        assert answer.status_code == 422, answer.text
        assert "outside the accepted range" in answer.json()["error"] and "feedback[" in answer.json()["error"]
    nan = post(regressor, f"/v1/models/{NAME}/feedback", '{"predicted": NaN, "actual": 1}')
    assert nan.status_code == 400 and "NaN" in nan.json()["error"]

    after = samples(regressor)
    rejected = ("modelwarden_rejected_values_total", (("input", "feedback"), ("reason", "out_of_range")))
    assert after[rejected] - before.get(rejected, 0) == 3
    non_finite = ("modelwarden_rejected_values_total", (("input", "feedback"), ("reason", "non_finite")))
    assert after[non_finite] - before.get(non_finite, 0) == 1
    squared = total(after, "modelwarden_feedback_squared_error_sum") - total(before, "modelwarden_feedback_squared_error_sum")
    assert squared == 9.0 and math.isfinite(total(after, "modelwarden_feedback_squared_error_sum"))
    observations = "modelwarden_feedback_observations_total"
    assert total(after, observations) - total(before, observations) == 1  # nothing of the refused batches counted


def test_absurd_feature_values_are_refused_and_the_feature_sums_stay_finite(regressor):
    x, _ = datagen.regression(2, seed=41)
    before = samples(regressor)
    rows = x.tolist()
    rows[1][2] = 1e308
    answer = post(regressor, f"/v1/models/{NAME}:predict", {"instances": rows})
    assert answer.status_code == 422 and f"row 1, feature {datagen.FEATURE_NAMES[2]!r}" in answer.json()["error"]
    v2 = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [2, x.shape[1]], "data": rows}]}
    assert post(regressor, f"/v2/models/{NAME}/infer", v2).status_code == 422
    assert post(regressor, f"/v1/models/{NAME}:predict", {"instances": x.tolist()}).status_code == 200

    after = samples(regressor)
    rejected = ("modelwarden_rejected_values_total", (("input", "features"), ("reason", "out_of_range")))
    assert after[rejected] - before.get(rejected, 0) == 2
    feature_sums = [v for (name, _), v in after.items() if name == "modelwarden_feature_value_sum"]
    assert feature_sums and all(math.isfinite(v) for v in feature_sums)
    assert total(after, "modelwarden_predictions_total") - total(before, "modelwarden_predictions_total") == 2


def test_a_client_error_flood_does_not_move_the_server_error_counter(regressor):
    before = samples(regressor)
    flood = [
        ("POST", f"/v1/models/{NAME}:predict", b"{not json"),
        ("GET", f"/v1/models/{NAME}:predict", b""),
        ("POST", "/v1/models/someone-else:predict", b'{"instances": [[1]]}'),
        ("POST", f"/v1/models/{NAME}:predict", b'{"instances": [[1, 2]]}'),
        ("POST", "/no/such/route", b""),
    ]
    rounds = 20
    for _ in range(rounds):
        for method, path, body in flood:
            assert 400 <= post(regressor, path, body, method).status_code < 500
    after = samples(regressor)
    assert total(after, "modelwarden_client_errors_total") - total(before, "modelwarden_client_errors_total") == rounds * len(flood)
    assert total(after, "modelwarden_server_errors_total") == total(before, "modelwarden_server_errors_total") == 0
    by_reason = {labels[0][1]: after[(name, labels)] - before.get((name, labels), 0)
                 for (name, labels) in after if name == "modelwarden_client_errors_total"}
    assert by_reason["method_not_allowed"] == by_reason["route_not_found"] == by_reason["malformed_json"] == rounds
    # The all-errors counter keeps its meaning: the router's refusals (405, 404 route) are not in it.
    all_errors = total(after, "modelwarden_prediction_errors_total") - total(before, "modelwarden_prediction_errors_total")
    assert all_errors == rounds * 3


@pytest.mark.parametrize("tensor, fragment", [
    ({"datatype": "FP16", "data": [1e10]}, "(FP16): value 10000000000.0"),
    ({"datatype": "INT8", "data": [1000]}, "(INT8): value 1000"),
    ({"datatype": "UINT8", "data": [-5]}, "(UINT8): value -5"),
    ({"datatype": "FP64", "shape": [2, None], "ragged": True}, "row 0 has"),
])
def test_strict_v2_tensors_are_400_naming_the_input(regressor, tensor, fragment):
    width = len(datagen.FEATURE_NAMES)
    if tensor.get("ragged"):
        data = [[1.0] * (width - 1), [1.0] * (width + 1)]  # 2 × width values in all, but ragged
        body = {"name": "input", "datatype": "FP64", "shape": [2, width], "data": data}
    else:
        body = {"name": "input", "datatype": tensor["datatype"], "shape": [1, width],
                "data": tensor["data"] + [1] * (width - 1)}
    answer = post(regressor, f"/v2/models/{NAME}/infer", {"inputs": [body]})
    assert answer.status_code == 400, answer.text
    assert "input 'input'" in answer.json()["error"] and fragment in answer.json()["error"]


def test_the_byte_bounded_feedback_cache_evicts_oldest_first(regressor):
    before = samples(regressor)
    ids = []
    for seed in range(5):
        x, _ = datagen.regression(ROWS_PER_REQUEST, seed=100 + seed)
        answer = post(regressor, f"/v1/models/{NAME}:predict", {"instances": x.tolist()})
        assert answer.status_code == 200
        ids.append((answer.headers["X-Request-Id"], answer.json()["predictions"]))
    after = samples(regressor)
    evictions = "modelwarden_feedback_cache_evictions_total"
    assert total(after, evictions) - total(before, evictions) >= 2
    assert total(after, "modelwarden_feedback_cache_bytes") <= CACHE_BYTES

    oldest, _ = ids[0]
    gone = post(regressor, f"/v1/models/{NAME}/feedback", {"request_id": oldest, "actual": [1.0] * ROWS_PER_REQUEST})
    assert gone.status_code == 404 and "evicted" in gone.json()["error"]
    newest, predicted = ids[-1]
    kept = post(regressor, f"/v1/models/{NAME}/feedback", {"request_id": newest, "actual": predicted})
    assert kept.json() == {"accepted": ROWS_PER_REQUEST}
