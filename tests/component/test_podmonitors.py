"""The PodMonitor per ModelDeployment on a real control plane: created when the cluster has the
prometheus-operator's CRD (tests/realcluster.py installs it), selecting exactly the model-server
pods, owned for the garbage collector, kept as built; none with `--pod-monitors=off` (which needs
no RBAC on PodMonitors at all); none, and no error, without the CRD."""

from __future__ import annotations

import copy
import re

from tests.controlplane.support import wait_for as eventually
from tests.validation import validate_any

FAST = {"MODELWARDEN_RECONCILE_INTERVAL": "0.3"}
MONITORING = "monitoring.coreos.com/v1"
CRD_URL = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/podmonitors.monitoring.coreos.com"
MD = {
    "apiVersion": "modelwarden.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "default"},
    "spec": {
        "model": "fraud",
        "stable": {"version": "7", "modelUri": "file:///m/7", "replicas": 2},
        "canary": {"version": "8", "modelUri": "file:///m/8", "steps": [{"weight": 10, "pause": "10m"}]},
        "shadow": {"version": "9", "modelUri": "file:///m/9", "mirrorPercent": 25},
        "traffic": {"router": "istio"},
    },
}
# What must never show in the operator's log (kopf logs failed handlers at ERROR with a traceback).
TROUBLE = re.compile(r"\bERROR\b|Traceback|reconcile failed|is not served by the cluster")


def selector_string(selector: dict) -> str:
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] == "In", expression
        terms.append(f"{expression['key']} in ({','.join(expression['values'])})")
    return ",".join(terms)


def pod_monitors(kube, **params) -> list[dict]:
    return kube.list("podmonitors", api_version=MONITORING, **params)


