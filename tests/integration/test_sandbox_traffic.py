"""The demo's traffic thread against a real HTTP server: a timeout reading the weights (the API
server busy) costs one tick, never the thread (`--speed fast` once stalled that way)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from modelwarden.sandbox.traffic import TrafficGenerator


class _Answers(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = {"predictions": [0] * len(body["instances"])} if self.path.endswith(":predict") else {"accepted": len(body)}
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


class _Server:
    def __init__(self, url: str) -> None:
        self.url = url


def test_the_traffic_thread_survives_timeouts_reading_the_weights():
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server = _Server(f"http://127.0.0.1:{http.server_address[1]}")
    calls = {"weights": 0}

    def weights() -> dict[str, int]:
        calls["weights"] += 1
        if calls["weights"] <= 3:
            raise requests.ReadTimeout("the API server is busy")
        return {"stable": 100}

    traffic = TrafficGenerator("fraud", lambda: {"stable": server}, weights, rows_per_second=40, tick=0.05).start()
    try:
        deadline = time.monotonic() + 60
        while traffic.stats.requests.get("stable", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert traffic.stats.requests.get("stable", 0) >= 3, traffic.stats
        assert traffic.stats.errors >= 3  # each timeout was counted, and the thread went on sending
    finally:
        traffic.stop()
        http.shutdown()
