"""A real Prometheus server process on loopback, for the sandbox and the test suite.

Targets are discovered from a file (``file_sd_configs``), so model-server processes can come and
go without restarting Prometheus. History can be backfilled from OpenMetrics text with
``promtool tsdb create-blocks-from openmetrics`` before the server starts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from modelwarden.sandbox.processes import free_port, terminate, wait_until_ready


class PrometheusNotInstalled(RuntimeError):
    """The prometheus/promtool binaries are not on PATH (Debian: apt-get install prometheus)."""


def find_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if not path:
        raise PrometheusNotInstalled(f"{name} not found on PATH; install Debian's 'prometheus' package")
    return path


@dataclass
class PrometheusServer:
    """One Prometheus process with its own temp data dir, config and port."""

    scrape_interval: str = "1s"
    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mw-prometheus-")))
    extra_args: tuple[str, ...] = ()
    query_log: bool = False  # log every query Prometheus answers to query_log_file (tests count round trips)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def targets_file(self) -> Path:
        return self.workdir / "targets.json"

    @property
    def query_log_file(self) -> Path:
        return self.workdir / "queries.log"

    def logged_queries(self) -> list[dict]:
        """The query log's entries (``params``: query, start, end, step; step 0 for an instant query)."""
        if not self.query_log_file.exists():
            return []
        return [json.loads(line) for line in self.query_log_file.read_text().splitlines() if line.strip()]

    @property
    def log_file(self) -> Path:
        return self.workdir / "prometheus.log"

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():
            self.set_targets([])
        global_config = {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval}
        if self.query_log:
            global_config["query_log_file"] = str(self.query_log_file)
        config = {
            "global": global_config,
            "scrape_configs": [
                {
                    "job_name": "modelwarden",
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
                }
            ],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))

    def set_targets(self, targets: list[tuple[str, dict[str, str]]]) -> None:
        """Replace the scrape targets: a list of (host:port, extra labels). Atomic for file_sd."""
        groups = [{"targets": [address], "labels": labels} for address, labels in targets]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_file)

    def backfill(self, openmetrics_text: str) -> None:
        """Turn OpenMetrics text (ending in '# EOF') into TSDB blocks; call before start()."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        source = self.workdir / f"backfill-{time.monotonic_ns()}.om"
        source.write_text(openmetrics_text)
        result = subprocess.run(
            [find_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source), str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"promtool backfill failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self, timeout: float = 30.0) -> None:
        self.write_config()
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [
                find_binary("prometheus"),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=30d",
                "--web.enable-lifecycle",
                "--web.enable-admin-api",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until_ready(self.process, f"{self.url}/-/ready", "prometheus", self.log_tail, timeout, poll=0.2)

    def stop(self, timeout: float = 10.0) -> None:
        terminate(self.process, timeout)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        """An instant query returning the raw result vector (test and sandbox convenience)."""
        params: dict[str, str | float] = {"query": promql}
        if at is not None:
            params["time"] = at
        response = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def wait_for(self, promql: str, predicate=lambda result: bool(result), timeout: float = 30.0) -> list[dict]:
        """Poll an instant query until the predicate holds for its result; return that result."""
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise TimeoutError(f"{promql!r} did not satisfy the predicate within {timeout}s; last: {result}")

    def __enter__(self) -> "PrometheusServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
