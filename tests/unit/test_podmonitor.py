"""The PodMonitor of a ModelDeployment: the pure builder (valid for the prometheus-operator CRD,
selecting exactly its model-server pods), plan() wanting it or not, and when the operator wants it
(`--pod-monitors`, discovery)."""

from __future__ import annotations

import argparse
import json
import datetime

import pytest

from modelwarden.api.modeldeployment import ModelDeployment
from modelwarden.builders.podmonitor import metrics_port, pod_monitor
from modelwarden.builders.workloads import Owner
from modelwarden.controller.podmonitors import ERROR_RETRY_SECONDS, PodMonitorSupport
from modelwarden.kube.api import RouteApiUnavailable
from modelwarden.kube.apply import apply_children
from modelwarden.planning.plan import plan
from tests.validation import third_party_schemas, validate_any

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
OWNER = Owner(name="fraud", namespace="ml", uid="uid-1", model="fraud-model")
MD = {
    "apiVersion": "modelwarden.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "ml", "uid": "uid-1", "generation": 1},
    "spec": {
        "model": "fraud-model",
        "port": 9000,
        "stable": {"version": "7", "modelUri": "s3://models/7", "replicas": 2},
        "canary": {"version": "8", "modelUri": "s3://models/8", "steps": [{"weight": 10, "pause": "10m"}]},
        "shadow": {"version": "9", "modelUri": "s3://models/9", "mirrorPercent": 20},
        "traffic": {"router": "istio"},
    },
}


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A label selector's meaning (matchLabels and the `In`/`Exists` expressions the builder may use)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "Exists" and value is None:
            return False
    return True


def planned(body=MD, **kwargs):
    return plan(ModelDeployment.model_validate(body), {}, [], T0, **kwargs)


def test_the_schema_is_the_prometheus_operator_crd():
    assert ("monitoring.coreos.com/v1", "PodMonitor") in third_party_schemas()


def test_pod_monitor_is_valid_for_the_crd_and_owned_like_the_other_children():
    monitor = pod_monitor(OWNER, 8080)
    assert validate_any(monitor) == []
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    assert monitor["metadata"]["name"] == "fraud" and monitor["metadata"]["namespace"] == "ml"
    assert monitor["metadata"]["ownerReferences"] == [{"apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment",
                                                       "name": "fraud", "uid": "uid-1", "controller": True,
                                                       "blockOwnerDeletion": True}]
    # The labels the operator's index and a Prometheus' podMonitorSelector go by.
    assert monitor["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "modelwarden", "app.kubernetes.io/name": "fraud-model",
                                             "modelwarden.io/deployment": "fraud", "model": "fraud-model"}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint == {"port": "http", "path": "/metrics"}
    # Nothing that would rename or override the servers' own model/version/track labels, and no
    # other namespace than its own (Prometheus adds namespace and pod as target labels).
    assert set(monitor["spec"]) == {"selector", "podMetricsEndpoints"}


def test_it_selects_exactly_the_model_server_pods_of_every_track():
    result = planned(pod_monitors=True)
    (monitor,) = [c for c in result.children if c["kind"] == "PodMonitor"]
    assert validate_any(monitor) == []
    pods = {c["metadata"]["name"]: c["spec"]["template"] for c in result.children if c["kind"] == "Deployment"}
    assert set(pods) == {"fraud-stable", "fraud-canary", "fraud-shadow"}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for name, template in pods.items():
        assert selects(monitor["spec"]["selector"], template["metadata"]["labels"]), name
        # The endpoint's port is the server's port, by the name the pod gives it.
        (port,) = [p for p in template["spec"]["containers"][0]["ports"] if p["name"] == endpoint["port"]]
        assert port["containerPort"] == 9000
        assert template["metadata"]["annotations"]["prometheus.io/path"] == endpoint["path"]
    # Not another ModelDeployment's pods, nor a pod of this one without a track (e.g. someone's debug pod).
    other = {**pods["fraud-stable"]["metadata"]["labels"], "modelwarden.io/deployment": "fraud2"}
    assert not selects(monitor["spec"]["selector"], other)
    trackless = {k: v for k, v in pods["fraud-stable"]["metadata"]["labels"].items() if k != "track"}
    assert not selects(monitor["spec"]["selector"], trackless)


