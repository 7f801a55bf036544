"""A `modelwarden serve` subprocess on a free loopback port, for the sandbox, tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from modelwarden.sandbox.processes import free_port, terminate, wait_until_ready


@dataclass
class ModelServerProcess:
    """Start with :meth:`start` (or as a context manager); it is ready when start() returns."""

    model: Path | str
    name: str
    version: str = "1"
    track: str = "stable"
    extra_args: tuple[str, ...] = ()
    paired_model: Path | str | None = None  # --paired-model: also score every request with it
    paired_version: str = "unknown"
    port: int = field(default_factory=free_port)
    log_file: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="mw-serve-", suffix=".log")[1]))
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def command(self) -> list[str]:
        paired = () if self.paired_model is None else (
            "--paired-model", str(self.paired_model), "--paired-version", self.paired_version)
        return [
            sys.executable, "-m", "modelwarden", "serve",
            "--model", str(self.model), "--name", self.name, "--version", self.version, "--track", self.track,
            "--host", "127.0.0.1", "--port", str(self.port), *paired, *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> "ModelServerProcess":
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        wait_until_ready(self.process, f"{self.url}/v2/health/ready", "model server", self.log_tail, timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        terminate(self.process, timeout)
        self.process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "ModelServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
