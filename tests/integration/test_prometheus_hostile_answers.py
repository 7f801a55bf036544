"""Hostile or broken Prometheus answers over real HTTP (#14): drip-fed, endless, huge, gzip bombs,
and bodies that must not be echoed into status. Each ends in an error, within bounds."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelwarden.prometheus.client import PrometheusConfig, PrometheusProvider
from modelwarden.prometheus.errors import QueryError, Unreachable
from modelwarden.prometheus.failfast import FailFastProvider

VECTOR = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "2"]}]}}).encode()


class Hostile:
    """A loopback server whose every answer is written by `self.answer(handler)`."""

    def __init__(self) -> None:
        self.answer: Callable[[BaseHTTPRequestHandler], None] = lambda h: None
        self.requests = 0
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                hostile.requests += 1
                try:
                    hostile.answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile():
    server = Hostile()
    yield server
    server.stop()


def headers(handler: BaseHTTPRequestHandler, status: int = 200, length: int | None = None, encoding: str | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    if length is not None:
        handler.send_header("Content-Length", str(length))
    if encoding:
        handler.send_header("Content-Encoding", encoding)
    handler.end_headers()


def test_a_drip_fed_answer_ends_at_the_timeout_not_when_the_server_stops(hostile):
    def drip(handler):
        headers(handler, length=len(VECTOR))
        for byte in VECTOR:  # one byte every 0.2 s: each read is well inside the 1 s timeout
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.2)

    hostile.answer = drip
    provider = PrometheusProvider(PrometheusConfig(url=hostile.url, timeout_seconds=1.0, attempts=2, backoff_seconds=0.0))
    # Without a timeout for the whole answer, it would arrive complete after ~20 s and succeed.
    with pytest.raises(Unreachable, match="timed out after 1s reading the answer"):
        provider.query("up")
    assert hostile.requests == 2


def test_the_evaluation_deadline_bounds_all_queries_and_retries_together(hostile):
    def slow(handler):
        time.sleep(0.4)
        headers(handler, status=503, length=2)
        handler.wfile.write(b"{}")

    hostile.answer = slow
    inner = PrometheusProvider(PrometheusConfig(url=hostile.url, timeout_seconds=5.0, attempts=10, backoff_seconds=0.0))
    budget = FailFastProvider(inner, budget_seconds=1.0)
    with pytest.raises(Unreachable, match="deadline"):
        budget.query("up")
    with pytest.raises(Unreachable, match="skipped"):  # the rest of this evaluation does not try again
        budget.query("other")
    assert hostile.requests <= 4  # ~0.4 s each within a 1 s budget, not 10 attempts


def test_an_answer_larger_than_the_cap_is_refused_without_holding_it(hostile):
    chunk = b" " * 65536

    def endless(handler):
        headers(handler)  # no length: read until the connection closes
        handler.close_connection = True
        for _ in range(200):  # 13 MB
            handler.wfile.write(chunk)

    hostile.answer = endless
    provider = PrometheusProvider(PrometheusConfig(url=hostile.url, max_response_bytes=1_000_000))
    with pytest.raises(QueryError, match="exceeds 1000000 bytes"):
        provider.query("up")
    assert hostile.requests == 1  # not retried: the same query gets the same answer


def test_a_gzip_bomb_is_measured_after_decompression(hostile):
    bomb = gzip.compress(b" " * 50_000_000)  # ~50 KB on the wire, 50 MB decoded

    def answer(handler):
        headers(handler, length=len(bomb), encoding="gzip")
        handler.wfile.write(bomb)

    hostile.answer = answer
    provider = PrometheusProvider(PrometheusConfig(url=hostile.url, max_response_bytes=2_000_000))
    with pytest.raises(QueryError, match="exceeds 2000000 bytes"):
        provider.query("up")


def test_a_compressed_answer_within_the_cap_is_read_whole(hostile):
    body = gzip.compress(VECTOR)

    def answer(handler):
        headers(handler, length=len(body), encoding="gzip")
        handler.wfile.write(body)

    hostile.answer = answer
    assert PrometheusProvider(PrometheusConfig(url=hostile.url)).query("up").values.tolist() == [2.0]


def test_only_a_prometheus_error_is_passed_on_never_another_servers_body(hostile):
    secret_page = b"<html>internal admin console: token=s3cr3t</html>"

    def answer(handler):
        headers(handler, status=404, length=len(secret_page))
        handler.wfile.write(secret_page)

    hostile.answer = answer
    provider = PrometheusProvider(PrometheusConfig(url=hostile.url))
    with pytest.raises(QueryError) as refused:
        provider.query("up")
    assert "HTTP 404" in str(refused.value) and "s3cr3t" not in str(refused.value) and "admin" not in str(refused.value)

    parse_error = json.dumps({"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "("'}).encode()

    def prometheus_says(handler):
        headers(handler, status=400, length=len(parse_error))
        handler.wfile.write(parse_error)

    hostile.answer = prometheus_says
    with pytest.raises(QueryError, match='parse error: unexpected'):
        provider.query("up(")


@pytest.mark.parametrize("document", [
    {"status": "success", "data": None},
    {"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "2"]}]}},  # no metric
    {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "two"]}]}},
    {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"a": 1}, "value": [1, "2"]}]}},
    {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": []}]}},
    {"status": "success", "data": {"resultType": "vector", "result": 7}},
    ["not", "a", "document"],
], ids=["data-null", "no-metric", "not-a-number", "label-not-string", "no-value", "result-not-a-list", "a-list"])
def test_an_answer_not_shaped_like_the_api_is_an_error_not_a_crash(hostile, document):
    body = json.dumps(document).encode()

    def answer(handler):
        headers(handler, length=len(body))
        handler.wfile.write(body)

    hostile.answer = answer
    with pytest.raises((Unreachable, QueryError), match="not a Prometheus API answer|unexpected body|expected an instant vector"):
        PrometheusProvider(PrometheusConfig(url=hostile.url)).query("up")
