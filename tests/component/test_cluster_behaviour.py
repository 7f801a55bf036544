"""What a cluster user sees of the operator and what the cluster does with its objects, on a real
control plane: kubectl's printer columns and `kubectl wait` on the conditions the operator writes,
garbage collection of everything a deleted ModelDeployment owned, and what kopf's finalizer is
(and is not) for."""

from __future__ import annotations

import copy
import re

import yaml

from tests.controlplane.support import Kubectl, find_kubectl
from tests.controlplane.support import wait_for as eventually

FAST = {"MODELWARDEN_RECONCILE_INTERVAL": "0.3", "MODELWARDEN_POLICY_TICK": "0.2"}
MANAGED = "app.kubernetes.io/managed-by=modelwarden"
FINALIZER = "modelwarden.io/finalizer"
MD = {
    "apiVersion": "modelwarden.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "default"},
    "spec": {
        "model": "fraud",
        "stable": {"version": "7", "modelUri": "file:///m/7"},
        "canary": {"version": "8", "modelUri": "file:///m/8", "steps": [{"weight": 10, "pause": "10m"}]},
        "shadow": {"version": "9", "modelUri": "file:///m/9", "mirrorPercent": 25},
        "traffic": {"router": "istio"},
    },
}
# Its Prometheus does not answer: the policy reports an Error and never acts.
DP = {
    "apiVersion": "modelwarden.io/v1alpha1",
    "kind": "DriftPolicy",
    "metadata": {"name": "gate", "namespace": "default"},
    "spec": {"targetRef": {"name": "fraud"}, "track": "canary", "interval": "1s", "window": "1m",
             "checks": [{"name": "errors", "query": "sum(errors{ {{ selector }} })", "max": 1}],
             "prometheus": {"url": "http://127.0.0.1:9", "timeout": "1s"}},
}


def children(kube) -> dict[str, list[str]]:
    return {
        "deployments": sorted(d["metadata"]["name"] for d in kube.list("deployments", labelSelector=MANAGED)),
        "services": sorted(s["metadata"]["name"] for s in kube.list("services", labelSelector=MANAGED)),
        "virtualservices": sorted(v["metadata"]["name"] for v in kube.list("virtualservices", api_version="networking.istio.io/v1")),
    }


ALL_CHILDREN = {
    "deployments": ["fraud-canary", "fraud-shadow", "fraud-stable"],
    "services": ["fraud", "fraud-canary", "fraud-shadow", "fraud-stable"],
    "virtualservices": ["fraud"],
}
NO_CHILDREN = {"deployments": [], "services": [], "virtualservices": []}


def wait_children(kube, wanted: dict[str, list[str]]) -> None:
    eventually(lambda: children(kube) == wanted, message=f"children {wanted}")


def test_kubectl_shows_the_printer_columns_and_waits_for_the_operators_conditions(cluster, kube, kubelet, operator_factory, tmp_path):
    kubectl = Kubectl(find_kubectl(), cluster.kubeconfig_path, tmp_path / "kubectl-cache")
    operator_factory("-A", env=FAST)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([MD, DP]))
    kubectl("wait", "--for=condition=Ready", "mdep/fraud", "--timeout=90s", timeout=120)
    kubectl("wait", "--for=jsonpath={.status.phase}=Progressing", "mdep/fraud", "--timeout=90s", timeout=120)
    kubectl("wait", "--for=condition=Ready=False", "dpol/gate", "--timeout=90s", timeout=120)
    kubectl("wait", "--for=jsonpath={.status.phase}=Error", "dpol/gate", "--timeout=90s", timeout=120)
    kubectl("wait", "--for=jsonpath={.status.verdict}=Error", "mdep/fraud", "--timeout=90s", timeout=120)

    tables = kubectl("get", "mdep,dpol").split("\n\n")
    mdep, dpol = ([line.split() for line in table.strip().splitlines()] for table in tables)
    assert mdep[0] == ["NAME", "READY", "PHASE", "STABLE", "CANARY", "WEIGHT", "STEP", "VERDICT", "SPECBEHIND", "AGE"]
    assert mdep[1][:9] == ["modeldeployment.modelwarden.io/fraud", "True", "Progressing", "7", "8", "10", "1/1", "Error", "False"]
    assert dpol[0] == ["NAME", "TARGET", "TRACK", "PHASE", "VERDICT", "FAILURES", "AGE"]
    assert dpol[1][:5] == ["driftpolicy.modelwarden.io/gate", "fraud", "canary", "Error", "Error"]
    wide = [line.split() for line in kubectl("get", "mdep", "-o", "wide").strip().splitlines()]
    assert wide[0] == ["NAME", "READY", "PHASE", "STABLE", "CANARY", "WEIGHT", "STEP", "VERDICT", "SPECBEHIND", "CANDIDATE",
                       "MODEL", "AGE"]
    assert wide[1][8:10] == ["False", "fraud"]  # no candidate in flight: an empty cell
    # The category lists both kinds.
    assert sorted(kubectl("get", "modelwarden", "-o", "name").split()) == [
        "driftpolicy.modelwarden.io/gate", "modeldeployment.modelwarden.io/fraud"]


