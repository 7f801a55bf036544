"""MlflowStore (what `modelwarden fetch-model` runs for models:/ and runs:/) against a real
`mlflow server`: a registered version arrives as a whole MLflow model directory with the run's
profile.json beside it; oversize artifacts and sha256 mismatches are refused in one line and leave
nothing in DEST; `modelwarden profile --mlflow-run` logs the profile a later fetch brings along.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelwarden.contract.modeluri import parse
from modelwarden.sandbox import datagen
from modelwarden.sandbox.examples import train_example
from modelwarden.sandbox.processes import free_port
from modelwarden.storage.base import FetchError, FetchLimits
from modelwarden.storage.mlflow import STAGING_PREFIX, MlflowStore
from tests.mlflow_server import log_profile, register_sklearn_model, set_alias

pytestmark = pytest.mark.timeout(600)  # the module's first test pays for starting mlflow server in its setup
MODELWARDEN = str(Path(sys.executable).with_name("modelwarden"))
NAME = "fraud"
TOKEN = "tok-51d0-keep-me-secret"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """A trained classifier (model.joblib), its training CSV and its profile."""
    return train_example("classifier", tmp_path_factory.mktemp("example"), rows=400)


@pytest.fixture(scope="module")
def fraud(mlflow_server, example):
    """Version 1 (its run holds profile.json, alias `champion`) and version 2 (no profile yet) of
    the example classifier, each logged with mlflow.sklearn.log_model."""
    import joblib

    estimator = joblib.load(example.model)
    v1 = register_sklearn_model(mlflow_server.url, NAME, estimator=estimator)
    log_profile(mlflow_server.url, v1.run_id, example.profile.read_text())
    set_alias(mlflow_server.url, NAME, "champion", v1.version)
    v2 = register_sklearn_model(mlflow_server.url, NAME, estimator=estimator)
    return v1, v2


@pytest.fixture
def store(mlflow_server, monkeypatch):
    """The store as fetch-model builds it: no arguments, the tracking server from the environment."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)  # sent, ignored by this server, never echoed
    return MlflowStore()


def stored_model_file(server, version) -> Path:
    """The model file as the server stored it (its artifact root on disk), found independently."""
    model_id = version.model_uri.removeprefix("models:/")
    (found,) = server.artifacts.glob(f"*/models/{model_id}/artifacts/model.skops")
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_in(dest: Path) -> set[str]:
    return {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} if dest.exists() else set()


def fetch_error(store: MlflowStore, uri: str, dest: Path, limits: FetchLimits) -> str:
    with pytest.raises(FetchError) as caught:
        store.fetch(parse(uri), dest, limits)
    message = str(caught.value)
    assert "\n" not in message and TOKEN not in message and message.startswith(f"{uri}: "), message
    return message


def test_a_version_arrives_as_an_mlflow_model_with_its_profile(mlflow_server, fraud, example, store, tmp_path):
    import mlflow.sklearn
    import numpy as np

    v1, _ = fraud
    dest = tmp_path / "model"
    fetched = store.fetch(parse("models:/fraud/1"), dest, FetchLimits())

    assert {"MLmodel", "model.skops", "profile.json", "requirements.txt"} <= set(fetched.files)
    assert set(fetched.files) == files_in(dest)  # no staging directory or stray file left behind
    assert not list(dest.glob(STAGING_PREFIX + "*"))
    assert fetched.total_bytes == sum((dest / f).stat().st_size for f in fetched.files)
    assert fetched.model_file == "model.skops"
    assert fetched.sha256 == sha256(dest / "model.skops") == sha256(stored_model_file(mlflow_server, v1))
    assert json.loads((dest / "profile.json").read_text()) == json.loads(example.profile.read_text())

    # A whole MLflow model directory: mlflow itself loads it and it predicts like the original.
    import joblib

    x = np.loadtxt(example.data, delimiter=",", skiprows=1, max_rows=20)[:, :-1]
    np.testing.assert_array_equal(mlflow.sklearn.load_model(str(dest)).predict(x), joblib.load(example.model).predict(x))


@pytest.mark.parametrize("uri", ["models:/fraud@champion", "runs:/{run}/model"])
def test_alias_and_run_uris_bring_the_profile_too(fraud, example, store, tmp_path, uri):
    v1, _ = fraud
    uri = uri.format(run=v1.run_id)
    fetched = store.fetch(parse(uri), tmp_path / "model", FetchLimits())
    assert {"MLmodel", "model.skops", "profile.json"} <= set(fetched.files)
    assert (tmp_path / "model" / "profile.json").read_text() == example.profile.read_text()


def test_an_oversize_model_is_refused_before_downloading(fraud, store, tmp_path):
    message = fetch_error(store, "models:/fraud/1", tmp_path / "model", FetchLimits(max_bytes=1000))
    assert "more than the limit of 1000 bytes; nothing was downloaded" in message
    assert files_in(tmp_path / "model") == set()


