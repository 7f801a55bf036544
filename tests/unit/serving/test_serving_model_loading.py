"""Issue 16, serving side: finding and loading a model where the storage initializer left it
(model.joblib, model.skops, an MLflow sklearn directory), the skops trusted-types check, and a
model served without a reference profile (monitor, schema, startup)."""

from __future__ import annotations

import argparse
import operator
import os
import pickle
import pickletools
import shutil

import joblib
import numpy as np
import pytest
import skops.io
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from modelwarden.commands.serve import config_from_args, configure
from modelwarden.contract import metrics
from modelwarden.serving.model import (
    ModelArtifact,
    ModelLoadError,
    ModelRunner,
    load_estimator,
    load_model,
    locate_model,
    model_location,
    skops_types_to_trust,
)
from modelwarden.serving.monitor import ModelMonitor
from modelwarden.serving.service import ServeConfig, StartupError
from modelwarden.serving.startup import load_service

X = np.random.default_rng(11).normal(size=(300, 3))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)
ROWS = X[:25]


@pytest.fixture(scope="module")
def estimator():
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)


@pytest.fixture(scope="module")
def untrusted_estimator():
    """A FunctionTransformer around operator.neg: ``_operator.neg`` is not on skops' default list."""
    return make_pipeline(FunctionTransformer(operator.neg), LogisticRegression()).fit(X, Y)


def mlmodel(directory, pickled: str = "model.pkl", serialization: str | None = "cloudpickle", **sklearn) -> None:
    """The MLmodel file mlflow.sklearn.save_model writes (3.17.2), trimmed to what the server reads."""
    flavor = {"pickled_model": pickled, "sklearn_version": "1.9.1", "code": None, **sklearn}
    if serialization is not None:
        flavor["serialization_format"] = serialization
    import yaml

    doc = {"flavors": {"python_function": {"loader_module": "mlflow.sklearn", "model_path": pickled}, "sklearn": flavor}}
    (directory / "MLmodel").write_text(yaml.safe_dump(doc))


def error_of(call, *args) -> str:
    with pytest.raises(ModelLoadError) as raised:
        call(*args)
    message = str(raised.value)
    assert "\n" not in message
    return message


# -- finding the model -----------------------------------------------------------------------------


def test_directory_layouts(tmp_path, estimator):
    joblib_dir, skops_dir = tmp_path / "j", tmp_path / "s"
    joblib_dir.mkdir(), skops_dir.mkdir()
    joblib.dump(estimator, joblib_dir / "model.joblib")
    skops.io.dump(estimator, skops_dir / "model.skops")
    assert locate_model(joblib_dir) == ModelArtifact(joblib_dir / "model.joblib", "joblib", joblib_dir, "model.joblib")
    assert locate_model(skops_dir) == ModelArtifact(skops_dir / "model.skops", "skops", skops_dir, "model.skops")


def test_file_paths_and_uris(tmp_path, estimator):
    """A file still works: .skops by skops, anything else by joblib; the profile is looked for beside it."""
    skops.io.dump(estimator, tmp_path / "fraud.skops")
    joblib.dump(estimator, tmp_path / "fraud.joblib")
    assert locate_model(tmp_path / "fraud.skops").format == "skops"
    assert locate_model(tmp_path / "fraud.joblib") == ModelArtifact(tmp_path / "fraud.joblib", "joblib", tmp_path, "fraud.joblib")
    assert model_location((tmp_path / "fraud.skops").as_uri()) == tmp_path / "fraud.skops"
    assert "s3://" in error_of(model_location, "s3://bucket/m")


