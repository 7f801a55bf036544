"""The API emulator behaves like an API server where kopf and the operator depend on it."""

import json
import threading

import pytest
import requests

MD = {
    "apiVersion": "modelwarden.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "default", "labels": {"team": "risk"}},
    "spec": {"model": "fraud", "stable": {"version": "1", "modelUri": "file:///m"}},
}


def test_create_fills_server_metadata(kube):
    created = kube.create("modeldeployments", MD)
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert meta["namespace"] == "default" and int(meta["resourceVersion"]) > 0


def test_duplicate_create_conflicts(kube):
    kube.create("modeldeployments", MD)
    with pytest.raises(requests.HTTPError, match="409"):
        kube.create("modeldeployments", MD)


def test_patch_bumps_resource_version_and_generation_only_for_spec(kube):
    rv0 = int(kube.create("modeldeployments", MD)["metadata"]["resourceVersion"])
    spec_patched = kube.patch("modeldeployments", "fraud", {"spec": {"port": 9000}})
    assert int(spec_patched["metadata"]["resourceVersion"]) > rv0
    assert spec_patched["metadata"]["generation"] == 2
    labelled = kube.patch("modeldeployments", "fraud", {"metadata": {"labels": {"x": "y"}}})
    assert labelled["metadata"]["generation"] == 2
    assert int(labelled["metadata"]["resourceVersion"]) > int(spec_patched["metadata"]["resourceVersion"])


def test_status_subresource_separates_spec_and_status_writes(kube):
    kube.create("modeldeployments", MD)
    main = kube.patch("modeldeployments", "fraud", {"spec": {"port": 9000}, "status": {"phase": "Stable"}})
    assert "status" not in main and main["spec"]["port"] == 9000
    status = kube.patch("modeldeployments", "fraud", {"spec": {"port": 1}, "status": {"phase": "Stable"}}, subresource="status")
    assert status["status"] == {"phase": "Stable"} and status["spec"]["port"] == 9000
    assert status["metadata"]["generation"] == 2


def test_failed_json_patch_test_is_422(kube):
    kube.create("modeldeployments", MD)
    ops = [{"op": "test", "path": "/spec/model", "value": "other"}, {"op": "replace", "path": "/spec/model", "value": "x"}]
    with pytest.raises(requests.HTTPError, match="422"):
        kube.patch("modeldeployments", "fraud", ops, content_type="application/json-patch+json")
    assert kube.get("modeldeployments", "fraud")["spec"]["model"] == "fraud"


def test_server_side_apply_creates_then_merges(kube):
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}}
    created = kube.patch("deployments", "d", body, content_type="application/apply-patch+yaml")
    assert created["metadata"]["uid"] and created["spec"]["replicas"] == 1
    updated = kube.patch("deployments", "d", {**body, "spec": {"replicas": 3}}, content_type="application/apply-patch+yaml")
    assert updated["spec"]["replicas"] == 3 and updated["metadata"]["uid"] == created["metadata"]["uid"]


def test_list_returns_current_resource_version_and_filters_labels(kube):
    kube.create("modeldeployments", MD)
    other = {**MD, "metadata": {"name": "other", "namespace": "default", "labels": {"team": "growth"}}}
    last = kube.create("modeldeployments", other)
    response = kube.session.get(f"{kube.url}/apis/modelwarden.io/v1alpha1/namespaces/default/modeldeployments",
                                params={"labelSelector": "team=risk"}).json()
    assert [i["metadata"]["name"] for i in response["items"]] == ["fraud"]
    assert response["metadata"]["resourceVersion"] == last["metadata"]["resourceVersion"]


def test_watch_from_a_version_skips_what_was_listed(kube):
    first = kube.create("modeldeployments", MD)
    since = first["metadata"]["resourceVersion"]
    events = []

    def watch():
        url = f"{kube.url}/apis/modelwarden.io/v1alpha1/namespaces/default/modeldeployments"
        with requests.get(url, params={"watch": "true", "resourceVersion": since}, stream=True, timeout=10) as response:
            for line in response.iter_lines():
                if line:
                    events.append(json.loads(line))
                    return

    thread = threading.Thread(target=watch)
    thread.start()
    kube.create("modeldeployments", {**MD, "metadata": {"name": "second", "namespace": "default"}})
    thread.join(10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "second")]


def test_deletion_waits_for_finalizers(kube):
    kube.create("modeldeployments", {**MD, "metadata": {**MD["metadata"], "finalizers": ["modelwarden.io/finalizer"]}})
    kube.delete("modeldeployments", "fraud")
    marked = kube.get("modeldeployments", "fraud")
    assert marked["metadata"]["deletionTimestamp"]
    kube.patch("modeldeployments", "fraud", {"metadata": {"finalizers": None}})
    assert kube.get("modeldeployments", "fraud") is None


def test_discovery_serves_our_crds_with_status_subresource(kube):
    resources = kube.session.get(f"{kube.url}/apis/modelwarden.io/v1alpha1").json()["resources"]
    names = {r["name"] for r in resources}
    assert {"modeldeployments", "modeldeployments/status", "driftpolicies", "driftpolicies/status"} <= names
    md = next(r for r in resources if r["name"] == "modeldeployments")
    assert md["kind"] == "ModelDeployment" and md["shortNames"] == ["mdep"] and md["namespaced"]


def test_namespaces_are_listed_and_created_on_first_use(kube):
    kube.create("modeldeployments", {**MD, "metadata": {"name": "fraud", "namespace": "ml"}})
    names = {n["metadata"]["name"] for n in kube.list("namespaces", namespace=None)}
    assert {"default", "ml"} <= names
    assert kube.get("namespaces", "ml", namespace=None)["status"]["phase"] == "Active"
