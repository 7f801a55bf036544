"""The real `modelwarden run` process against a real control plane, as the chart's ServiceAccount."""

import copy
import json
import re

import pytest
import requests

from tests.controlplane.support import wait_for as eventually

MD = {
    "apiVersion": "modelwarden.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "default"},
    "spec": {"model": "fraud", "stable": {"version": "1", "modelUri": "file:///m"}},
}
DP = {
    "apiVersion": "modelwarden.io/v1alpha1",
    "kind": "DriftPolicy",
    "metadata": {"name": "fraud-gate", "namespace": "default"},
    "spec": {"targetRef": {"name": "fraud"}, "performance": [{"metric": "accuracy", "min": 0.8}]},
}


def test_operator_sees_a_modeldeployment_and_shuts_down_cleanly(kube, operator_factory):
    operator = operator_factory("-A")
    kube.create("modeldeployments", MD)
    seen = kube.wait_for("modeldeployments", "fraud", lambda o: o.get("status", {}).get("observedGeneration") == 1)
    assert seen["status"]["phase"] == "Pending"
    assert seen["metadata"]["annotations"]["modelwarden.io/kopf-managed"] == "yes"
    assert requests.get(operator.liveness_url, timeout=2).json()["now"]
    assert operator.terminate() == 0
    assert "Operator is stopping" in operator.log()


def test_operator_registers_driftpolicies_and_follows_spec_updates(kube, operator_factory):
    operator_factory("-A")
    kube.create("driftpolicies", DP)
    # The policy loop is the only writer of a valid policy's status: no target, no evaluation.
    seen = kube.wait_for("driftpolicies", "fraud-gate", lambda o: o.get("status", {}).get("observedGeneration") == 1)
    ready = next(c for c in seen["status"]["conditions"] if c["type"] == "Ready")
    assert seen["status"]["phase"] == "Error" and ready["reason"] == "TargetNotFound" and "lastEvaluation" not in seen["status"]
    kube.patch("driftpolicies", "fraud-gate", {"spec": {"minSamples": 5000}})
    kube.wait_for("driftpolicies", "fraud-gate", lambda o: o["status"].get("observedGeneration") == 2)
    # Events are posted after the status write that decided them; the spec update adds none.
    eventually(lambda: [e["reason"] for e in kube.list("events") if e["involvedObject"].get("name") == "fraud-gate"], message="the Event")
    assert [e["reason"] for e in kube.list("events") if e["involvedObject"].get("name") == "fraud-gate"] == ["EvaluationError"]


def test_a_spec_that_slips_past_the_schema_is_a_permanent_invalidspec(kube, operator_factory):
    operator = operator_factory("-A")
    broken = copy.deepcopy(MD)
    del broken["spec"]["stable"]
    # The API server rejects it, naming the field ...
    with pytest.raises(requests.HTTPError) as rejected:
        kube.create("modeldeployments", broken)
    assert rejected.value.response.status_code == 422 and "spec.stable: Required value" in rejected.value.response.text
    # ... but an object stored under an older, looser CRD is still there after an upgrade: the
    # operator refuses it on its own.
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/modeldeployments.modelwarden.io"
    loose = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    kube._check(kube.session.patch(kube.url + crd, json=[{"op": "replace", "path": "/spec/versions/0/schema/openAPIV3Schema", "value": loose}],
                                   headers={"Content-Type": "application/json-patch+json"}))
    def created() -> bool:  # the API server serves the new schema a moment after the CRD changed
        try:
            return bool(kube.create("modeldeployments", broken))
        except requests.HTTPError:
            return False

    eventually(created, message="the loosened CRD served")
    failed = kube.wait_for("modeldeployments", "fraud", lambda o: o.get("status", {}).get("phase") == "Failed")
    condition = next(c for c in failed["status"]["conditions"] if c["type"] == "InvalidSpec")
    assert condition["status"] == "True" and "spec.stable" in condition["message"]
    assert "failed permanently" in operator.log()


def test_namespaced_operator_ignores_other_namespaces(kube, operator_factory):
    # As on a real cluster, the watched namespace exists before the operator starts.
    assert kube.get("namespaces", "ml", namespace=None)
    operator_factory("-n", "ml")
    kube.create("modeldeployments", MD)  # in "default"
    kube.create("modeldeployments", {**MD, "metadata": {"name": "fraud", "namespace": "ml"}})
    kube.wait_for("modeldeployments", "fraud", lambda o: "status" in o, namespace="ml")
    assert "status" not in kube.get("modeldeployments", "fraud", "default")


def test_a_window_shorter_than_four_scrapes_is_invalidspec_until_it_is_long_enough(kube, operator_factory):
    operator_factory("-A", "--scrape-interval", "30s")
    kube.create("driftpolicies", {**DP, "spec": {**DP["spec"], "interval": "30s", "window": "1m"}})
    invalid = kube.wait_for("driftpolicies", "fraud-gate", lambda o: o.get("status", {}).get("phase") == "Error")
    condition = next(c for c in invalid["status"]["conditions"] if c["type"] == "InvalidSpec")
    assert condition["status"] == "True"
    assert "spec.window: 1m is shorter than 4 scrape intervals (4 × 30s, the operator's --scrape-interval)" in condition["message"]
    assert "lastEvaluation" not in invalid["status"]
    # The policy loop took it back once the window spans four scrapes: its own status, InvalidSpec cleared.
    kube.patch("driftpolicies", "fraud-gate", {"spec": {"window": "2m"}})
    valid = kube.wait_for("driftpolicies", "fraud-gate", lambda o: o["status"].get("observedGeneration") == 2)
    conditions = {c["type"]: c for c in valid["status"]["conditions"]}
    assert conditions["InvalidSpec"]["status"] == "False" and conditions["Ready"]["reason"] == "TargetNotFound"


def test_json_logs_one_object_per_line_without_routine_successes(kube, operator_factory):
    operator = operator_factory("-A", "--log-format", "json", verbose=False)  # INFO: what a cluster's log shows
    kube.create("modeldeployments", MD)
    kube.wait_for("modeldeployments", "fraud", lambda o: o.get("status", {}).get("observedGeneration") == 1)
    assert operator.terminate() == 0
    lines = [line for line in operator.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [r["message"] for r in records]
    assert any(m.startswith("starting: ") for m in messages) and "Operator is stopping." in " ".join(messages)
    assert {"timestamp", "severity", "message"} <= set(records[0]), records[0]
    # Wake-ups and indexers ran on every watch event; their successes are DEBUG news only.
    assert not [m for m in messages if re.fullmatch(r"(Indexer '\w+'|Handler 'wake_\w+') succeeded\.", m)], messages
