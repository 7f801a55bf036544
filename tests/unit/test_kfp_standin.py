"""The KFP stand-in (tests/kfp_standin.py) is honest: it accepts what KFP's published spec accepts, refuses
and records what it does not, and never sends a response that violates the spec. In-process, loopback only."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.kfp_standin import KfpStandIn

RUNS = "/apis/v2beta1/runs"
SPEC_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "kfp" / "run.swagger.json"


def run_body(name: str = "nightly-train", **extra) -> dict:
    return {"display_name": name,
            "pipeline_version_reference": {"pipeline_id": "pipe-1", "pipeline_version_id": "ver-1"},
            "runtime_config": {"parameters": {"model_uri": "s3://models/m", "epochs": 3}}, **extra}


def by_name(name: str) -> str:
    return json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]})


@pytest.fixture
def kfp() -> Iterator[KfpStandIn]:
    with KfpStandIn() as standin:
        yield standin


def test_spec_fixture_is_the_published_blob():
    data = SPEC_FILE.read_bytes()
    assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == "32b4a41caf22bfae84e9781da0f4a552523fa158"


def test_create_get_list_round_trip(kfp):
    body = run_body(experiment_id="exp-1", service_account="pipeline-runner", description="retrain")
    created = requests.post(kfp.url + RUNS, json=body)
    assert created.status_code == 200, created.text
    run = created.json()
    assert run["state"] == "PENDING" and run["display_name"] == "nightly-train" and run["experiment_id"] == "exp-1"
    assert run["pipeline_version_reference"] == body["pipeline_version_reference"]
    assert run["runtime_config"] == body["runtime_config"] and run["service_account"] == "pipeline-runner"
    assert run["created_at"].endswith("Z") and run["finished_at"] == "1970-01-01T00:00:00Z"
    assert kfp.runs[run["run_id"]] == run

    assert requests.get(f"{kfp.url}{RUNS}/{run['run_id']}").json() == run
    kfp.set_state(run["run_id"], "RUNNING")
    kfp.set_state(run["run_id"], "SUCCEEDED")
    got = requests.get(f"{kfp.url}{RUNS}/{run['run_id']}").json()
    assert got["state"] == "SUCCEEDED" and got["finished_at"] != "1970-01-01T00:00:00Z"
    assert [s["state"] for s in got["state_history"]] == ["PENDING", "RUNNING", "SUCCEEDED"]

    listed = requests.get(kfp.url + RUNS, params={"experiment_id": "exp-1", "page_size": 10}).json()
    assert listed == {"runs": [got], "total_size": 1}
    assert requests.get(kfp.url + RUNS, params={"experiment_id": "other"}).json() == {}  # unset fields are omitted
    assert [(m, p) for m, p, _, _ in kfp.requests] == [("POST", RUNS), ("GET", f"{RUNS}/{run['run_id']}"),
                                                       ("GET", f"{RUNS}/{run['run_id']}"), ("GET", RUNS), ("GET", RUNS)]
    assert kfp.requests[0][3] == body
    assert kfp.invalid == [] and kfp.bugs == []


def test_inline_pipeline_spec_and_default_experiment(kfp):
    run = requests.post(kfp.url + RUNS, json={"display_name": "adhoc", "pipeline_spec": {"pipelineInfo": {"name": "p"}}}).json()
    assert run["experiment_id"] == kfp.default_experiment_id and run["pipeline_spec"] == {"pipelineInfo": {"name": "p"}}
    assert "runtime_config" not in run and "pipeline_version_reference" not in run


@pytest.mark.parametrize("bad", [
    {"runtime_config": {"parameters": ["epochs", 3]}},  # parameters must be a JSON object (Struct)
    {"state": "DONE"},  # not a V2beta1RuntimeState
    {"display_name": 7},
    {"pipeline_version_reference": {"pipeline_id": ["pipe-1"]}},
    {"labels": {"team": "ml"}},  # not a Run field: protojson refuses unknown fields
    {"displayName": "camel"},  # only the spec's snake_case names
    {"created_at": "yesterday"},
])
def test_invalid_bodies_are_refused_and_recorded(kfp, bad):
    answer = requests.post(kfp.url + RUNS, json={**run_body(), **bad})
    assert answer.status_code == 400 and answer.json()["code"] == 3, answer.text
    assert kfp.runs == {} and len(kfp.invalid) == 1 and kfp.invalid[0]["status"] == 400


def test_body_that_is_not_json_is_refused(kfp):
    answer = requests.post(kfp.url + RUNS, data="display_name=x", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and kfp.invalid


@pytest.mark.parametrize("body, status, code", [
    ({"pipeline_spec": {"a": 1}}, 500, 13),  # no display_name: the real server answers Internal (toModelRun)
    ({"display_name": "x"}, 500, 13),  # no pipeline source (fetchTemplateFromPipelineSpec)
    ({"display_name": "x", "pipeline_version_reference": {}}, 500, 13),
    ({"display_name": "x", "pipeline_version_id": "ver-1"}, 500, 13),  # deprecated field is ignored by the server
    ({**run_body(), "pipeline_spec": {"a": 1}}, 400, 3),  # pipeline_source is a oneof
    ({**run_body(), "plugins_output": {}}, 409, 10),  # server-owned
])
def test_server_side_required_fields(kfp, body, status, code):
    answer = requests.post(kfp.url + RUNS, json=body)
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert kfp.runs == {} and len(kfp.invalid) == 1


def test_pipeline_id_alone_is_enough(kfp):
    run = requests.post(kfp.url + RUNS, json={"display_name": "x", "pipeline_version_reference": {"pipeline_id": "p"}}).json()
    assert run["pipeline_version_reference"]["pipeline_id"] == "p" and run["pipeline_version_reference"]["pipeline_version_id"]


def test_filter_by_display_name(kfp):
    ids = {name: requests.post(kfp.url + RUNS, json=run_body(name)).json()["run_id"] for name in ("alpha", "beta")}
    again = requests.post(kfp.url + RUNS, json=run_body("alpha")).json()["run_id"]
    alpha = requests.get(kfp.url + RUNS, params={"filter": by_name("alpha")}).json()
    assert sorted(r["run_id"] for r in alpha["runs"]) == sorted([ids["alpha"], again]) and alpha["total_size"] == 2
    beta = requests.get(kfp.url + RUNS, params={"filter": by_name("beta")}).json()
    assert [r["run_id"] for r in beta["runs"]] == [ids["beta"]]
    assert requests.get(kfp.url + RUNS, params={"filter": by_name("gamma")}).json() == {}
    either = json.dumps({"predicates": [{"key": "display_name", "operation": "IN", "string_values": {"values": ["beta", "x"]}}]})
    assert requests.get(kfp.url + RUNS, params={"filter": either}).json()["total_size"] == 1
    camel = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "stringValue": "beta"}]})
    assert requests.get(kfp.url + RUNS, params={"filter": camel}).json()["total_size"] == 1  # server renames these
    assert kfp.invalid == []


def test_filter_is_url_decoded_twice(kfp):
    """parseAPIFilter QueryUnescapes the already-decoded parameter: a '+' sent once-encoded arrives as ' '."""
    requests.post(kfp.url + RUNS, json=run_body("a+b"))
    assert requests.get(kfp.url + RUNS, params={"filter": by_name("a+b")}).json() == {}
    assert requests.get(kfp.url + RUNS, params={"filter": urllib.parse.quote(by_name("a+b"))}).json()["total_size"] == 1


@pytest.mark.parametrize("filter_", [
    '{"predicates": [{"key": "display_name", "operation": "EQUAL", "string_value": "a"}]}',  # not an Operation
    '{"predicates": [{"key": "display_name", "op": "EQUALS", "string_value": "a"}]}',  # v1beta1 spelling
    '{"predicates": [{"key": "colour", "operation": "EQUALS", "string_value": "a"}]}',  # not a run field
    '{"predicates": [{"key": "display_name", "operation": "EQUALS"}]}',  # no value
    '{"predicates": [{"key": "display_name", "operation": "IN", "string_value": "a"}]}',  # IN needs a list
    '{"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": "a", "int_value": 1}]}',
    'display_name=a',
])
def test_bad_filters_are_refused(kfp, filter_):
    answer = requests.get(kfp.url + RUNS, params={"filter": filter_})
    assert answer.status_code == 400 and answer.json()["code"] == 3, answer.text
    assert len(kfp.invalid) == 1


def test_paging_and_query_parameters(kfp):
    for i in range(3):
        requests.post(kfp.url + RUNS, json=run_body(f"run-{i}"))
    first = requests.get(kfp.url + RUNS, params={"page_size": 2, "sort_by": "display_name desc"}).json()
    assert [r["display_name"] for r in first["runs"]] == ["run-2", "run-1"] and first["total_size"] == 3
    rest = requests.get(kfp.url + RUNS, params={"page_size": 2, "page_token": first["next_page_token"]}).json()
    assert [r["display_name"] for r in rest["runs"]] == ["run-0"] and "next_page_token" not in rest
    assert kfp.invalid == []
    for params in ({"page_size": "two"}, {"page_size": -1}, {"pageSize": 2}, {"page_token": "nonsense"},
                   {"sort_by": "colour"}, {"page_token": first["next_page_token"], "sort_by": "display_name"}):
        assert requests.get(kfp.url + RUNS, params=params).status_code == 400, params
    assert len(kfp.invalid) == 6


def test_routing(kfp):
    missing = requests.get(kfp.url + "/apis/v2beta1/run")
    assert (missing.status_code, missing.json()) == (404, {"code": 5, "message": "Not Found"})
    assert requests.put(kfp.url + RUNS).json()["code"] == 12  # grpc-gateway: 501 "Method Not Allowed"
    assert requests.post(f"{kfp.url}{RUNS}/abc:terminate").status_code == 501  # in the spec, not in the stand-in
    assert len(kfp.invalid) == 3
    unknown = requests.get(f"{kfp.url}{RUNS}/no-such-run")
    assert unknown.status_code == 404 and unknown.json()["details"][0]["message"] == "Run no-such-run not found"
    assert len(kfp.invalid) == 3  # asking for a run that does not exist is not a client bug


def test_bearer_token():
    with KfpStandIn(token="s3cret") as kfp:
        assert requests.get(kfp.url + RUNS).status_code == 401
        assert requests.get(kfp.url + RUNS, headers={"Authorization": "Bearer wrong"}).json()["code"] == 16
        assert requests.get(kfp.url + RUNS, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert [i["status"] for i in kfp.invalid] == [401, 401]


def test_fail_next(kfp):
    kfp.fail_next(2)
    kfp.fail_next(1, status=500)
    answers = [requests.post(kfp.url + RUNS, json=run_body()) for _ in range(4)]
    assert [a.status_code for a in answers] == [503, 503, 500, 200]
    assert answers[0].json()["code"] == 14 and len(kfp.runs) == 1 and kfp.invalid == []


def test_set_state_accepts_only_spec_states(kfp):
    run_id = requests.post(kfp.url + RUNS, json=run_body()).json()["run_id"]
    with pytest.raises(ValueError):
        kfp.set_state(run_id, "DONE")
    kfp.set_state(run_id, "FAILED", error={"code": 13, "message": "trainer exited 1"})
    got = requests.get(f"{kfp.url}{RUNS}/{run_id}").json()
    assert got["state_history"][-1]["error"]["message"] == "trainer exited 1" and "error" not in got


def test_a_response_that_breaks_the_spec_fails_the_test():
    kfp = KfpStandIn().start()
    run_id = requests.post(kfp.url + RUNS, json=run_body()).json()["run_id"]
    kfp.runs[run_id]["state"] = "DONE"  # corrupt the stand-in's own state
    assert requests.get(f"{kfp.url}{RUNS}/{run_id}").status_code == 500
    with pytest.raises(AssertionError, match="DONE"):
        kfp.stop()
