"""Cardinality guard (issue 17) against real `modelwarden serve` processes.

series_count(profile) must be exactly what /metrics exports, family by family, before any
request and after every family has samples; a --max-series below it must stop the server.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from modelwarden.sandbox import datagen
from modelwarden.sandbox.examples import ExampleModel
from modelwarden.contract.profile import Profile
from modelwarden.serving.profile import build_profile_from_csv, series_count, SeriesCount
from tests.integration.test_serving_startup import one_line_error, serve

# Exported sample names (histograms without their _bucket/_sum/_count suffix) -> SeriesCount.breakdown() key.
GROUPS = {
    "modelwarden_feature_value": "features",
    "modelwarden_prediction_value": "prediction value",
    "modelwarden_predicted_class_total": "classes",
    "modelwarden_feedback_total": "feedback",
    "modelwarden_feedback_squared_error_sum": "feedback",
    "modelwarden_feedback_absolute_error_sum": "feedback",
    "modelwarden_feedback_observations_total": "feedback",
    "modelwarden_feedback_fourth_power_error_sum": "feedback",
    "modelwarden_inference_latency_seconds": "latency",
    "modelwarden_prediction_errors_total": "errors",
    "modelwarden_client_errors_total": "errors",
    "modelwarden_server_errors_total": "errors",
    "modelwarden_rejected_values_total": "errors",
    "modelwarden_feedback_cache_evictions_total": "feedback cache",
    "modelwarden_feedback_cache_bytes": "feedback cache",
    "modelwarden_predictions_total": "other",
    "modelwarden_prediction_outliers_total": "other",
    "modelwarden_profile_loaded": "other",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def group(sample_name: str) -> str:
    if sample_name in GROUPS:
        return GROUPS[sample_name]
    for suffix in HISTOGRAM_SUFFIXES:
        if sample_name.endswith(suffix) and sample_name.removesuffix(suffix) in GROUPS:
            return GROUPS[sample_name.removesuffix(suffix)]
    raise AssertionError(f"{sample_name} is exported but series_count does not know it")


def scrape(server) -> tuple[Counter[str], Counter[str]]:
    """modelwarden_* series by breakdown group, and which groups have a non-zero sample."""
    response = requests.get(f"{server.url}/metrics", timeout=10)
    response.raise_for_status()
    series: Counter[str] = Counter()
    nonzero: Counter[str] = Counter()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.startswith("modelwarden_"):
                series[group(sample.name)] += 1
                nonzero[group(sample.name)] += sample.value != 0
    return series, nonzero


@pytest.fixture(scope="module")
def multiclass_categorical(tmp_path_factory) -> ExampleModel:
    """Three classes, a categorical feature among the numeric ones, and 5 bins instead of 20."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    example = ExampleModel(tmp_path_factory.mktemp("multiclass"))
    rng = np.random.default_rng(17)
    x = np.column_stack([datagen.features(3000, seed=17), rng.integers(0, 4, 3000)])
    score = x[:, 0] / x[:, 0].std() + x[:, -1] + rng.normal(0, 0.5, 3000)
    y = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), example.model)
    with example.data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*datagen.FEATURE_NAMES, "segment", "label"])
        for row, label in zip(x.tolist(), y.tolist()):
            writer.writerow([*(repr(v) for v in row[:-1]), int(row[-1]), label])
    profile = build_profile_from_csv(
        example.data, "label", bins=5, categorical=frozenset({"segment"}), model=str(example.model)
    )
    example.profile.write_text(profile.to_json())
    return example


def example_for(kind: str, serving_examples, multiclass_categorical) -> ExampleModel:
    return multiclass_categorical if kind == "multiclass" else serving_examples[kind]


def post(server, path: str, body) -> requests.Response:
    return requests.post(f"{server.url}{path}", data=json.dumps(body), timeout=10)


@pytest.mark.parametrize("kind", ["classifier", "regressor", "multiclass"])
def test_series_count_is_what_the_server_exports(kind, serving_examples, multiclass_categorical, start_model_server):
    example = example_for(kind, serving_examples, multiclass_categorical)
    profile = Profile.from_json(example.profile.read_text())
    expected = series_count(profile)
    if kind == "multiclass":
        assert len(profile.classes) == 3 and profile.features[-1].kind == "categorical" and profile.bins == 5
    # The limit is exactly the count: allowed (only more is refused).
    server = start_model_server(example.directory, "m", extra_args=("--max-series", str(expected.total)))

    first, _ = scrape(server)
    assert dict(first) == {k: v for k, v in expected.breakdown().items() if v}

    with example.data.open(newline="") as handle:
        rows = [[float(cell) for cell in row[:-1]] for row in list(csv.reader(handle))[1:41]]
    for start in range(0, len(rows), 10):
        answer = post(server, "/v1/models/m:predict", {"instances": rows[start : start + 10]})
        assert answer.status_code == 200, answer.text
    predicted = answer.json()["predictions"]
    if profile.classes:
        feedback = [{"predicted": p, "actual": a} for p, a in zip(predicted, [*predicted[1:], predicted[0]])]
    else:
        feedback = [{"predicted": p, "actual": p + 1.5} for p in predicted]
    assert post(server, "/v1/models/m/feedback", feedback).json() == {"accepted": len(predicted)}
    assert requests.post(f"{server.url}/v1/models/m:predict", data=b"{not json", timeout=10).status_code == 400

    after, nonzero = scrape(server)
    assert dict(after) == dict(first)
    assert set(nonzero) == set(after), f"families without samples: {set(after) - set(nonzero)}"
    assert sum(after.values()) == expected.total


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_server_refuses_a_profile_above_max_series(how, serving_examples):
    example = serving_examples["classifier"]
    series: SeriesCount = series_count(Profile.from_json(example.profile.read_text()))
    limit = str(series.total - 1)
    if how == "flag":
        result = serve("--model", str(example.directory), "--name", "m", "--max-series", limit)
    else:
        result = serve("--model", str(example.directory), "--name", "m", env={"MODELWARDEN_MAX_SERIES": limit})
    line = one_line_error(result)
    assert f"would export {series.total} series per server process ({series.details()})" in line
    assert f"more than --max-series {limit}" in line
    assert str(Path(example.profile)) in line
    knobs = ("fewer --bins", "`modelwarden profile`", "fewer features", "raise --max-series", "MODELWARDEN_MAX_SERIES")
    assert all(knob in line for knob in knobs), line