@pytest.mark.parametrize(
    "serialization, pickled, expected",
    [("cloudpickle", "model.pkl", "pickle"), ("pickle", "model.pkl", "pickle"), ("skops", "model.skops", "skops"),
     (None, "model.pkl", "pickle")],  # no serialization_format: MLflow's own default, pickle
)
def test_mlflow_layout_is_read_from_mlmodel(tmp_path, serialization, pickled, expected):
    (tmp_path / pickled).write_bytes(b"")
    (tmp_path / "conda.yaml").write_text("")
    mlmodel(tmp_path, pickled, serialization)
    artifact = locate_model(tmp_path)
    assert (artifact.path, artifact.format, artifact.directory) == (tmp_path / pickled, expected, tmp_path)
    assert artifact.source == f"MLflow sklearn model ({serialization or 'pickle'})"
    assert locate_model(tmp_path / "MLmodel") == artifact  # the MLmodel file itself names the same model


def test_empty_directory(tmp_path):
    message = error_of(locate_model, tmp_path)
    assert f"the model directory {tmp_path} is empty" in message
    assert "model.joblib, model.skops or an MLflow model (MLmodel file)" in message


def test_unknown_layout_lists_what_was_looked_for_and_found(tmp_path):
    for i in range(10):
        (tmp_path / f"weights-{i}.bin").write_bytes(b"")
    message = error_of(locate_model, tmp_path)
    assert message.startswith(f"no model in {tmp_path}: looked for model.joblib, model.skops or an MLflow model")
    assert "found weights-0.bin, weights-1.bin" in message and "and 2 more" in message


def test_missing_path_and_ambiguous_directory(tmp_path):
    assert error_of(locate_model, tmp_path / "nope") == f"model not found: {tmp_path / 'nope'}"
    (tmp_path / "model.joblib").write_bytes(b"")
    (tmp_path / "model.skops").write_bytes(b"")
    assert "holds both model.joblib and model.skops" in error_of(locate_model, tmp_path)


def test_unreadable_directory(tmp_path, monkeypatch):
    """Root reads any directory, so the refusal is simulated where the listing happens."""

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", refuse)
    assert error_of(locate_model, tmp_path) == f"cannot read the model directory {tmp_path}: Permission denied"


@pytest.mark.parametrize(
    "pickled, serialization, fragment",
    [
        ("model.pkl", "onnx", "serialization_format 'onnx'; this server loads pickle, cloudpickle, skops"),
        ("../outside.pkl", "pickle", "names '../outside.pkl', outside the model directory"),
        ("gone.pkl", "pickle", "names 'gone.pkl', which is not in"),
        ("", "pickle", "flavors.sklearn.pickled_model is missing"),
    ],
)
def test_bad_mlmodel_sklearn_flavor(tmp_path, pickled, serialization, fragment):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.pkl").write_bytes(b"")
    (tmp_path / "outside.pkl").write_bytes(b"")
    mlmodel(model_dir, pickled, serialization)
    assert fragment in error_of(locate_model, model_dir)


