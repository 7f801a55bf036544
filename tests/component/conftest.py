"""Component fixtures: the cluster's controllers simulated (tests/simulators.py)."""

from __future__ import annotations

import pytest

from tests.simulators import FakePrometheus, Kubelet


@pytest.fixture
def kubelet(kube):
    simulator = Kubelet(kube).start()
    yield simulator
    simulator.stop()


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
