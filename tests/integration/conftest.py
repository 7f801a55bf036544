"""Integration fixtures: example models trained per session and real `modelwarden serve` processes."""

from __future__ import annotations

import pytest

from modelwarden.sandbox.examples import ExampleModel, train_examples
from modelwarden.sandbox.modelserver import ModelServerProcess


@pytest.fixture(scope="session")
def serving_examples(tmp_path_factory) -> dict[str, ExampleModel]:
    return train_examples(tmp_path_factory.mktemp("serving-examples"))


@pytest.fixture
def start_model_server(tmp_path):
    """Start `modelwarden serve` processes (ready on return); all are stopped at teardown."""
    started: list[ModelServerProcess] = []

    def start(model, name: str, **kwargs) -> ModelServerProcess:
        kwargs.setdefault("log_file", tmp_path / f"serve-{len(started)}.log")
        server = ModelServerProcess(model, name, **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


# Analysis engine (issue 4): a real Prometheus with a backfilled metrics-contract history.
from tests.integration.evaluate_history import history_prometheus  # noqa: E402,F401


# DriftPolicy controller (issue 6): real alert receivers.
@pytest.fixture
def alertmanager(tmp_path):
    from tests.conftest import require_binary
    from tests.receivers import Alertmanager

    server = Alertmanager(require_binary("prometheus-alertmanager"), tmp_path / "alertmanager").start()
    yield server
    server.stop()


@pytest.fixture
def http_receivers():
    """Start HttpReceivers (posing as Slack or a webhook); all are stopped at teardown."""
    from tests.receivers import HttpReceiver

    started: list[HttpReceiver] = []

    def start(**kwargs) -> HttpReceiver:
        started.append(HttpReceiver(**kwargs))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def smtp_receiver():
    from tests.receivers import SmtpReceiver

    receiver = SmtpReceiver()
    yield receiver
    receiver.stop()


# Models from where they live (issue 16): a real MLflow tracking server with its registry.
@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One real `mlflow server` per test module (sqlite, proxied local artifacts, one worker),
    with this process's mlflow client kept quiet (no telemetry, no progress bars) meanwhile."""
    from tests.mlflow_server import QUIET_ENV, MlflowServer

    with pytest.MonkeyPatch.context() as patch:
        for name, value in QUIET_ENV.items():
            patch.setenv(name, value)
        server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
        try:
            yield server
        finally:
            server.stop()
