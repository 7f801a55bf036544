"""Startup of `modelwarden serve` as a process: env configuration and one-line startup errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

from modelwarden.sandbox.processes import free_port


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_")}
    return subprocess.run(
        [sys.executable, "-m", "modelwarden", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("modelwarden serve: error: ")
    return lines[0]


def test_corrupt_model_file(tmp_path):
    (tmp_path / "model.joblib").write_bytes(b"not a pickle")
    assert "cannot load model" in one_line_error(serve("--model", str(tmp_path), "--name", "m"))


def test_remote_uri_is_refused_clearly():
    line = one_line_error(serve(env={"MODEL_URI": "s3://bucket/models/7", "MODEL_NAME": "m"}))
    assert "s3://" in line and "only loads local paths" in line


def test_explicit_profile_that_does_not_exist(serving_examples, tmp_path):
    """Only the implicit profile.json beside the model may be absent (tests/integration/test_serving_model_formats.py)."""
    shutil.copy(serving_examples["classifier"].model, tmp_path / "model.joblib")
    missing = tmp_path / "elsewhere" / "profile.json"
    line = one_line_error(serve("--model", str(tmp_path), "--name", "m", "--profile", str(missing)))
    assert f"cannot read the profile {missing}" in line
    line = one_line_error(serve("--model", str(tmp_path), "--name", "m", env={"MODEL_PROFILE": str(missing)}))
    assert f"cannot read the profile {missing}" in line


def test_invalid_profile_beside_the_model(serving_examples, tmp_path):
    shutil.copy(serving_examples["classifier"].model, tmp_path / "model.joblib")
    (tmp_path / "profile.json").write_text('{"formatVersion": 1}')
    assert f"invalid profile {tmp_path / 'profile.json'}" in one_line_error(serve("--model", str(tmp_path), "--name", "m"))


def test_empty_model_directory(tmp_path):
    line = one_line_error(serve("--model", str(tmp_path), "--name", "m"))
    assert "is empty: expected model.joblib, model.skops or an MLflow model (MLmodel file)" in line


def test_profile_of_another_task(serving_examples):
    line = one_line_error(
        serve(
            "--model",
            str(serving_examples["classifier"].model),
            "--profile",
            str(serving_examples["regressor"].profile),
            "--name",
            "m",
        )
    )
    assert "regression" in line and "classification" in line


@pytest.mark.parametrize("env, fragment", [({}, "no model"), ({"MODEL_URI": "/x"}, "no model name")])
def test_missing_configuration(env, fragment):
    assert fragment in one_line_error(serve(env=env))


def test_bad_track(serving_examples):
    assert "track 'blue'" in one_line_error(
        serve("--model", str(serving_examples["classifier"].directory), "--name", "m", "--track", "blue")
    )


def test_environment_configures_the_server(serving_examples, tmp_path):
    """The operator's pod env (MODEL_URI as file://, MODEL_NAME/VERSION/TRACK, PORT) is enough."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_")}
    env = {
        **clean,
        "MODEL_URI": serving_examples["classifier"].directory.as_uri(),
        "MODEL_NAME": "fraud",
        "MODEL_VERSION": "42",
        "MODEL_TRACK": "shadow",
        "PORT": str(port),
        "PREDICTION_LOG": "off",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "modelwarden", "serve", "--host", "127.0.0.1"], env=env, stderr=subprocess.PIPE
    )
    try:
        response = None
        for _ in range(150):
            try:
                response = requests.get(f"http://127.0.0.1:{port}/v2/models/fraud", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stderr.read().decode()
                time.sleep(0.1)
        assert response is not None and response.status_code == 200
        assert response.json()["versions"] == ["42"] and response.headers["X-Model-Track"] == "shadow"
    finally:
        process.terminate()
        process.wait(10)
