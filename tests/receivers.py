"""Real alert receivers on loopback: an HTTP receiver (posing as Slack or a webhook), an SMTP
server (aiosmtpd) and Debian's Alertmanager."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from tests.processes import free_port


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output clean."""

    def log_message(self, *args: object) -> None:
        pass


class LoopbackHttpServer:
    """A threaded HTTP server on a free loopback port, serving ``handler`` until stop()."""

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    rejection: str | None = None  # why a signing receiver refused it (answered 401)

    def json(self):
        return json.loads(self.body)


def webhook_signature_problem(key: bytes, body: bytes, header: str, now: float, tolerance: float = 300) -> str | None:
    """Why a `X-Modelwarden-Signature` header does not authenticate `body` at `now` (None: it does).

    Written from docs/driftpolicy.md as a receiver's author would, independent of the operator's code."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        fields.setdefault(name, []).append(value)
    if not fields.get("t") or not fields.get("v1") or not fields["t"][0].isdigit():
        return "malformed signature header"
    timestamp = int(fields["t"][0])
    expected = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in fields["v1"]):
        return "signature mismatch"
    if abs(now - timestamp) > tolerance:
        return "timestamp outside tolerance"
    return None


class HttpReceiver(LoopbackHttpServer):
    """Records every POST and answers ``status`` (200 by default), after ``delay`` seconds. With
    ``signing_key`` it verifies the webhook signature against its ``clock`` and answers 401 to a bad
    or stale one. Each attribute may be changed while it serves."""

    def __init__(self, status: int = 200, signing_key: bytes | None = None, tolerance: float = 300,
                 clock: Callable[[], float] = time.time, delay: float = 0.0) -> None:
        self.status, self.signing_key, self.tolerance, self.clock, self.delay = status, signing_key, tolerance, clock, delay
        self.received: list[Received] = []
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rejection = None
                if receiver.signing_key is not None:
                    rejection = webhook_signature_problem(receiver.signing_key, body, self.headers.get("X-Modelwarden-Signature", ""),
                                                          receiver.clock(), receiver.tolerance)
                receiver.received.append(Received(self.path, dict(self.headers), body, rejection))
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(401 if rejection else receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.serve(Handler)


class SmtpReceiver:
    """aiosmtpd on a free loopback port; ``messages`` holds every accepted message."""

    def __init__(self, **controller_kwargs) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[dict] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                receiver.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                          "data": envelope.content.decode(errors="replace")})
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **controller_kwargs)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


class Alertmanager:
    """`prometheus-alertmanager` with a temp config and storage, clustering off."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir = binary, workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "Alertmanager":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "alertmanager.yml"
        config.write_text("route:\n  receiver: default\nreceivers:\n  - name: default\n")
        log = (self.workdir / "alertmanager.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise TimeoutError("alertmanager did not become ready")

    def alerts(self, **filters: str) -> list[dict]:
        params = {"active": "true", "silenced": "false", "inhibited": "false", "unprocessed": "true"}
        alerts = requests.get(f"{self.url}/api/v2/alerts", params=params, timeout=5).json()
        return [a for a in alerts if all(a["labels"].get(k) == v for k, v in filters.items())]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
