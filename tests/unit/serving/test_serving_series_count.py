"""Cardinality guard (issue 17): series_count, `serve --max-series` and the count `modelwarden profile` prints."""

from __future__ import annotations

import argparse
import json

import joblib
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import Ridge

from modelwarden.commands import profile as profile_command
from modelwarden.commands.serve import config_from_args, configure
from modelwarden.contract.metrics import LATENCY_BUCKETS
from modelwarden.contract.profile import Distribution, PredictionProfile, Profile
from modelwarden.contract.metrics import REJECTED_INPUTS
from modelwarden.contract.reasons import (
    CLIENT_ERROR_REASONS,
    KNOWN_ERROR_REASONS,
    SERVER_ERROR_REASONS,
    VALUE_REJECTION_REASONS,
)
from modelwarden.serving.monitor import ModelMonitor
from modelwarden.serving.profile import DEFAULT_MAX_SERIES, numeric_distribution, prediction_profile, series_count
from modelwarden.serving.service import ServeConfig, StartupError
from modelwarden.serving.startup import load_service

LATENCY = len(LATENCY_BUCKETS) + 3  # the monitor's own histogram, whatever the profile
# prediction errors (4xx and 5xx), client errors, server errors, rejected values by (input, reason)
ERRORS = (len(KNOWN_ERROR_REASONS) + len(CLIENT_ERROR_REASONS) + len(SERVER_ERROR_REASONS)
          + len(REJECTED_INPUTS) * len(VALUE_REJECTION_REASONS))
FEEDBACK_CACHE = 2  # modelwarden serve's evictions counter and bytes gauge
OTHER = 3  # predictions and outliers counters, the profile_loaded gauge


def hand_built(prediction: PredictionProfile) -> Profile:
    """Two features: a numeric one with 3 edges (6 series) and a categorical one with 2 levels (5)."""
    numeric = Distribution(
        name="amount", kind="numeric", edges=[1.0, 2.0, 3.0], counts=[1, 1, 1, 1], count=4, mean=2.0, std=1.0
    )
    categorical = Distribution(
        name="country", kind="categorical", edges=[0.0, 1.0], counts=[2, 2, 0], count=4, levels=["de", "fr"]
    )
    return Profile(target="y", rows=4, bins=4, features=[numeric, categorical], prediction=prediction)


def scored_classifier() -> Profile:
    """Three classes and a score histogram with 4 edges."""
    return hand_built(
        prediction_profile(
            "classification",
            "model",
            ["a", "b", "c", "a"],
            classes=["a", "b", "c"],
            scores=np.array([0.1, 0.4, 0.6, 0.9]),
            bins=5,
        )
    )


def unscored_classifier() -> Profile:
    """A classifier without predict_proba: no prediction_value histogram."""
    return hand_built(prediction_profile("classification", "model", [0, 1, 1, 0], classes=[0, 1]))


def regressor() -> Profile:
    return hand_built(prediction_profile("regression", "model", [0.5, 1.5, 2.5, 3.5], bins=4))


def test_scored_classifier_breakdown():
    profile = scored_classifier()
    assert len(profile.prediction.score.edges) == 4
    series = series_count(profile)
    assert series.breakdown() == {
        "features": 6 + 5,
        "prediction value": 4 + 3,
        "classes": 3,
        "feedback": 3 * 3,
        "latency": LATENCY,
        "errors": ERRORS,
        "other": OTHER,
        "feedback cache": FEEDBACK_CACHE,
    }
    assert series.total == 11 + 7 + 3 + 9 + LATENCY + ERRORS + OTHER + FEEDBACK_CACHE
    assert series_count(profile, server=False).total == series.total - FEEDBACK_CACHE


def test_unscored_classifier_has_no_prediction_value():
    series = series_count(unscored_classifier())
    assert (series.prediction_value, series.classes, series.feedback) == (0, 2, 4)


def test_regressor_has_four_feedback_series_and_no_classes():
    profile = regressor()
    series = series_count(profile)
    assert (series.features, series.classes, series.feedback) == (11, 0, 4)
    assert series.prediction_value == len(profile.prediction.edges) + 3


def test_own_latency_buckets_are_counted():
    assert series_count(regressor(), latency_buckets=[0.1, 1.0]).latency == 5


def test_numeric_features_grow_with_bins():
    """Continuous data: bins-1 quantile edges and 2 tail edges per feature, so bins + 4 series each."""
    x = np.random.default_rng(4).normal(size=(2000, 7))
    for bins in (5, 20, 50):
        features = [numeric_distribution(f"f{i}", x[:, i], bins) for i in range(x.shape[1])]
        prediction = prediction_profile("regression", "model", x[:, 0], bins)
        profile = Profile(target="y", rows=2000, bins=bins, features=features, prediction=prediction)
        assert series_count(profile).features == 7 * (bins + 4)


def test_string_form_names_total_and_families():
    series = series_count(scored_classifier())
    assert str(series) == f"{series.total} ({series.details()})"
    assert series.details().startswith("features 11, prediction value 7, classes 3, feedback 9, ")