def test_deleting_a_modeldeployment_lets_the_garbage_collector_delete_what_it_owned(kube, kubelet, operator_factory):
    operator_factory("-A", env=FAST)
    kube.create("modeldeployments", copy.deepcopy(MD))
    kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status") or {}).get("canary", {}).get("ready"), timeout=60)
    wait_children(kube, ALL_CHILDREN)
    md = kube.get("modeldeployments", "fraud")
    # Every child names the ModelDeployment as its controlling owner, for the garbage collector.
    for plural in ("deployments", "services"):
        for child in kube.list(plural, labelSelector=MANAGED):
            assert [(o["kind"], o["uid"], o["controller"]) for o in child["metadata"]["ownerReferences"]] == [
                ("ModelDeployment", md["metadata"]["uid"], True)]
    # kopf's finalizer is the only one: it is there because the reconcile loop is a kopf daemon
    # (kopf stops it before the object goes), not to delete children.
    assert md["metadata"]["finalizers"] == [FINALIZER]
    kube.delete("modeldeployments", "fraud")
    kube.wait_gone("modeldeployments", "fraud", timeout=60)
    wait_children(kube, NO_CHILDREN)


def test_without_the_operator_its_finalizer_holds_a_deletion_until_it_is_back(kube, kubelet, operator_factory):
    operator = operator_factory("-A", env=FAST)
    kube.create("modeldeployments", copy.deepcopy(MD))
    kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status") or {}).get("canary", {}).get("ready"), timeout=60)
    wait_children(kube, ALL_CHILDREN)
    operator.kill()
    kube.delete("modeldeployments", "fraud")
    held = kube.wait_for("modeldeployments", "fraud", lambda o: o["metadata"].get("deletionTimestamp"))
    assert held["metadata"]["finalizers"] == [FINALIZER]
    # The owner still exists (terminating): the garbage collector leaves its children alone.
    assert children(kube) == ALL_CHILDREN
    operator_factory("-A", env=FAST)  # the operator stops the daemon and releases its finalizer
    kube.wait_gone("modeldeployments", "fraud", timeout=60)
    wait_children(kube, NO_CHILDREN)


def test_a_verb_missing_from_the_chart_rbac_is_refused_and_shows(cluster, kube, kubelet, operator_factory):
    """What makes the chart's RBAC proven by every operator test: the operator runs as the chart's
    ServiceAccount, and the operator_factory fixture fails a test whose operator was refused."""
    from tests.realcluster import chart_rbac

    role = next(doc for doc in chart_rbac() if doc["kind"] == "ClusterRole" and any(
        "deployments" in rule.get("resources", []) for rule in doc["rules"]))
    without_services = copy.deepcopy(role)
    without_services["rules"] = [rule for rule in role["rules"] if "services" not in rule.get("resources", [])]
    url = f"{cluster.url}/apis/rbac.authorization.k8s.io/v1/clusterroles/{role['metadata']['name']}"
    kube._check(kube.session.put(url, json={**without_services, "metadata": kube._check(kube.session.get(url))["metadata"]}))
    operator = operator_factory("-A", env=FAST)
    operator.expects_forbidden = True
    kube.create("modeldeployments", copy.deepcopy(MD))
    eventually(lambda: FORBIDDEN_SERVICES.search(operator.log()), message="the refusal in the operator log")
    assert children(kube)["services"] == []


FORBIDDEN_SERVICES = re.compile(r"Forbidden.*services|services.*Forbidden|services.* is forbidden")
