"""The real Prometheus fixture: scrapes live targets every second and serves backfilled history."""

import time

from prometheus_client import CollectorRegistry, Counter, start_http_server

from modelwarden.sandbox.processes import free_port


def test_scrapes_a_live_target(prometheus):
    registry = CollectorRegistry()
    counter = Counter("fixture_probe_total", "probe", ["who"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        counter.labels("test").inc(7)
        prometheus.set_targets([(f"127.0.0.1:{port}", {"suite": "fixture"})])
        result = prometheus.wait_for(
            'fixture_probe_total{suite="fixture"}', lambda r: r and float(r[0]["value"][1]) == 7, timeout=30
        )
        assert result[0]["metric"]["who"] == "test"
    finally:
        prometheus.set_targets([])
        server.shutdown()


def test_backfilled_history_is_queryable(prometheus_factory):
    start = int(time.time()) - 3 * 3600
    lines = ["# HELP backfill_value a value", "# TYPE backfill_value gauge"]
    lines += [f'backfill_value{{feature="age"}} {i} {start + 60 * i}' for i in range(60)]
    server = prometheus_factory(backfill="\n".join(lines) + "\n# EOF\n")
    result = server.query('backfill_value{feature="age"}', at=start + 60 * 30)
    assert float(result[0]["value"][1]) == 30
    increase = server.query('max_over_time(backfill_value[1h])', at=start + 60 * 59)
    assert float(increase[0]["value"][1]) == 59
