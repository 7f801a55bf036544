"""Airflow (3, REST API v2): a DAG run per retraining run, triggered with the context as its conf
under a deterministic dag_run_id (builders/retrainruns.external_run_name), so a repeat is a 409
and one breach is one DAG run; followed by its state. Its result: the MLflow model version tagged
with the breach id (a DAG has no termination message)."""

from __future__ import annotations

import hashlib
import threading
from urllib.parse import quote

from modelwarden.api.retrainers import AirflowRetrain
from modelwarden.builders.retrainruns import airflow_dag_run, external_run_name
from modelwarden.kube.secrets import SecretReader
from modelwarden.planning.retraining import JobResult, JobState, RetrainRun
from modelwarden.planning.runstates import airflow_state
from modelwarden.retrainers.base import BackendUnavailable, ResultSource
from modelwarden.retrainers.http import call, json_body, reason
from modelwarden.retrainers.results import tagged_model_version

_tokens: dict[tuple[str, str, str, str], str] = {}  # (url, namespace, user, password digest) -> Airflow's JWT, until refused
_lock = threading.Lock()


class AirflowRetrainer:
    noun = "Airflow DAG run"

    def __init__(self, airflow: AirflowRetrain, namespace: str, secret: SecretReader, results: ResultSource) -> None:
        self.airflow, self.namespace, self.secret, self.results = airflow, namespace, secret, results
        self.poll_seconds = airflow.poll_interval.total_seconds()
        self.base = airflow.url.rstrip("/")
        self.timeout = airflow.timeout.total_seconds()
        self.prefix = external_run_name(namespace, "")

    def _runs(self) -> str:
        return f"{self.base}/api/v2/dags/{quote(self.airflow.dag_id, safe='')}/dagRuns"

    def _token(self, fresh: bool) -> str | None:
        """A bearer token: the Secret's, or one Airflow issues for the Secret's user (kept until refused)."""
        try:
            if self.airflow.token_secret_ref is not None:
                return self.secret(self.airflow.token_secret_ref.name, self.airflow.token_secret_ref.key).strip()
            auth = self.airflow.auth_secret_ref
            if auth is None:
                return None
            user, password = self.secret(auth.secret_name, auth.username_key), self.secret(auth.secret_name, auth.password_key)
        except LookupError as exc:
            raise BackendUnavailable(f"Airflow credentials: {exc}") from None
        key = (self.base, self.namespace, user, hashlib.sha256(password.encode()).hexdigest())  # never another's token
        with _lock:
            if not fresh and key in _tokens:
                return _tokens[key]
        response = call("POST", f"{self.base}/auth/token", self.timeout, "Airflow /auth/token",
                        json={"username": user, "password": password})
        body = json_body(response, "Airflow /auth/token") if response.status_code in (200, 201) else {}
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:  # the status only: a 422 would echo the request, password included
            raise BackendUnavailable(f"Airflow refused the credentials of Secret {auth.secret_name}: HTTP {response.status_code}")
        with _lock:
            _tokens[key] = token
        return token

    def _request(self, method: str, url: str, what: str, **kwargs):
        """One API call; a refused token (401 expired, 403 not valid) is renewed once."""
        for fresh in (False, True):
            token = self._token(fresh)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = call(method, url, self.timeout, what, headers=headers, **kwargs)
            if response.status_code not in (401, 403) or self.airflow.auth_secret_ref is None:
                return response
        return response

    def launch(self, run: RetrainRun) -> None:
        run_id = external_run_name(self.namespace, run.name)
        body = airflow_dag_run(self.airflow, run_id, run.trigger, run.context)
        response = self._request("POST", self._runs(), f"trigger DAG {self.airflow.dag_id}", json=body)
        if response.status_code == 409:
            return  # this run exists already: launched before a restart or a lost status write
        if response.status_code not in (200, 201):
            raise RuntimeError(f"Airflow refused to trigger DAG {self.airflow.dag_id}: {reason(response)}")

    def runs(self, policy: str) -> tuple[JobState, ...]:
        """The DAG's runs whose id starts with this policy's prefix (Airflow matches a substring; the
        prefix is checked here)."""
        prefix = external_run_name(self.namespace, f"{policy}-retrain-")
        response = self._request("GET", self._runs(), f"list runs of DAG {self.airflow.dag_id}",
                                 params={"run_id_pattern": prefix, "limit": 100, "order_by": "-run_after"})
        if response.status_code != 200:
            raise BackendUnavailable(f"cannot list runs of DAG {self.airflow.dag_id}: {reason(response)}")
        listed = json_body(response, f"list runs of DAG {self.airflow.dag_id}")
        found = (listed.get("dag_runs") if isinstance(listed, dict) else None) or []
        return tuple(airflow_state(run["dag_run_id"][len(self.prefix):], run) for run in found
                     if isinstance(run, dict) and str(run.get("dag_run_id") or "").startswith(prefix))

    def observe(self, name: str) -> JobState | None:
        run_id = external_run_name(self.namespace, name)
        response = self._request("GET", f"{self._runs()}/{quote(run_id, safe='')}", f"DAG run {run_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BackendUnavailable(f"Airflow DAG run {run_id}: {reason(response)}")
        found = json_body(response, f"Airflow DAG run {run_id}")
        if not isinstance(found, dict):
            raise BackendUnavailable(f"Airflow DAG run {run_id}: the answer is not a DAG run")
        return airflow_state(name, found)

    def result(self, name: str) -> JobResult:
        return tagged_model_version(self.results, self.namespace, name, "result from the DAG run")
