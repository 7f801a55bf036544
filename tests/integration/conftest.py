"""Integration fixtures: example models trained per session and real `modelwarden serve` processes."""

from __future__ import annotations

import pytest

from modelwarden.serving.examples import ExampleModel, train_examples
from modelwarden.serving.process import ModelServerProcess


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

