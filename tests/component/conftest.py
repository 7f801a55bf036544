"""Component fixtures: the cluster's controllers simulated (tests/simulators.py)."""

from __future__ import annotations

import pytest

from tests.simulators import FakePrometheus


@pytest.fixture
def fake_prometheus():
    """Start FakePrometheus servers (see tests/simulators.py); all are stopped at teardown."""
    started: list[FakePrometheus] = []

    def start(**kwargs) -> FakePrometheus:
        server = FakePrometheus(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        try:
            server.stop()
        except OSError:
            pass