def test_an_oversize_file_is_refused_after_downloading(fraud, example, store, tmp_path):
    """A single-file artifact lists no size, so the limit is enforced on what arrived."""
    v1, _ = fraud
    limit = len(example.profile.read_bytes()) - 1
    message = fetch_error(store, f"runs:/{v1.run_id}/profile.json", tmp_path / "model", FetchLimits(max_bytes=limit))
    assert f"bytes downloaded, more than the limit of {limit} bytes" in message
    assert files_in(tmp_path / "model") == set()


def test_sha256_of_the_model_file(mlflow_server, fraud, store, tmp_path):
    v1, _ = fraud
    wrong = "0" * 64
    message = fetch_error(store, "models:/fraud/1", tmp_path / "bad", FetchLimits(sha256=wrong))
    assert f"sha256 of model.skops is {sha256(stored_model_file(mlflow_server, v1))}, expected {wrong}" in message
    assert files_in(tmp_path / "bad") == set()

    right = sha256(stored_model_file(mlflow_server, v1)).upper()  # as a user may paste it
    assert store.fetch(parse("models:/fraud/1"), tmp_path / "good", FetchLimits(sha256=right)).sha256 == right.lower()


@pytest.mark.parametrize("uri, expected", [
    ("models:/absent/1", "RESOURCE_DOES_NOT_EXIST"),
    ("models:/fraud@nope", "alias nope not found"),
    ("runs:/0123456789abcdef/model", "Run with id=0123456789abcdef not found"),
])
def test_missing_things_are_one_line(fraud, store, tmp_path, uri, expected):
    assert expected in fetch_error(store, uri, tmp_path / "model", FetchLimits())


def test_unreachable_server_and_no_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    assert "Failed to establish a new connection" in fetch_error(MlflowStore(), "models:/fraud/1", tmp_path / "m", FetchLimits())
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert "MLFLOW_TRACKING_URI is not set" in fetch_error(MlflowStore(), "models:/fraud/1", tmp_path / "m", FetchLimits())


def test_profile_command_logs_the_profile_a_later_fetch_brings(mlflow_server, fraud, example, store, tmp_path):
    _, v2 = fraud
    assert "profile.json" not in store.fetch(parse("models:/fraud/2"), tmp_path / "before", FetchLimits()).files

    output = tmp_path / "profile.json"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": mlflow_server.url,
           "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    done = subprocess.run(
        [MODELWARDEN, "profile", "--data", str(example.data), "--target", datagen.TARGET, "--model", str(example.model),
         "--bins", "8", "-o", str(output), "--mlflow-run", v2.run_id],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert f"logged profile.json to MLflow run {v2.run_id}" in done.stderr

    fetched = store.fetch(parse("models:/fraud/2"), tmp_path / "after", FetchLimits())
    assert "profile.json" in fetched.files
    assert (tmp_path / "after" / "profile.json").read_text() == output.read_text()


def test_profile_command_reports_an_unknown_run_in_one_line(mlflow_server, example, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_TRACKING_TOKEN": TOKEN}
    args = [MODELWARDEN, "profile", "--data", str(example.data), "--target", datagen.TARGET, "-o", str(tmp_path / "p.json"),
            "--mlflow-run", "0123456789abcdef"]
    missing_uri = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert missing_uri.returncode == 1
    assert missing_uri.stderr.strip() == "modelwarden profile: error: --mlflow-run needs --mlflow-tracking-uri or MLFLOW_TRACKING_URI"

    unknown = subprocess.run([*args, "--mlflow-tracking-uri", mlflow_server.url], capture_output=True, text=True,
                             timeout=300, env=env)
    assert unknown.returncode == 1
    last = unknown.stderr.strip().splitlines()[-1]
    assert last.startswith("modelwarden profile: error: could not log profile.json to MLflow run 0123456789abcdef: ")
    assert "not found" in last and TOKEN not in unknown.stderr


def test_fetch_model_command(mlflow_server, fraud, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": mlflow_server.url,
           "MLFLOW_TRACKING_TOKEN": TOKEN, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    dest = tmp_path / "model"
    done = subprocess.run([MODELWARDEN, "fetch-model", "models:/fraud/1", str(dest)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert {"MLmodel", "model.skops", "profile.json"} <= files_in(dest)

    refused = subprocess.run([MODELWARDEN, "fetch-model", "models:/fraud/1", str(tmp_path / "bad"), "--sha256", "0" * 64],
                             capture_output=True, text=True, timeout=300, env=env)
    assert refused.returncode != 0
    assert "sha256 of model.skops" in refused.stderr and TOKEN not in refused.stderr + refused.stdout
    assert files_in(tmp_path / "bad") == set()

    # The operator's tracking server reaches the pod as a default a store Secret's MLFLOW_TRACKING_URI
    # would override (an env entry would win over envFrom): it alone is enough.
    fallback = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"} | {
        "MODELWARDEN_DEFAULT_MLFLOW_TRACKING_URI": mlflow_server.url}
    done = subprocess.run([MODELWARDEN, "fetch-model", "models:/fraud/1", str(tmp_path / "default")], capture_output=True,
                          text=True, timeout=300, env=fallback, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {"MLmodel", "model.skops", "profile.json"} <= files_in(tmp_path / "default")
