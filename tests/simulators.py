"""A Prometheus-API backend whose answers a test controls (FakePrometheus). The kubelet's
stand-in is tests/realcluster.py's PodKubelet."""

from __future__ import annotations

import json
import time

from tests.receivers import LoopbackHttpServer, QuietHandler


class FakePrometheus(LoopbackHttpServer):
    """Answers /api/v1/query like Prometheus, as told: ``value`` (one series), ``empty`` (no series),
    ``error`` (HTTP 500), ``slow`` (answers after ``delay`` seconds), or not at all after stop()."""

    def __init__(self, mode: str = "value", value: float = 0.0, delay: float = 0.0) -> None:
        self.mode, self.value, self.delay = mode, value, delay
        self.queries: list[str] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each query
        self.connections = 0  # TCP connections accepted (HTTP/1.1: a client may keep one alive)
        fake = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                fake.connections += 1
                super().setup()

            def do_GET(self) -> None:  # noqa: N802
                fake.queries.append(self.path)
                fake.authorizations.append(self.headers.get("Authorization"))
                if fake.mode == "slow":
                    time.sleep(fake.delay)
                if fake.mode == "error":
                    return self._answer(500, {"status": "error", "errorType": "internal", "error": "boom"})
                result = [] if fake.mode == "empty" else [{"metric": {}, "value": [time.time(), repr(float(fake.value))]}]
                self._answer(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

            do_POST = do_GET  # noqa: N815

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout)

        self.serve(Handler)
