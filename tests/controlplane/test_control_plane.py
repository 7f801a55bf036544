"""A real kube-apiserver accepts our CRDs, validates manifests like a cluster, collects garbage and
enforces RBAC for ServiceAccount tokens (the foundation for running the operator against it)."""

from __future__ import annotations

import json
import re
import uuid

import pytest
import yaml

from tests.controlplane.support import KUBE_BIN, ROOT, SHARED_SCHEMAS, wait_for

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_server_reports_its_version(control_plane):
    response = control_plane.session().get(f"{control_plane.url}/version", timeout=5)
    assert response.status_code == 200
    version = response.json()
    assert version["gitVersion"] == control_plane.version
    assert re.fullmatch(r"v1\.\d+\.\d+", control_plane.version), version
    pinned = KUBE_BIN.parent / "VERSION"
    if pinned.exists():
        assert control_plane.version == pinned.read_text().strip()
    assert version["major"] == "1" and version["minor"] == control_plane.version.split(".")[1]


def test_our_crds_apply_server_side_and_are_established(control_plane, kubectl):
    crds = control_plane.crds
    assert sorted(crds) == ["driftpolicies.modelwarden.io", "modeldeployments.modelwarden.io"]
    for name in crds:
        crd = json.loads(kubectl("get", f"crd/{name}", "-o", "json", "--show-managed-fields"))
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions
        managers = {entry["manager"] for entry in crd["metadata"]["managedFields"]}
        assert "modelwarden-tests" in managers
    assert "modeldeployments" in kubectl("api-resources", "--api-group=modelwarden.io", "-o", "name")


def test_third_party_crds_apply_and_are_established(control_plane):
    third_party_crds = control_plane.third_party_crds
    if not third_party_crds:
        pytest.skip(f"no third-party CRDs in {SHARED_SCHEMAS}")
    assert "httproutes.gateway.networking.k8s.io" in third_party_crds
    assert "virtualservices.networking.istio.io" in third_party_crds


# The invalid corpus and the examples against this API server: tests/component/test_corpus_admission.py
# (one control plane for all of them, strict field validation, and the `# stage: operator` cases).


def test_garbage_collector_deletes_what_a_deleted_model_deployment_owned(control_plane):
    session = control_plane.session()
    base = control_plane.url
    model = next(doc for path in EXAMPLES for doc in yaml.safe_load_all(path.read_text())
                 if doc and doc["kind"] == "ModelDeployment")
    name = f"gc-{uuid.uuid4().hex[:6]}"
    model["metadata"] = {"name": name, "namespace": "ml"}
    created = session.post(f"{base}/apis/modelwarden.io/v1alpha1/namespaces/ml/modeldeployments", json=model,
                           timeout=10)
    assert created.status_code == 201, created.text
    owner = created.json()["metadata"]
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{name}-owned", "namespace": "ml", "ownerReferences": [{
            "apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment", "name": name,
            "uid": owner["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "data": {"owned": "yes"},
    }
    owned = session.post(f"{base}/api/v1/namespaces/ml/configmaps", json=config_map, timeout=10)
    assert owned.status_code == 201, owned.text
    config_map_url = f"{base}/api/v1/namespaces/ml/configmaps/{name}-owned"

    deleted = session.delete(f"{base}/apis/modelwarden.io/v1alpha1/namespaces/ml/modeldeployments/{name}",
                             json={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
                             timeout=10)
    assert deleted.status_code == 200, deleted.text
    wait_for(lambda: session.get(config_map_url, timeout=5).status_code == 404, timeout=60,
             message="the garbage collector deleting the owned ConfigMap")


def test_service_account_token_authenticates_and_gets_only_its_rbac(control_plane, kubectl, tmp_path):
    namespace = f"sa-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=a=b")
    sa = kubectl.as_user(control_plane.service_account_kubeconfig(namespace, "reader", tmp_path / "sa.kubeconfig"))

    who = json.loads(sa("auth", "whoami", "-o", "json"))
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"

    denied = sa.run("get", "configmap", "settings", "-n", namespace)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr and f"system:serviceaccount:{namespace}:reader" in denied.stderr
    assert sa.run("auth", "can-i", "list", "configmaps", "-n", namespace).stdout.strip() == "no"

    # The same request over HTTP: 403, not 401 (authenticated, not authorized).
    token = control_plane.service_account_token(namespace, "reader")
    response = control_plane.session()
    response.cert = None
    answer = response.get(f"{control_plane.url}/api/v1/namespaces/{namespace}/configmaps/settings",
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 403, answer.text
    assert answer.json()["reason"] == "Forbidden"

    # Granted by a Role and RoleBinding, the same kubeconfig reads it.
    kubectl("create", "role", "read-configmaps", "-n", namespace, "--verb=get,list", "--resource=configmaps")
    kubectl("create", "rolebinding", "reader-reads", "-n", namespace, "--role=read-configmaps",
            f"--serviceaccount={namespace}:reader")
    data = wait_for(lambda: sa.run("get", "configmap", "settings", "-n", namespace, "-o", "json").stdout,
                    timeout=30, message="the RoleBinding taking effect")
    assert json.loads(data)["data"] == {"a": "b"}
    assert sa.run("delete", "configmap", "settings", "-n", namespace).returncode != 0


def test_a_port_taken_before_the_start_costs_a_retry_not_a_failure(tmp_path):
    """Another process may bind a port between free_port() and etcd or kube-apiserver binding it
    (a busy machine, tests in parallel): the control plane starts on fresh ports instead."""
    import socket

    from modelwarden.sandbox.controlplane import ControlPlane

    plane = ControlPlane(bin_dir=KUBE_BIN, workdir=tmp_path / "plane", with_controller_manager=False,
                         etcd_data_dir=tmp_path / "etcd")
    thief = socket.socket()
    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    thief.bind(("127.0.0.1", plane.etcd_port))
    thief.listen()
    taken = plane.etcd_port
    try:
        plane.start()
        assert plane.etcd_port != taken
        assert plane.session().get(f"{plane.url}/version", timeout=10).json()["gitVersion"].startswith("v1.")
    finally:
        plane.stop()
        thief.close()
