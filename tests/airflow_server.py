"""A real Apache Airflow 3 on loopback, for the Airflow retraining backend's integration tests.

Airflow lives in its own venv (`make airflow`, tools/airflow/install.sh), never in the project's.
One server is three processes, each in a session of its own (LocalExecutor forks task runners
under the scheduler, each in a process group of its own; stop() kills whole sessions): `airflow api-server` (the REST API /api/v2, the auth manager's
/auth/token, and the Execution API the task runners report to), `airflow scheduler` and
`airflow dag-processor`. No triggerer: the test DAGs defer nothing. The metadata DB is sqlite under
`home`, the executor LocalExecutor with parallelism 2, the auth manager Airflow's default
SimpleAuthManager with one fixed admin user whose password is in a passwords file we write.
DAG-folder scanning and scheduler loops are set short, so a new DAG is visible in a few seconds and
a triggered run is picked up within about a second. Each process logs to <home>/logs/<name>.log;
task logs are under <home>/logs/dag_id=.../.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from modelwarden.sandbox.processes import free_port

AIRFLOW_VENV = Path(__file__).resolve().parents[1] / ".tools" / "airflow"
AIRFLOW = AIRFLOW_VENV / "bin" / "airflow"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
COMPONENTS = ("api-server", "scheduler", "dag-processor")


class AirflowServer:
    """Airflow 3's api-server, scheduler and dag-processor on a loopback port, sqlite under `home`.

    `start()` returns once the REST API answers, the scheduler and dag-processor heartbeat, and
    every DAG file in `dags_folder` has been parsed into DAGs that GET /api/v2/dags/{dag_id} shows
    (an import error fails the start, with its stack trace). `env` adds to (or overrides) the
    environment of all three processes, and so of the tasks; MODELWARDEN_TEST_CONF_DIR defaults to
    `self.conf_dir`, where tests/fixtures/airflow/dags/modelwarden_retrain.py writes each run's conf.
    """

    username = "modelwarden"
    password = "modelwarden-airflow-test"

    def __init__(self, home: Path, dags_folder: Path, port: int | None = None, *, env: dict[str, str] | None = None):
        self.home = Path(home).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.port = port or free_port()
        self.logs = self.home / "logs"
        self.conf_dir = self.home / "received-conf"
        self.extra_env = dict(env or {})
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: list[Any] = []
        self.dag_ids: list[str] = []  # the DAGs found in dags_folder by start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api/v2"

    # --- the environment ----------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        jwt_secret = self._secret("jwt-secret")  # the scheduler signs task tokens the api-server checks
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__EXPOSE_CONFIG": "False",
            "AIRFLOW__API__SECRET_KEY": self._secret("api-secret-key"),
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # A new DAG file is found within a second or two; files are re-parsed every 10 s.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "1",
            "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
            "AIRFLOW__DAG_PROCESSOR__STALE_DAG_THRESHOLD": "10",
            # A triggered (queued) run is started within about a second.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # Nothing phones home.
            "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
            "SCARF_ANALYTICS": "false",
            "DO_NOT_TRACK": "true",
            "MODELWARDEN_TEST_CONF_DIR": str(self.conf_dir),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        })
        env.update(self.extra_env)
        return env

    def _secret(self, name: str) -> str:
        """A random secret kept in `home`, so all processes (and a restart) agree on it."""
        path = self.home / f".{name}"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(64))  # HS512 wants >= 64 bytes
        return path.read_text().strip()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 240.0) -> AirflowServer:
        """Generous timeout: each Airflow process imports for 5-15 s on a busy 2-core machine."""
        if not AIRFLOW.exists():
            raise RuntimeError(f"Airflow is not installed at {AIRFLOW_VENV}: run `make airflow` "
                               "(bash tools/airflow/install.sh)")
        if not self.dags_folder.is_dir():
            raise RuntimeError(f"dags folder {self.dags_folder} does not exist")
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({self.username: self.password}) + "\n")
        deadline = time.monotonic() + timeout
        env = self.environment()
        try:
            self._migrate(env, deadline)
            for name in COMPONENTS:
                args = {"api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                        "scheduler": ["scheduler", "--skip-serve-logs"],  # no log server on fixed port 8793
                        "dag-processor": ["dag-processor"]}[name]
                self._log_files.append(self.log_path(name).open("ab"))
                self.processes[name] = subprocess.Popen(
                    [str(AIRFLOW), *args], cwd=self.home, env=env,
                    stdin=subprocess.DEVNULL, stdout=self._log_files[-1], stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._wait_healthy(deadline)
            self._wait_dags(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _migrate(self, env: dict[str, str], deadline: float) -> None:
        log = self.log_path("db-migrate")
        with log.open("ab") as out:
            process = subprocess.Popen([str(AIRFLOW), "db", "migrate"], cwd=self.home, env=env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            self.processes["db-migrate"] = process
            try:
                code = process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"`airflow db migrate` did not finish in time:\n{self.tail('db-migrate')}") from None
            finally:
                self._kill_session(self.processes.pop("db-migrate"))
        if code != 0:
            raise RuntimeError(f"`airflow db migrate` exited with {code}:\n{self.tail('db-migrate')}")

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {process.returncode}:\n{self.tail(name)}")

    def _wait_healthy(self, deadline: float) -> None:
        """/api/v2/monitor/health: the metadatabase, the scheduler and the dag-processor healthy."""
        last: Any = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                response = requests.get(f"{self.api}/monitor/health", timeout=5)
                last = response.status_code, response.text[:500]
                if response.status_code == 200:
                    health = response.json()
                    if all((health.get(part) or {}).get("status") == "healthy"
                           for part in ("metadatabase", "scheduler", "dag_processor")):
                        return
            except requests.RequestException as error:
                last = error
            time.sleep(0.5)
        raise TimeoutError(f"Airflow not healthy in time (last answer: {last}):\n{self.tails()}")

    def _wait_dags(self, deadline: float) -> None:
        """Every *.py file of dags_folder parsed into at least one DAG, each visible by its id."""
        files = sorted(str(p.relative_to(self.dags_folder)) for p in self.dags_folder.rglob("*.py"))
        headers = {"Authorization": f"Bearer {self.token()}"}
        missing: list[str] = files
        while time.monotonic() < deadline:
            self._check_alive()
            errors = requests.get(f"{self.api}/importErrors", headers=headers, timeout=10)
            errors.raise_for_status()
            for error in errors.json()["import_errors"]:
                if any(error["filename"].endswith(f) for f in files):
                    raise RuntimeError(f"Airflow could not import {error['filename']}:\n{error['stack_trace']}")
            dags = requests.get(f"{self.api}/dags", params={"limit": 1000}, headers=headers, timeout=10)
            dags.raise_for_status()
            found = {dag["dag_id"]: dag.get("relative_fileloc") or "" for dag in dags.json()["dags"]}
            missing = [f for f in files if f not in found.values()]
            if not missing:
                self.dag_ids = sorted(found)
                for dag_id in self.dag_ids:
                    requests.get(f"{self.api}/dags/{dag_id}", headers=headers, timeout=10).raise_for_status()
                return
            time.sleep(0.5)
        raise TimeoutError(f"DAG files not parsed in time: {missing}:\n{self.tails()}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to each process group, then (after `timeout`: on SIGTERM the scheduler waits for
        running tasks) SIGKILL to every process left in their sessions: the Task SDK puts each task
        runner in a process group of its own (so killpg alone would miss a running task), but never
        in a session of its own."""
        processes = list(self.processes.values())
        for process in processes:
            self._signal_group(process, signal.SIGTERM)
        end = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in processes:
            self._kill_session(process)
        self.processes.clear()
        for log in self._log_files:
            log.close()
        self._log_files.clear()

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(process.pid, sig)  # start_new_session: the group's id is the leader's pid
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _session_members(sid: int) -> list[int]:
        members = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # fields: state ppid pgrp session ...
                members.append(int(entry.name))
        return members

    def _kill_session(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the leader's group and every process of its session (start_new_session: the
        session's id is the leader's pid), until none is left (at most 10 s)."""
        self._signal_group(process, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            members = [pid for pid in self._session_members(process.pid) if pid != process.pid]
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if process.poll() is None:
                process.wait(10)
            if not members or time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def __enter__(self) -> AirflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- logs and the REST API -------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def tails(self, chars: int = 2000) -> str:
        return "\n".join(f"--- {name} ({self.log_path(name)}):\n{self.tail(name, chars)}" for name in COMPONENTS)

    def token(self) -> str:
        """A JWT from the simple auth manager: POST /auth/token {"username", "password"} -> 201
        {"access_token": ...}, sent as `Authorization: Bearer <token>`."""
        response = requests.post(f"{self.url}/auth/token", json={"username": self.username, "password": self.password},
                                 timeout=10)
        if response.status_code != 201:
            raise RuntimeError(f"POST /auth/token answered {response.status_code}: {response.text[:500]}")
        return str(response.json()["access_token"])

    def session(self) -> requests.Session:
        """A requests session that sends a fresh bearer token."""
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token()}"
        return session