@pytest.mark.parametrize("template, expected", [
    (None, {"port": "http"}),
    ({"spec": {"containers": [{"name": "server", "image": "s:1"}]}}, {"port": "http"}),
    ({"spec": {"containers": [{"name": "server", "image": "s:1", "ports": [{"containerPort": 9000, "name": "web"}]}]}},
     {"port": "web"}),
    ({"spec": {"containers": [{"name": "server", "image": "s:1", "ports": [{"containerPort": 9000}]}]}},
     {"portNumber": 9000}),
    ({"spec": {"containers": [{"name": "server", "image": "s:1", "ports": [{"containerPort": 9100, "name": "debug"}]}]}},
     {"port": "http"}),
], ids=["default", "no-ports", "named", "unnamed", "other-port"])
def test_the_port_follows_what_the_pod_template_declares(template, expected):
    assert metrics_port(template, 9000) == expected
    body = {**MD, "spec": {**MD["spec"], **({"template": template} if template else {})}}
    (monitor,) = [c for c in planned(body, pod_monitors=True).children if c["kind"] == "PodMonitor"]
    assert validate_any(monitor) == []
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert {k: v for k, v in endpoint.items() if k != "path"} == expected
    stable = next(c for c in planned(body).children if c["metadata"]["name"] == "fraud-stable" and c["kind"] == "Deployment")
    ports = stable["spec"]["template"]["spec"]["containers"][0]["ports"]
    if "port" in expected:
        assert any(p.get("name") == expected["port"] and p["containerPort"] == 9000 for p in ports)
    else:
        assert any(p["containerPort"] == expected["portNumber"] for p in ports)


def test_plan_wants_a_pod_monitor_only_when_told():
    assert not [c for c in planned().children if c["kind"] == "PodMonitor"]
    kinds = [c["kind"] for c in planned(pod_monitors=True).children]
    assert kinds.count("PodMonitor") == 1 and kinds[-1] == "PodMonitor"  # applied after what serves traffic


# ---- when the operator wants PodMonitors --------------------------------------------------------

class FakeDiscovery:
    def __init__(self, answers):
        self.answers = list(answers)
        self.asked = 0

    def serves(self, api_version, kind):
        assert (api_version, kind) == ("monitoring.coreos.com/v1", "PodMonitor")
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_off_never_asks_discovery():
    kube = FakeDiscovery([True])
    support = PodMonitorSupport(kube, "off")
    assert support.wanted() is False and kube.asked == 0


def test_auto_asks_at_startup_then_rarely_and_notices_the_crd_coming_and_going():
    kube, clock = FakeDiscovery([False, False, True, False]), Clock()
    support = PodMonitorSupport(kube, "auto", clock=clock, recheck=300)
    assert support.check() is False and kube.asked == 1
    for _ in range(50):  # reconciles in between ask nothing
        assert support.wanted() is False
        clock.now += 5
    assert kube.asked == 1
    clock.now += 50  # 300 s after the first answer
    assert support.wanted() is False and kube.asked == 2
    clock.now += 300
    assert support.wanted() is True and kube.asked == 3  # the CRD was installed meanwhile
    clock.now += 299
    assert support.wanted() is True and kube.asked == 3
    clock.now += 1
    assert support.wanted() is False and kube.asked == 4  # and removed again


def test_a_failed_discovery_keeps_the_last_answer_and_asks_again_soon():
    kube, clock = FakeDiscovery([RuntimeError("503"), True, RuntimeError("503"), True]), Clock()
    support = PodMonitorSupport(kube, "auto", clock=clock, recheck=300)
    assert support.check() is None  # never answered: existing PodMonitors are left alone
    assert support.wanted() is None and kube.asked == 1
    clock.now += ERROR_RETRY_SECONDS
    assert support.wanted() is True and kube.asked == 2
    clock.now += 300
    assert support.wanted() is True and kube.asked == 3  # the failure changes nothing
    clock.now += ERROR_RETRY_SECONDS
    assert support.wanted() is True and kube.asked == 4


class RecordingApi:
    def __init__(self, unavailable=()):
        self.unavailable = set(unavailable)
        self.deleted = []

    def delete(self, api_version, kind, namespace, name):
        if kind in self.unavailable:
            raise RouteApiUnavailable(kind)
        self.deleted.append(f"{kind}/{name}")