def condition(md: dict, type_: str) -> dict:
    return next((c for c in (md.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def pods_of(kube, deployment: str) -> set[str]:
    """The pods the real ReplicaSet controller made for one Deployment."""
    sets = {r["metadata"]["name"] for r in kube.list("replicasets")
            if any(o["name"] == deployment for o in r["metadata"].get("ownerReferences", []))}
    return {p["metadata"]["name"] for p in kube.list("pods")
            if any(o["name"] in sets for o in p["metadata"].get("ownerReferences", []))}



def more_reconciles(operator, name: str, count: int = 5) -> None:
    """Wait for `count` more decisions on default/NAME in the operator's log (counted, not timed)."""
    def decided() -> int:
        return operator.log().count(f"default/{name} decided (")

    before = decided()
    eventually(lambda: decided() >= before + count, message=f"{count} more reconciles of {name}")

def test_a_modeldeployment_gets_its_pod_monitor_which_goes_with_it(kube, kubelet, operator_factory):
    # The label a kube-prometheus-stack Prometheus selects PodMonitors by (the chart's podMonitors.labels).
    operator = operator_factory("-A", "--pod-monitor-labels", "release=kube-prometheus-stack", env=FAST)
    kube.create("modeldeployments", copy.deepcopy(MD))
    other = copy.deepcopy(MD)
    other["metadata"]["name"] = "fraud2"
    other["spec"] = {"model": "fraud", "stable": {"version": "1", "modelUri": "file:///m/1"}}  # same model, other owner
    kube.create("modeldeployments", other)
    md = kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status") or {}).get("canary", {}).get("ready"), timeout=60)
    kube.wait_for("modeldeployments", "fraud2", lambda o: condition(o, "Ready").get("status") == "True", timeout=60)
    monitor = kube.wait_for("podmonitors", "fraud", lambda o: True, api_version=MONITORING, timeout=90)
    assert validate_any({k: v for k, v in monitor.items() if k != "status"}) == []
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [(o["kind"], o["name"], o["uid"], o["controller"]) for o in monitor["metadata"]["ownerReferences"]] == [
        ("ModelDeployment", "fraud", md["metadata"]["uid"], True)]
    assert sorted(m["metadata"]["name"] for m in pod_monitors(kube)) == ["fraud", "fraud2"]

    # The API server's own label selection: exactly the pods of fraud's three tracks.
    selected = {p["metadata"]["name"] for p in kube.list("pods", labelSelector=selector_string(monitor["spec"]["selector"]))}
    tracks = {track: pods_of(kube, f"fraud-{track}") for track in ("stable", "canary", "shadow")}
    assert all(tracks.values()), tracks
    assert selected == set().union(*tracks.values())
    assert not selected & pods_of(kube, "fraud2-stable")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    for pod in kube.list("pods", labelSelector=selector_string(monitor["spec"]["selector"])):
        (port,) = [p for p in pod["spec"]["containers"][0]["ports"] if p.get("name") == endpoint["port"]]
        assert port["containerPort"] == 8080

    # Applied only when it differs: reconciles every 0.3 s leave it alone...
    version = monitor["metadata"]["resourceVersion"]
    more_reconciles(operator, "fraud")
    assert kube.get("podmonitors", "fraud", api_version=MONITORING)["metadata"]["resourceVersion"] == version
    # ... and put back what someone changed.
    kube.patch("podmonitors", "fraud", {"spec": {"podMetricsEndpoints": [{"port": "other", "path": "/x"}]}}, api_version=MONITORING)
    kube.wait_for("podmonitors", "fraud", lambda o: o["spec"]["podMetricsEndpoints"] == monitor["spec"]["podMetricsEndpoints"],
                  api_version=MONITORING, timeout=30)

    # Deleting the ModelDeployment: the garbage collector deletes its PodMonitor (not the other one).
    kube.delete("modeldeployments", "fraud")
    kube.wait_gone("modeldeployments", "fraud", timeout=60)
    eventually(lambda: [m["metadata"]["name"] for m in pod_monitors(kube)] == ["fraud2"], message="only fraud2's PodMonitor left")
    assert "a PodMonitor per ModelDeployment" in operator.log()
    assert not TROUBLE.findall(operator.log()), TROUBLE.findall(operator.log())[:5]


def test_with_pod_monitors_off_there_are_none_and_no_access_is_needed(cluster, kube, kubelet, operator_factory):
    # Take the PodMonitor rule away: with `off` the operator must not even watch them (a refused
    # request would fail the test through the operator_factory fixture).
    from tests.realcluster import chart_rbac

    role = next(doc for doc in chart_rbac() if doc["kind"] == "ClusterRole" and any(
        "podmonitors" in rule.get("resources", []) for rule in doc["rules"]))
    url = f"{cluster.url}/apis/rbac.authorization.k8s.io/v1/clusterroles/{role['metadata']['name']}"
    current = kube._check(kube.session.get(url))
    kube._check(kube.session.put(url, json={**current, "rules": [
        rule for rule in current["rules"] if "podmonitors" not in rule.get("resources", [])]}))
    operator = operator_factory("-A", env={**FAST, "MODELWARDEN_POD_MONITORS": "off"})
    kube.create("modeldeployments", copy.deepcopy(MD))
    kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status") or {}).get("canary", {}).get("ready"), timeout=60)
    more_reconciles(operator, "fraud")
    assert pod_monitors(kube) == []
    log = operator.log()
    assert "PodMonitors off" in log and "podmonitors" not in log.lower().replace("podmonitors off", "")
    assert not TROUBLE.findall(log), TROUBLE.findall(log)[:5]


def test_without_the_crd_a_modeldeployment_becomes_ready_with_no_pod_monitor_and_no_error(cluster, kube, kubelet,
                                                                                         operator_factory):
    response = kube.session.delete(kube.url + CRD_URL)
    assert response.ok, response.text
    eventually(lambda: kube.session.get(kube.url + CRD_URL).status_code == 404 and "podmonitors" not in kube.session.get(
        f"{kube.url}/apis/{MONITORING}").text, message="the PodMonitor CRD gone")
    operator = operator_factory("-A", env=FAST)
    body = copy.deepcopy(MD)
    body["spec"] = {"model": "fraud", "stable": {"version": "7", "modelUri": "file:///m/7", "replicas": 2}}
    kube.create("modeldeployments", body)
    md = kube.wait_for("modeldeployments", "fraud", lambda o: condition(o, "Ready").get("status") == "True", timeout=60)
    assert md["status"]["phase"] == "Stable"
    more_reconciles(operator, "fraud")
    md = kube.get("modeldeployments", "fraud")
    assert condition(md, "TrafficReady")["status"] == "True", condition(md, "TrafficReady")  # no apply problem reported
    assert kube.session.get(f"{kube.url}/apis/{MONITORING}/podmonitors").status_code == 404
    log = operator.log()
    assert "does not serve PodMonitor" in log
    assert not TROUBLE.findall(log), TROUBLE.findall(log)[:5]
