"""A local alert receiver for the sandbox: a loopback HTTP server that keeps what it is sent and,
given the signing secret, verifies the webhook's signature the way a real receiver should (HMAC
over timestamp and body, timestamp within a tolerance) and answers 401 to anything else."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from modelwarden.notifiers.webhook import DEFAULT_TOLERANCE_SECONDS, SIGNATURE_HEADER, SignatureError, verify_signature


class AlertReceiver:
    def __init__(self, secret: str = "", tolerance: float = DEFAULT_TOLERANCE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret, self.tolerance, self.clock = secret.encode(), tolerance, clock
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                valid, problem = receiver.check(body, self.headers.get(SIGNATURE_HEADER, ""))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"raw": body.decode(errors="replace")}
                receiver.received.append({"path": self.path, "signatureValid": valid, "rejected": problem, "payload": payload})
                self.send_response(401 if problem else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, name="sandbox-receiver", daemon=True)

    def check(self, body: bytes, header: str) -> tuple[bool | None, str | None]:
        """(signature valid, why rejected); without a secret nothing is verified (None, None)."""
        if not self.secret:
            return None, None
        try:
            verify_signature(self.secret, body, header, now=self.clock(), tolerance=self.tolerance)
        except SignatureError as exc:
            return False, str(exc)
        return True, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def start(self) -> "AlertReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
