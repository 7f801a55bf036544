"""The Prometheus provider over real HTTP: a scripted loopback server, then the real Prometheus."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from modelwarden.prometheus.errors import NoData, QueryError, Unreachable
from modelwarden.prometheus.client import MAX_GET_QUERY_LENGTH, PrometheusConfig, PrometheusProvider
from modelwarden.sandbox.prometheus import free_port

VECTOR = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"a": "1"}, "value": [1, "2.5"]}]}}
EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}
BAD = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "("'}


class Scripted:
    """A loopback HTTP server answering from a list of (status, body, delay) responses."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, dict, float]] = []
        self.router = None  # or: query -> (status, body, delay)
        self.requests: list[dict] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, params: dict) -> None:
                scripted.requests.append({"method": self.command, "path": urlparse(self.path).path, "headers": dict(self.headers), "params": params})
                if scripted.router is not None:
                    status, body, delay = scripted.router(params["query"][0])
                else:
                    status, body, delay = scripted.responses.pop(0) if len(scripted.responses) > 1 else scripted.responses[0]
                time.sleep(delay)
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                self._answer(parse_qs(urlparse(self.path).query))

            def do_POST(self) -> None:
                self._answer(parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    server = Scripted()
    yield server
    server.close()


def provider(url: str, **kwargs) -> PrometheusProvider:
    return PrometheusProvider(PrometheusConfig(url, **{"timeout_seconds": 2.0, "backoff_seconds": 0.01, **kwargs}))


def test_500_is_retried_then_unreachable(scripted):
    scripted.responses = [(500, {"status": "error", "error": "boom"}, 0)]
    with pytest.raises(Unreachable, match="HTTP 500"):
        provider(scripted.url, attempts=3).query("up")
    assert len(scripted.requests) == 3


def test_a_transient_503_is_retried_to_success(scripted):
    scripted.responses = [(503, {"status": "error", "error": "busy"}, 0), (200, VECTOR, 0)]
    vector = provider(scripted.url).query("up")
    assert vector.values.tolist() == [2.5] and vector.labels == [{"a": "1"}]
    assert len(scripted.requests) == 2


def test_slower_than_the_timeout_is_unreachable(scripted):
    scripted.responses = [(200, VECTOR, 1.0), (200, VECTOR, 1.0), (200, VECTOR, 0)]
    with pytest.raises(Unreachable, match="Timeout"):
        provider(scripted.url, timeout_seconds=0.2, attempts=2).query("up")
    assert len(scripted.requests) == 2  # bounded: exactly `attempts` tries, then Unreachable


def test_400_bad_query_is_a_query_error_without_retry(scripted):
    scripted.responses = [(400, BAD, 0)]
    with pytest.raises(QueryError, match="parse error"):
        provider(scripted.url).query("sum(")
    assert len(scripted.requests) == 1


def test_error_status_in_a_200_body_is_a_query_error(scripted):
    scripted.responses = [(200, BAD, 0)]
    with pytest.raises(QueryError):
        provider(scripted.url).query("x")


def test_empty_result_is_no_data(scripted):
    scripted.responses = [(200, EMPTY, 0)]
    with pytest.raises(NoData):
        provider(scripted.url).query("absent_metric")


def test_connection_refused_is_unreachable():
    with pytest.raises(Unreachable):
        provider(f"http://127.0.0.1:{free_port()}", attempts=2).query("up")


def test_auth_headers_time_and_long_queries(scripted):
    scripted.responses = [(200, VECTOR, 0)]
    client = provider(scripted.url + "/", headers={"X-Scope-OrgID": "team-a"}, bearer_token="s3cret")
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    client.query("up", at=at)
    first = scripted.requests[0]
    assert first["path"] == "/api/v1/query" and first["method"] == "GET"
    assert first["headers"]["Authorization"] == "Bearer s3cret" and first["headers"]["X-Scope-OrgID"] == "team-a"
    assert float(first["params"]["time"][0]) == at.timestamp()
    long_query = "up or " * (MAX_GET_QUERY_LENGTH // 6 + 1) + "up"
    client.query(long_query)
    assert scripted.requests[1]["method"] == "POST" and scripted.requests[1]["params"]["query"] == [long_query]
    provider(scripted.url, basic_auth=("user", "pw")).query("up")
    assert scripted.requests[2]["headers"]["Authorization"].startswith("Basic ")


def test_against_the_real_prometheus(prometheus):
    client = provider(prometheus.url)
    assert client.query("vector(1) + 1").values.tolist() == [2.0]
    assert client.query("scalar(vector(3))").values.tolist() == [3.0]
    with pytest.raises(QueryError):
        client.query("sum(rate(")
    with pytest.raises(NoData):
        client.query('modelwarden_no_such_metric{model="x"}')
    now = datetime.now(timezone.utc)
    matrix = client.query_range("vector(5)", now - timedelta(minutes=1), now, 15)
    assert len(matrix.timestamps[0]) >= 4 and set(matrix.values[0].tolist()) == {5.0}


def vector(*series: tuple[dict, str]) -> tuple[int, dict, float]:
    """An instant-vector answer; values are strings, as Prometheus sends them ("NaN", "+Inf" included)."""
    return 200, {"status": "success", "data": {"resultType": "vector",
                                               "result": [{"metric": m, "value": [1, v]} for m, v in series]}}, 0


def buckets(feature: str, counts: list[str]) -> list[tuple[dict, str]]:
    return [({"feature": feature, "le": le}, c) for le, c in zip(("-1.0", "0.0", "1.0", "+Inf"), counts)]


HEALTHY = ["100", "500", "900", "1000"]
POISONED = {  # what one bad series does to each part of an evaluation
    "NaN bucket": {"features": buckets("amount", ["100", "500", "NaN", "1000"])},
    "+Inf bucket": {"features": buckets("amount", ["100", "+Inf", "+Inf", "+Inf"])},
    "negative bucket": {"features": buckets("amount", ["-5", "500", "900", "1000"])},
    "falling buckets": {"features": buckets("amount", ["100", "900", "500", "1000"])},
    "NaN confusion cell": {"confusion": [({"predicted": "1", "actual": "1"}, "NaN"), ({"predicted": "0", "actual": "1"}, "10")]},
    "+Inf outliers": {"counters": [({"modelwarden_quantity": "predictions"}, "1000"), ({"modelwarden_quantity": "outliers"}, "+Inf")]},
    "NaN squared error sum": {"counters": [({"modelwarden_quantity": "predictions"}, "1000"), ({"modelwarden_quantity": "outliers"}, "1"),
                                           ({"modelwarden_quantity": "squared_error_sum"}, "NaN"),
                                           ({"modelwarden_quantity": "absolute_error_sum"}, "10"),
                                           ({"modelwarden_quantity": "feedback_observations"}, "100"),
                                           ({"modelwarden_quantity": "fourth_power_error_sum"}, "100")]},
    "+Inf latency bucket": {"latency": [({"le": le}, c) for le, c in (("0.1", "10"), ("0.5", "+Inf"), ("+Inf", "+Inf"))]},
}
HEALTHY_COUNTERS = [({"modelwarden_quantity": "predictions"}, "1000"), ({"modelwarden_quantity": "outliers"}, "1"),
                    ({"modelwarden_quantity": "squared_error_sum"}, "50"), ({"modelwarden_quantity": "absolute_error_sum"}, "10"),
                    ({"modelwarden_quantity": "feedback_observations"}, "100"), ({"modelwarden_quantity": "fourth_power_error_sum"}, "100")]
HEALTHY_LATENCY = [({"le": le}, c) for le, c in (("0.1", "900"), ("0.5", "1000"), ("+Inf", "1000"))]


@pytest.mark.parametrize("case", sorted(POISONED))
def test_non_finite_or_inconsistent_data_is_an_error_naming_the_series_never_a_fail(scripted, case):
    from modelwarden.api.driftpolicy import DriftPolicySpec, Verdict
    from modelwarden.prometheus.collect import Target, evaluate

    spec = DriftPolicySpec.model_validate({
        "targetRef": {"name": "fraud"}, "track": "canary", "window": "10m", "minSamples": 10, "reference": {"track": "stable"},
        "drift": {"method": "ks", "predictions": False},
        "performance": [{"metric": "accuracy", "min": 0.8}, {"metric": "mse", "max": 1.0}, {"metric": "latency_p99", "max": 1.0}],
        "outliers": {"maxRate": 0.05}})
    poison = POISONED[case]

    def answer(query: str) -> tuple[int, dict, float]:
        canary = 'track="canary"' in query
        if "modelwarden_feature_value_bucket" in query:
            return vector(*(poison["features"] if canary and "features" in poison else buckets("amount", HEALTHY)))
        if "modelwarden_feedback_total" in query:
            return vector(*poison.get("confusion", [({"predicted": "1", "actual": "1"}, "950"), ({"predicted": "0", "actual": "1"}, "50")]))
        if "modelwarden_inference_latency_seconds_bucket" in query:
            return vector(*poison.get("latency", HEALTHY_LATENCY))
        return vector(*poison.get("counters", HEALTHY_COUNTERS))

    scripted.router = answer
    report = evaluate(spec, Target("fraud", "ml", {"canary": "2", "stable": "1"}), provider(scripted.url), datetime.now(timezone.utc)).report
    results = {r.check: r for r in report.evaluation.results}
    errors = [r for r in results.values() if r.verdict == Verdict.ERROR]
    assert report.evaluation.verdict == Verdict.ERROR and not [r for r in results.values() if r.verdict == Verdict.FAIL], results
    assert errors and all("invalid data from Prometheus" in r.message for r in errors), errors
    named = errors[0].message
    assert any(series in named for series in ('feature="amount"', 'predicted="1"', 'modelwarden_quantity="outliers"',
                                              'modelwarden_quantity="squared_error_sum"', 'le="0.5"')), named
    # Everything the poisoned series does not feed is still judged (and passes here).
    assert {r.verdict for r in results.values()} <= {Verdict.ERROR, Verdict.PASS}, results