def exported(registry: CollectorRegistry) -> int:
    return sum(len(family.samples) for family in text_string_to_metric_families(generate_latest(registry).decode()))


@pytest.mark.parametrize(
    "build, outputs", [(scored_classifier, ["a", "c"]), (unscored_classifier, [0, 1]), (regressor, [1.0, 2.0])]
)
def test_count_equals_what_a_monitor_exports(build, outputs):
    """The first scrape and one after every family has samples; the integration test does the same with a server."""
    profile = build()
    registry = CollectorRegistry()
    monitor = ModelMonitor("m", "1", "stable", profile, registry=registry)
    before = exported(registry)
    monitor.record_prediction([[1.5, "de"], [9.0, "xx"]], outputs, latency=0.01, scores=[0.2, 0.7])
    monitor.record_feedback(outputs, outputs[::-1])
    monitor.record_error("invalid_payload", status=400)
    monitor.record_error("model_error", status=500)
    monitor.record_rejected_value("feedback", "out_of_range")
    assert before == exported(registry) == series_count(profile, server=False).total


# -- modelwarden serve --max-series ------------------------------------------------------------


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(["--model", "m", "--name", "n", *argv])


def test_max_series_defaults_and_environment(monkeypatch):
    monkeypatch.delenv("MODELWARDEN_MAX_SERIES", raising=False)
    assert config_from_args(serve_args()).max_series == DEFAULT_MAX_SERIES == 20_000
    assert config_from_args(serve_args("--max-series", "0")).max_series == 0
    monkeypatch.setenv("MODELWARDEN_MAX_SERIES", "123")
    assert config_from_args(serve_args()).max_series == 123
    assert config_from_args(serve_args("--max-series", "7")).max_series == 7


def test_negative_max_series_is_a_startup_error():
    with pytest.raises(StartupError, match="--max-series must be 0"):
        config_from_args(serve_args("--max-series", "-1"))


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A regressor on 1000 features with a 20-bin profile: above the default limit."""
    directory = tmp_path_factory.mktemp("wide")
    x = np.random.default_rng(5).normal(size=(300, 1000))
    y = x[:, 0] + 0.1 * x[:, 1]
    model = Ridge().fit(x, y)
    joblib.dump(model, directory / "model.joblib")
    features = [numeric_distribution(f"f{i}", x[:, i], 20) for i in range(x.shape[1])]
    prediction = prediction_profile("regression", "model", model.predict(x), 20)
    profile = Profile(target="y", rows=300, bins=20, features=features, prediction=prediction)
    (directory / "profile.json").write_text(profile.to_json())
    assert series_count(profile).total > DEFAULT_MAX_SERIES
    return directory, profile


def test_default_limit_refuses_a_wide_profile(wide_model):
    directory, profile = wide_model
    series = series_count(profile)
    with pytest.raises(StartupError) as refused:
        load_service(ServeConfig(model_uri=str(directory), name="wide", prediction_log="off"))
    message = str(refused.value)
    assert "\n" not in message
    assert f"would export {series.total} series per server process ({series.details()})" in message
    assert f"more than --max-series {DEFAULT_MAX_SERIES}" in message
    for knob in ("fewer --bins", "`modelwarden profile`", "fewer features", "MODELWARDEN_MAX_SERIES", "0 disables"):
        assert knob in message


@pytest.mark.parametrize("changes", [{"max_series": 0}, {"metrics": False}, {"max_series": "total"}])
def test_no_limit_no_metrics_or_a_limit_at_the_count_starts(wide_model, changes):
    directory, profile = wide_model
    if changes.get("max_series") == "total":
        changes = {"max_series": series_count(profile).total}
    service = load_service(ServeConfig(model_uri=str(directory), name="wide", prediction_log="off", **changes))
    service.close()


# -- modelwarden profile -----------------------------------------------------------------------


def profile_run(examples, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    profile_command.configure(parser)
    data = examples["classifier"].data
    return profile_command.run(parser.parse_args(["--data", str(data), "--target", "label", *argv]))


def test_profile_prints_the_series_count_on_stderr(examples, tmp_path, capsys):
    output = tmp_path / "profile.json"
    assert profile_run(examples, "--model", str(examples["classifier"].model), "--bins", "8", "-o", str(output)) == 0
    out, err = capsys.readouterr()
    series = series_count(Profile.from_json(output.read_text()))
    assert out == "" and err == f"series per server process: {series}\n"
    assert series.features == 6 * (8 + 4)  # 7 quantile and 2 tail edges: 10 buckets, _count and _sum


def test_profile_on_stdout_stays_pure_json(examples, capsys):
    assert profile_run(examples) == 0
    out, err = capsys.readouterr()
    profile = Profile.from_json(out)
    json.loads(out)
    assert err.strip() == f"series per server process: {series_count(profile)}"


def test_profile_warns_above_the_default_limit(examples, capsys, monkeypatch):
    monkeypatch.setattr(profile_command, "DEFAULT_MAX_SERIES", 50)
    assert profile_run(examples, "-o", "/dev/null") == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("series per server process: ")
    assert "more than the default --max-series 50 of `modelwarden serve`" in lines[0]
