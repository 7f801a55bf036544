"""Real processes started by tests: the operator (`modelwarden run`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

BIN = Path(sys.executable).parent / "modelwarden"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`modelwarden run --standalone` in a subprocess, healthy once its liveness endpoint answers."""

    def __init__(self, kubeconfig: Path, log_path: Path, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_args = extra_args
        self.env = env or {}
        self.liveness_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.liveness_port}/healthz"

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        self.process = subprocess.Popen(
            [str(BIN), "run", "--verbose", "--liveness", self.liveness_url, *self.extra_args],
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if requests.get(self.liveness_url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not live within {timeout}s:\n{self.log()[-3000:]}")

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
        if self.process and self.process.poll() is None:
            try:
                self.terminate(10)
            except subprocess.TimeoutExpired:
                self.kill()
