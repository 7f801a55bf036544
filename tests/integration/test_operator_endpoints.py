"""The operator's /metrics listens where --metrics-address says (liveness: the --liveness URL's host).

127.0.0.0/8 all reaches the loopback interface on Linux, so a server bound to 127.0.0.1 is
refused on 127.0.0.2 while one bound to 0.0.0.0 answers there: a real check of the bind, with no
other interface needed."""

from __future__ import annotations

import argparse

import pytest
import requests

from modelwarden.commands.run import build_config, configure
from modelwarden.controller import telemetry
from tests.processes import free_port


def parse(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(list(args))


@pytest.fixture
def metrics_server():
    started = []

    def start(address: str):
        port = free_port()
        server = telemetry.serve(port, address)
        assert server is not None
        started.append(server)
        return port

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_metrics_bound_to_loopback_is_not_reachable_on_another_address(metrics_server):
    port = metrics_server(build_config(parse("--metrics-address", "127.0.0.1")).metrics_address)
    assert "modelwarden_operator_" in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.2:{port}/metrics", timeout=5)


def test_metrics_default_address_answers_on_every_interface(metrics_server):
    config = build_config(parse())
    assert config.metrics_address == "0.0.0.0"
    port = metrics_server(config.metrics_address)
    assert requests.get(f"http://127.0.0.2:{port}/metrics", timeout=5).status_code == 200


def test_bind_addresses_from_flags_and_environment(monkeypatch):
    assert build_config(parse("--metrics-address", "::1")).metrics_address == "::1"
    assert build_config(parse("--metrics-address", "[::]")).metrics_address == "::"
    assert build_config(parse("--liveness", "http://127.0.0.1:8081/healthz")).liveness_endpoint == "http://127.0.0.1:8081/healthz"
    monkeypatch.setenv("MODELWARDEN_METRICS_ADDRESS", "10.1.2.3")
    monkeypatch.setenv("MODELWARDEN_LIVENESS", "http://10.1.2.3:8081/healthz")
    config = build_config(parse())
    assert config.metrics_address == "10.1.2.3" and config.liveness_endpoint == "http://10.1.2.3:8081/healthz"
    with pytest.raises(SystemExit):
        parse("--metrics-address", "metrics.example.com")
