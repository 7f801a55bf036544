"""Child processes the sandbox and tests start: wait until they answer, stop them politely."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable

import requests


def free_port() -> int:
    """A free TCP port on loopback (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(process: subprocess.Popen[bytes], url: str, what: str, log_tail: Callable[[], str],
                     timeout: float, poll: float = 0.1) -> None:
    """Poll `url` until it answers 200; fail early (with the log's tail) if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log_tail()}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(poll)
    terminate(process)
    raise TimeoutError(f"{what} not ready within {timeout}s: {log_tail()}")


def terminate(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