def test_mlflow_model_of_another_flavor_and_invalid_yaml(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function: {}\n  xgboost: {}\n")
    message = error_of(locate_model, tmp_path)
    assert "without the sklearn flavor (flavors: python_function, xgboost)" in message
    (tmp_path / "MLmodel").write_text("flavors: [unclosed\n  - x")
    assert error_of(locate_model, tmp_path).startswith(f"invalid MLflow {tmp_path / 'MLmodel'}: ")


# -- loading ---------------------------------------------------------------------------------------


def test_skops_and_joblib_load_the_same_model(tmp_path, estimator):
    skops.io.dump(estimator, tmp_path / "model.skops")
    runner, artifact = load_model(str(tmp_path))
    assert artifact.format == "skops"
    np.testing.assert_array_equal(runner.estimator.predict_proba(ROWS), estimator.predict_proba(ROWS))


def test_untrusted_skops_types_are_refused_in_one_line(tmp_path, untrusted_estimator):
    path = tmp_path / "model.skops"
    skops.io.dump(untrusted_estimator, path)
    artifact = locate_model(tmp_path)
    message = error_of(load_estimator, artifact)
    assert message == (
        f"refusing to load {path}: it needs types skops does not trust by default: _operator.neg; "
        "if you trust them, pass --trust-skops-types _operator.neg (env MODEL_SKOPS_TRUSTED)"
    )
    assert "_operator.neg" in error_of(load_estimator, artifact, ["sklearn.something.Else"])
    loaded = load_estimator(artifact, ["_operator.neg"])
    np.testing.assert_array_equal(loaded.predict(ROWS), untrusted_estimator.predict(ROWS))


def test_mlflow_declared_trusted_types_do_not_count(tmp_path, untrusted_estimator):
    """MLmodel's skops_trusted_types is written by whoever wrote the model: it cannot vouch for itself."""
    skops.io.dump(untrusted_estimator, tmp_path / "model.skops")
    mlmodel(tmp_path, "model.skops", "skops", skops_trusted_types=["_operator.neg"])
    artifact = locate_model(tmp_path)
    assert artifact.declared_skops_types == ("_operator.neg",)
    message = error_of(skops_types_to_trust, artifact, [])
    assert "_operator.neg" in message and "a model cannot vouch for itself" in message
    assert skops_types_to_trust(artifact, ["_operator.neg"]) == ["_operator.neg"]


def test_not_a_skops_file(tmp_path):
    (tmp_path / "model.skops").write_bytes(b"not a zip")
    message = error_of(load_model, str(tmp_path))
    assert message.startswith(f"cannot load model {tmp_path / 'model.skops'}: not a skops file (BadZipFile")


def test_cloudpickle_output_of_an_estimator_is_a_plain_pickle(tmp_path, estimator):
    """Why the server needs no cloudpickle import: it pickles an importable estimator by reference,
    so pickle.load reads it; only functions defined on the fly (lambdas) make the file name cloudpickle."""
    import cloudpickle

    plain = cloudpickle.dumps(estimator)
    assert not any("cloudpickle" in str(arg) for _, arg, _ in pickletools.genops(plain))
    (tmp_path / "model.pkl").write_bytes(plain)
    mlmodel(tmp_path, "model.pkl", "cloudpickle")
    loaded = load_estimator(locate_model(tmp_path))
    np.testing.assert_array_equal(loaded.predict_proba(ROWS), estimator.predict_proba(ROWS))

    with_lambda = make_pipeline(FunctionTransformer(lambda a: a * 2), LogisticRegression()).fit(X, Y)
    dumped = cloudpickle.dumps(with_lambda)
    assert any("cloudpickle" in str(arg) for _, arg, _ in pickletools.genops(dumped))
    (tmp_path / "model.pkl").write_bytes(dumped)
    np.testing.assert_array_equal(load_estimator(locate_model(tmp_path)).predict(ROWS), with_lambda.predict(ROWS))


def test_corrupt_pickle_is_one_line(tmp_path):
    (tmp_path / "model.pkl").write_bytes(pickle.dumps([1, 2])[:-3])
    mlmodel(tmp_path, "model.pkl", "pickle")
    assert error_of(load_model, str(tmp_path)).startswith(f"cannot load model {tmp_path / 'model.pkl'}: UnpicklingError")


def test_feature_names_without_a_profile(estimator):
    import pandas as pd

    assert ModelRunner(estimator).feature_names() == ["x0", "x1", "x2"]
    named = LogisticRegression().fit(pd.DataFrame(X, columns=["amount", "age", "score"]), Y)
    assert ModelRunner(named).feature_names() == ["amount", "age", "score"]


# -- no profile --------------------------------------------------------------------------------------


def scraped(registry: CollectorRegistry) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def test_monitor_without_profile_counts_outputs_and_exports_profile_loaded_0():
    registry = CollectorRegistry()
    monitor = ModelMonitor("fraud", "7", "canary", None, registry=registry, task="classification", classes=[0, 1])
    monitor.record_prediction([[1.0, 2.0, 3.0]] * 4, np.array([0, 1, 1, 1]), latency=0.002, scores=[0.1, 0.9, 0.8, 0.7])
    monitor.record_feedback([1, 1], [1, 0])
    found = scraped(registry)
    labels = {"model": "fraud", "version": "7", "track": "canary"}
    [loaded] = found[metrics.PROFILE_LOADED]
    assert (loaded.labels, loaded.value) == (labels, 0.0)
    assert found[metrics.PREDICTIONS][0].value == 4
    assert {s.labels["class"]: s.value for s in found[metrics.PREDICTED_CLASS]} == {"0": 1, "1": 3}
    assert sum(s.value for s in found[metrics.FEEDBACK]) == 2 and len(found[metrics.FEEDBACK]) == 4
    assert found[metrics.INFERENCE_LATENCY + "_count"][0].value == 1
    assert not [name for name in found if name.startswith((metrics.FEATURE_VALUE, metrics.PREDICTION_VALUE))]
    assert metrics.PREDICTION_OUTLIERS not in found  # absent, not a 0 that would read as "no outliers"
    with pytest.raises(ValueError, match="needs task"):
        ModelMonitor("fraud", "7", "canary", None, registry=CollectorRegistry())


def test_monitor_with_profile_exports_profile_loaded_1(classifier_profile):
    registry = CollectorRegistry()
    ModelMonitor("fraud", "7", "stable", classifier_profile, registry=registry)
    found = scraped(registry)
    assert [s.value for s in found[metrics.PROFILE_LOADED]] == [1.0]
    assert metrics.PREDICTION_OUTLIERS in found and metrics.FEATURE_VALUE + "_bucket" in found


def test_service_without_profile_beside_the_model(tmp_path, examples):
    shutil.copy(examples["classifier"].model, tmp_path / "model.joblib")
    service = load_service(ServeConfig(model_uri=str(tmp_path), name="fraud", prediction_log="off"))
    try:
        assert service.profile is None and service.source == "model.joblib"
        assert service.schema.names == tuple(f"x{i}" for i in range(6)) and service.schema.categorical == frozenset()
        assert service.classes == ["0", "1"]
        [warning] = service.warnings
        assert "no reference profile" in warning and "without drift metrics" in warning
        assert "put profile.json beside the model or pass --profile" in warning and "\n" not in warning
    finally:
        service.close()


def test_an_explicit_profile_must_exist_and_an_implicit_one_must_be_valid(tmp_path, examples):
    shutil.copy(examples["classifier"].model, tmp_path / "model.joblib")
    with pytest.raises(StartupError, match="cannot read the profile .*gone.json"):
        load_service(ServeConfig(model_uri=str(tmp_path), name="m", profile=tmp_path / "gone.json", prediction_log="off"))
    (tmp_path / "profile.json").write_text("{}")
    with pytest.raises(StartupError, match="invalid profile"):
        load_service(ServeConfig(model_uri=str(tmp_path), name="m", prediction_log="off"))


class Opaque:
    """An estimator that does not say how many inputs it takes (no n_features_in_)."""

    def predict(self, rows):
        return np.zeros(len(rows))


def test_a_model_without_input_count_needs_a_profile(tmp_path):
    joblib.dump(Opaque(), tmp_path / "model.joblib")
    with pytest.raises(StartupError, match="does not say how many features it takes .*pass --profile"):
        load_service(ServeConfig(model_uri=str(tmp_path), name="m", prediction_log="off"))


def test_trusted_skops_types_from_flag_and_environment(monkeypatch):
    def parsed(*argv: str) -> tuple[str, ...]:
        parser = argparse.ArgumentParser()
        configure(parser)
        return config_from_args(parser.parse_args(["--model", "m", "--name", "n", *argv])).trusted_skops_types

    monkeypatch.delenv("MODEL_SKOPS_TRUSTED", raising=False)
    assert parsed() == ()
    assert parsed("--trust-skops-types", "_operator.neg, numpy.float32,") == ("_operator.neg", "numpy.float32")
    monkeypatch.setenv("MODEL_SKOPS_TRUSTED", "a.B,c.D")
    assert parsed() == ("a.B", "c.D")
