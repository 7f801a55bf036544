"""Real processes started by tests: the operator (`modelwarden run`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from modelwarden.sandbox.processes import free_port, terminate, wait_until_ready

BIN = Path(sys.executable).parent / "modelwarden"


class OperatorProcess:
    """`modelwarden run --standalone` in a subprocess, healthy once its liveness endpoint answers."""

    def __init__(self, kubeconfig: Path, log_path: Path, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 verbose: bool = True):
        self.kubeconfig = kubeconfig
        self.verbose = verbose  # debug logs, which tests read (e.g. every API answer's status)
        self.log_path = log_path
        self.extra_args = extra_args
        self.env = env or {}
        self.liveness_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.expects_forbidden = False  # a test that takes RBAC away sets this

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.liveness_port}/healthz"

    def start(self, timeout: float = 30.0) -> None:
        # The tests' Prometheus fakes listen on loopback ports of their own: allow any URL unless a
        # test sets the rule it is about (tests/component/test_egress.py keeps the default).
        # The fakes answer any window, and the tests' real Prometheus scrapes every second: a window
        # of a second is fine for the first, of 4 s and more for the second.
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "MODELWARDEN_ALLOWED_PROMETHEUS_URLS": "*",
               "MODELWARDEN_SCRAPE_INTERVAL": "250ms", **self.env}
        self.process = subprocess.Popen(
            [str(BIN), "run", *(["--verbose"] if self.verbose else []), "--liveness", self.liveness_url, *self.extra_args],
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until_ready(self.process, self.liveness_url, "operator", lambda: self.log()[-3000:], timeout, poll=0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the exit code of a graceful shutdown."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (for resumption tests)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        terminate(self.process)
