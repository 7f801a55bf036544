"""A real Airflow 3 (tests/airflow_server.py, installed by `make airflow`) and the REST API v2 shapes
the Airflow retraining backend relies on: a bearer token from POST /auth/token, a run triggered by
POST /api/v2/dags/{dag_id}/dagRuns with our own dag_run_id and conf, followed by GET until it ends
"success" (or "failed" when the DAG's task raises), 409 for a dag_run_id already used, 401 without
a token and 403 with an invalid one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from tests.airflow_server import AirflowServer

pytestmark = pytest.mark.timeout(600)  # starting Airflow's three processes takes 10-60 s on a busy machine
DAGS = Path(__file__).resolve().parents[1] / "fixtures" / "airflow" / "dags"
DAG_ID = "modelwarden_retrain"
FINISHED = {"success", "failed"}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    server = AirflowServer(tmp_path_factory.mktemp("airflow-home"), DAGS).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(airflow) -> requests.Session:
    return airflow.session()


def trigger(airflow: AirflowServer, api: requests.Session, run_id: str, conf: dict) -> requests.Response:
    return api.post(f"{airflow.api}/dags/{DAG_ID}/dagRuns",
                    json={"dag_run_id": run_id, "logical_date": None, "conf": conf}, timeout=30)


def wait_finished(airflow: AirflowServer, api: requests.Session, run_id: str, timeout: float = 180.0) -> dict:
    """GET the run until its state is success or failed (bounded; the states are what is asserted)."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        response = api.get(f"{airflow.api}/dags/{DAG_ID}/dagRuns/{run_id}", timeout=30)
        assert response.status_code == 200, response.text
        run = response.json()
        if not seen or seen[-1] != run["state"]:
            seen.append(run["state"])
        if run["state"] in FINISHED:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} not finished within {timeout}s (states seen: {seen});\n{airflow.tails()}")


def test_the_dag_is_parsed_and_unpaused(airflow, api):
    assert DAG_ID in airflow.dag_ids
    dag = api.get(f"{airflow.api}/dags/{DAG_ID}", timeout=30).json()
    assert dag["dag_id"] == DAG_ID
    assert dag["is_paused"] is False
    assert dag["has_import_errors"] is False


def test_a_triggered_run_succeeds_with_its_conf_and_its_id_cannot_be_reused(airflow, api):
    conf = {"reason": "drift on feature age", "policy": "fraud-drift", "model": {"name": "fraud", "version": "7"}}
    response = trigger(airflow, api, "r1", conf)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["dag_run_id"] == "r1"
    assert created["dag_id"] == DAG_ID
    assert created["conf"] == conf
    assert created["run_type"] == "manual"
    assert created["logical_date"] is None
    assert created["state"] in {"queued", "running", "success"}

    run = wait_finished(airflow, api, "r1")
    assert run["state"] == "success", airflow.tails()
    assert run["conf"] == conf
    assert run["end_date"] is not None
    assert json.loads((airflow.conf_dir / "r1.json").read_text()) == conf  # what the task received

    duplicate = trigger(airflow, api, "r1", {"reason": "again"})
    assert duplicate.status_code == 409, duplicate.text
    assert duplicate.json()["detail"]["reason"] == "Unique constraint violation"
    assert api.get(f"{airflow.api}/dags/{DAG_ID}/dagRuns/r1", timeout=30).json()["conf"] == conf  # untouched


def test_a_run_whose_task_raises_ends_failed(airflow, api):
    response = trigger(airflow, api, "r-fail", {"fail": True})
    assert response.status_code == 200, response.text
    run = wait_finished(airflow, api, "r-fail")
    assert run["state"] == "failed"
    assert json.loads((airflow.conf_dir / "r-fail.json").read_text()) == {"fail": True}


def test_requests_without_a_valid_token_are_refused(airflow):
    """No token: 401 "Not authenticated". A token that is not a valid JWT (bad signature, garbage):
    403 "Invalid JWT token" (an expired one would be 401 "Token Expired"). Wrong password: 401."""
    missing = requests.get(f"{airflow.api}/dags/{DAG_ID}", timeout=30)
    assert (missing.status_code, missing.json()) == (401, {"detail": "Not authenticated"})
    no_token = requests.post(f"{airflow.api}/dags/{DAG_ID}/dagRuns",
                             json={"dag_run_id": "r-anon", "logical_date": None, "conf": {}}, timeout=30)
    assert no_token.status_code == 401
    bad_token = requests.get(f"{airflow.api}/dags/{DAG_ID}", headers={"Authorization": "Bearer not-a-jwt"}, timeout=30)
    assert (bad_token.status_code, bad_token.json()) == (403, {"detail": "Invalid JWT token"})
    wrong_password = requests.post(f"{airflow.url}/auth/token",
                                   json={"username": airflow.username, "password": "wrong"}, timeout=30)
    assert (wrong_password.status_code, wrong_password.json()) == (401, {"detail": "Invalid credentials"})