def test_pruning_a_pod_monitor_whose_kind_is_gone_is_no_error():
    monitor = pod_monitor(OWNER, 8080)
    observed = {("monitoring.coreos.com/v1", "PodMonitor", "fraud"): monitor}
    api = RecordingApi(unavailable={"PodMonitor"})
    result = apply_children(api, [], observed, owner_uid="uid-1")
    assert result.deleted == [] and not result.unavailable and not result.conflicts
    api = RecordingApi()
    assert apply_children(api, [], observed, owner_uid="uid-1").deleted == ["PodMonitor/fraud"] == api.deleted


def test_a_refused_pod_monitor_is_reported_and_the_other_children_are_still_applied_and_pruned():
    """RBAC without podmonitors, or an admission webhook saying no: the rest of the reconcile goes on."""
    from kubernetes.dynamic.exceptions import ForbiddenError

    class Refusing(RecordingApi):
        def __init__(self):
            super().__init__()
            self.created = []

        def create(self, obj):
            if obj["kind"] == "PodMonitor":
                error = ForbiddenError(type("E", (), {"status": 403, "reason": "Forbidden", "body": json.dumps(
                    {"message": 'podmonitors is forbidden: User "system:serviceaccount:x:y" cannot create'}), "headers": {}})())
                raise error
            self.created.append(obj["metadata"]["name"])
            return {**obj, "metadata": {**obj["metadata"], "ownerReferences": [{"uid": "uid-1", "controller": True}]}}

    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fraud", "namespace": "ml"}, "spec": {}}
    stale = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fraud-old", "namespace": "ml",
                                                              "ownerReferences": [{"uid": "uid-1", "controller": True}]}}
    api = Refusing()
    result = apply_children(api, [pod_monitor(OWNER, 8080), service], {("v1", "Service", "fraud-old"): stale}, owner_uid="uid-1")
    assert api.created == ["fraud"] and api.deleted == ["Service/fraud-old"]
    assert len(result.refused) == 1 and result.refused[0].startswith("PodMonitor/fraud (403 Forbidden: podmonitors is forbidden")


# ---- the flag ------------------------------------------------------------------------------------

def parser():
    from modelwarden.commands.run import configure

    result = argparse.ArgumentParser()
    configure(result)
    return result


def test_the_flag_and_its_environment_variable(monkeypatch):
    from modelwarden.commands.run import build_config

    monkeypatch.delenv("MODELWARDEN_POD_MONITORS", raising=False)
    assert build_config(parser().parse_args(["-A"])).pod_monitors == "auto"
    assert build_config(parser().parse_args(["-A", "--pod-monitors=off"])).pod_monitors == "off"
    monkeypatch.setenv("MODELWARDEN_POD_MONITORS", "Off")
    assert build_config(parser().parse_args(["-A"])).pod_monitors == "off"
    assert build_config(parser().parse_args(["-A", "--pod-monitors", "auto"])).pod_monitors == "auto"


@pytest.mark.parametrize("args, env", [(["--pod-monitors=on"], None), ([], "yes")])
def test_other_values_are_refused(monkeypatch, capsys, args, env):
    if env is None:
        monkeypatch.delenv("MODELWARDEN_POD_MONITORS", raising=False)
    else:
        monkeypatch.setenv("MODELWARDEN_POD_MONITORS", env)
    with pytest.raises(SystemExit):
        parser().parse_args(["-A", *args])
    assert "--pod-monitors" in capsys.readouterr().err


def test_extra_labels_go_on_the_pod_monitor_and_never_replace_ours():
    from modelwarden.commands.run import label_pairs

    labels = label_pairs(" release=kube-prometheus-stack , team=ml,")
    assert labels == {"release": "kube-prometheus-stack", "team": "ml"}
    with pytest.raises(argparse.ArgumentTypeError):
        label_pairs("release")
    owner = Owner(name="fraud", namespace="ml", uid="u", model="fraud")
    monitor = pod_monitor(owner, 8080, None, {**labels, "app.kubernetes.io/managed-by": "someone-else"})
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modelwarden"
    assert validate_any(monitor) == []
