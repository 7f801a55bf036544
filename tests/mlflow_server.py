"""A real `mlflow server` for the model-delivery tests, and helpers that put models in it.

The server keeps its runs and registry in sqlite and proxies artifacts (`mlflow-artifacts:/`) to a
local directory, all in a temp dir, on a free loopback port with one uvicorn worker. MLflow's job
runner (a supervisor plus seven huey consumers, for GenAI jobs) and telemetry are switched off:
the tests need neither and the machine is shared. The helpers log through the real client
(`mlflow.sklearn.log_model(..., registered_model_name=...)`), exactly as a training job would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelwarden.sandbox.processes import free_port, wait_until_ready
from tests.receivers import LoopbackHttpServer, QuietHandler

MLFLOW = Path(sys.executable).parent / "mlflow"
EXPERIMENT = "modelwarden-tests"
# For the server and for this process's client: nothing slow, nothing phoning home.
QUIET_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


class MlflowServer:
    """`mlflow server` in its own process group (it starts uvicorn as a child), ready once /health answers."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.artifacts = workdir / "artifacts"  # where proxied artifacts land on disk
        self.port = free_port()
        self.log_path = workdir / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> MlflowServer:
        """Generous timeout: importing mlflow twice (CLI, then the uvicorn worker) takes half a
        minute on a busy 2-core machine."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        self.process = subprocess.Popen(
            [str(MLFLOW), "server",
             "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
             "--artifacts-destination", str(self.artifacts),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=self.workdir, env={**env, **QUIET_ENV},
            stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until_ready(self.process, f"{self.url}/health", "mlflow server", lambda: self.log()[-3000:], timeout, poll=0.5)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the server's process group (the CLI and its uvicorn worker), then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(group, signal.SIGKILL)  # whatever of the group is left
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait(10)


@contextmanager
def tracking(url: str) -> Iterator[None]:
    """mlflow's fluent API (start_run, log_model) against `url`, restoring the previous URI after."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(url):
        yield


def client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    model_uri: str  # the logged model (models:/m-...), where MLflow 3 keeps the model's files


def small_classifier(seed: int = 0) -> Any:
    """A LogisticRegression on 40 rows of 3 features: a real sklearn model, trained in milliseconds."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3))
    return LogisticRegression().fit(x, (x[:, 0] + 0.1 * seed > 0).astype(int))


def register_sklearn_model(url: str, name: str, estimator: Any = None, seed: int = 0,
                           artifact_name: str = "model") -> RegisteredVersion:
    """Log `estimator` (default: small_classifier(seed)) in a new run with
    `mlflow.sklearn.log_model(..., registered_model_name=name)`: the next version of `name`.
    pip_requirements is given so mlflow skips inferring them (a subprocess importing the model)."""
    import mlflow
    import mlflow.sklearn

    tracker = client(url)
    experiment = tracker.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else tracker.create_experiment(EXPERIMENT)
    with tracking(url), mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.sklearn.log_model(
            estimator if estimator is not None else small_classifier(seed), name=artifact_name,
            registered_model_name=name, pip_requirements=["scikit-learn"],
        )
    return RegisteredVersion(name, str(info.registered_model_version), run.info.run_id, info.model_uri)


def set_alias(url: str, name: str, alias: str, version: str) -> None:
    client(url).set_registered_model_alias(name, alias, version)


def log_profile(url: str, run_id: str, profile: str, artifact_file: str = "profile.json") -> None:
    """Log `profile` (JSON text) as an artifact of the run, as `modelwarden profile --mlflow-run` does."""
    client(url).log_text(run_id, profile, artifact_file)


class RefusingServer(LoopbackHttpServer):
    """Answers every request with `status` (401 or 403) and a body that echoes the Authorization
    header back, like a careless proxy: what the caller reports must still never contain it."""

    def __init__(self, status: int = 401):
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path with query, headers)
        outer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                outer.requests.append((self.path, dict(self.headers.items())))
                body = f'{{"error_code": "UNAUTHENTICATED", "message": "bad credentials: {self.headers.get("Authorization", "")}"}}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("WWW-Authenticate", 'Bearer realm="mlflow"')
                self.end_headers()
                self.wfile.write(body.encode())

        self.serve(Handler)

