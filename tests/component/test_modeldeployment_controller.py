"""The real operator process drives ModelDeployments against a real control plane."""

import copy
import datetime
import re
import time

import pytest
import requests
import yaml

from tests.processes import free_port
from tests.validation import ROOT, validate_any

FAST = {"MODELWARDEN_RECONCILE_INTERVAL": "0.3"}
# The DriftPolicies of these tests are written by the test itself, playing the policy loop: the
# operator drives only the labelled ModelDeployments (--selector), so no evaluation of its own
# (against no Prometheus: an Error) ever overwrites a verdict a test has just set.
DRIVES = ("-A", "--selector", "e2e=driven")
MD = {
    "apiVersion": "modelwarden.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "default", "labels": {"e2e": "driven"}},
    "spec": {
        "model": "fraud",
        "stable": {"version": "7", "modelUri": "file:///m/7", "replicas": 2},
        "canary": {"version": "8", "modelUri": "file:///m/8", "replicas": 1,
                   "steps": [{"weight": 10, "pause": "1s"}, {"weight": 50, "pause": "1s"}]},
        "shadow": {"version": "9", "modelUri": "file:///m/9", "mirrorPercent": 25},
    },
}
ROUTERS = {
    "gatewayapi": ({"router": "gatewayapi", "gatewayapi": {"parentRefs": [{"name": "gw"}], "hostnames": ["fraud.example"]}},
                   "gateway.networking.k8s.io/v1", "httproutes"),
    "istio": ({"router": "istio"}, "networking.istio.io/v1", "virtualservices"),
    "replicas": ({"router": "replicas"}, None, None),
}


WINDOW = datetime.timedelta(seconds=1)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def stamp(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def policy(name, track, rollback=True):
    return {"apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": name, "namespace": "default"},
            "spec": {"targetRef": {"name": "fraud"}, "track": track, "failureThreshold": 2, "interval": "1s", "window": "1s",
                     "performance": [{"metric": "accuracy", "min": 0.8}], "actions": {"rollback": rollback}}}


def set_verdict(kube, name, verdict, failures=0, at=None):
    kube.patch("driftpolicies", name, {"status": {
        "lastEvaluation": {"time": stamp(at or now()), "verdict": verdict,
                           "results": [{"check": "performance/accuracy", "verdict": verdict}]},
        "consecutiveFailures": failures}}, subresource="status")


def pass_current_step(kube, name):
    """A Pass whose whole window lies after the step started (what the gate counts), as a policy would."""
    md = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"].get("stepStartedAt"))
    started = datetime.datetime.fromisoformat(md["status"]["stepStartedAt"].replace("Z", "+00:00"))
    while now() < started + WINDOW:
        time.sleep(0.1)
    set_verdict(kube, name, "Pass")
    return md


def phase_is(*phases):
    return lambda o: o.get("status", {}).get("phase") in phases


def events(kube, reason):
    return [e for e in kube.list("events") if e.get("reason") == reason]


def count_events(kube, reason, at_least=1, timeout=60.0):
    """How many Events of a reason exist once there are ``at_least`` (an Event is posted after the
    status write that a test waits for, so it may not be there yet)."""
    deadline = time.monotonic() + timeout
    while len(found := events(kube, reason)) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(found)


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_children_and_routes_for_each_router(kube, kubelet, operator_factory, router):
    traffic, route_api, route_plural = ROUTERS[router]
    operator_factory(*DRIVES, env=FAST)
    body = copy.deepcopy(MD)
    body["spec"]["traffic"] = traffic
    body["spec"]["canary"]["steps"][0]["pause"] = "10m"  # hold the first step while we look
    kube.create("modeldeployments", body)
    md = kube.wait_for("modeldeployments", "fraud", lambda o: o.get("status", {}).get("canary", {}).get("ready"))
    uid = md["metadata"]["uid"]
    # A list's items carry no kind: put it back for the schema check.
    deployments = {d["metadata"]["name"]: {"apiVersion": "apps/v1", "kind": "Deployment", **d} for d in kube.list("deployments")}
    services = {s["metadata"]["name"]: {"apiVersion": "v1", "kind": "Service", **s}
                for s in kube.list("services", labelSelector="app.kubernetes.io/managed-by=modelwarden")}
    assert set(deployments) == {"fraud-stable", "fraud-canary", "fraud-shadow"}
    assert set(services) == {"fraud", "fraud-stable", "fraud-canary", "fraud-shadow"}
    for obj in [*deployments.values(), *services.values()]:
        clean = {k: v for k, v in obj.items() if k != "status"}
        assert validate_any(clean) == [], obj["metadata"]["name"]
        assert obj["metadata"]["ownerReferences"][0]["uid"] == uid
    canary = deployments["fraud-canary"]["spec"]["template"]
    env = {e["name"]: e["value"] for e in canary["spec"]["containers"][0]["env"]}
    assert env == {"MODEL_NAME": "fraud", "MODEL_VERSION": "8", "MODEL_TRACK": "canary", "MODEL_URI": "file:///m/8", "PORT": "8080"}
    assert canary["metadata"]["labels"] | {"model": "fraud", "version": "8", "track": "canary"} == canary["metadata"]["labels"]
    assert canary["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert services["fraud"]["spec"]["selector"] == {"modelwarden.io/deployment": "fraud", "modelwarden.io/serving": "true"}
    if route_plural:
        route = kube.get(route_plural, "fraud", api_version=route_api)
        assert validate_any({k: v for k, v in route.items() if k != "status"}) == []
        text = yaml.safe_dump(route["spec"], width=1000)
        assert "fraud-stable" in text and "fraud-canary" in text and "fraud-shadow" in text, text
        assert md["status"]["weights"] == {"stable": 90, "canary": 10, "mirror": 25}
    else:
        # 2 serving replicas cannot express 10%: one canary pod of two, reported as it is.
        assert md["status"]["weights"] == {"stable": 50, "canary": 50, "mirror": 0}
        assert deployments["fraud-stable"]["spec"]["replicas"] == 1 and deployments["fraud-canary"]["spec"]["replicas"] == 1
        traffic_ready = next(c for c in md["status"]["conditions"] if c["type"] == "TrafficReady")
        assert traffic_ready["status"] == "False" and traffic_ready["reason"] == "MirroringUnsupported"


def test_canary_steps_to_promotion_gated_by_policy_verdicts(kube, kubelet, operator_factory):
    operator_factory(*DRIVES, env=FAST)
    kube.create("driftpolicies", policy("gate", "canary"))
    kube.create("modeldeployments", {**MD, "spec": {**MD["spec"], "traffic": {"router": "istio"}}})
    kube.wait_for("modeldeployments", "fraud", lambda o: o.get("status", {}).get("canaryStep") == 0)
    # Without a passing verdict during the step, the canary holds.
    held = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"]["canary"]["ready"] and o["status"].get("stepStartedAt"))
    assert held["status"]["canaryStep"] == 0
    # A Pass over a window that began before the step started says nothing about the step: held.
    set_verdict(kube, "gate", "Pass", at=datetime.datetime.fromisoformat(held["status"]["stepStartedAt"].replace("Z", "+00:00")))
    pass_current_step(kube, "gate")
    step2 = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"].get("canaryStep") == 1)
    assert step2["status"]["weights"]["canary"] == 50
    kube.wait_for("virtualservices", "fraud", lambda o: o["spec"]["http"][0]["route"][1]["weight"] == 50,
                  api_version="networking.istio.io/v1")
    pass_current_step(kube, "gate")
    promoted = kube.wait_for("modeldeployments", "fraud", phase_is("Stable"), timeout=90)
    status = promoted["status"]
    assert status["stable"]["version"] == "8" and "canary" not in status
    assert [(h["version"], h["reason"]) for h in status["history"]] == [("7", "Initial"), ("8", "Promoted")]
    # Children and Events follow the persisted decision.
    kube.wait_gone("deployments", "fraud-canary")
    kube.wait_for("deployments", "fraud-stable", lambda d: d["spec"]["template"]["metadata"]["labels"]["version"] == "8")
    for reason in ("CanaryStarted", "CanaryStepAdvanced", "CanaryPromoted", "TrafficUpdated"):
        assert count_events(kube, reason) >= 1, reason
    assert spec_untouched(kube)


def spec_untouched(kube):
    return kube.get("modeldeployments", "fraud")["spec"]["stable"]["version"] == "7"


def test_failing_gate_rolls_the_canary_back(kube, kubelet, operator_factory):
    operator_factory(*DRIVES, env=FAST)
    kube.create("driftpolicies", policy("gate", "canary"))
    kube.create("modeldeployments", MD)
    kube.wait_for("modeldeployments", "fraud", lambda o: o.get("status", {}).get("canaryStep") == 0)
    set_verdict(kube, "gate", "Fail", failures=1)  # below failureThreshold=2: held, not aborted
    rolled = None
    set_verdict(kube, "gate", "Fail", failures=2)
    rolled = kube.wait_for("modeldeployments", "fraud", phase_is("RolledBack"))
    status = rolled["status"]
    assert status["weights"]["canary"] == 0 and status["rollback"]["fromVersion"] == "8"
    assert "gate failed 2x (performance/accuracy)" in status["rollback"]["reason"]
    kube.wait_for("deployments", "fraud-canary", lambda d: d["spec"]["replicas"] == 0)
    assert count_events(kube, "CanaryAborted") == 1
    assert next(c for c in status["conditions"] if c["type"] == "RolledBack")["status"] == "True"
    # A retry annotation starts the canary over; the spec is never written by the operator.
    kube.patch("modeldeployments", "fraud", {"metadata": {"annotations": {"modelwarden.io/retry": "1"}}})
    set_verdict(kube, "gate", "Pass")
    kube.wait_for("modeldeployments", "fraud", lambda o: o["status"]["phase"] == "Progressing" and "rollback" not in o["status"])
    assert spec_untouched(kube)


def test_failing_stable_policy_rolls_stable_back(kube, kubelet, operator_factory):
    operator_factory(*DRIVES, env=FAST)
    body = copy.deepcopy(MD)
    del body["spec"]["canary"], body["spec"]["shadow"]
    kube.create("modeldeployments", body)
    kube.wait_for("modeldeployments", "fraud", phase_is("Stable"))
    kube.patch("modeldeployments", "fraud", {"spec": {"stable": {"version": "8", "modelUri": "file:///m/8"}}})
    kube.wait_for("modeldeployments", "fraud", lambda o: o["status"]["stable"]["version"] == "8" and o["status"]["phase"] == "Stable")
    kube.create("driftpolicies", policy("stable-quality", "stable"))
    set_verdict(kube, "stable-quality", "Fail", failures=2)
    rolled = kube.wait_for("modeldeployments", "fraud", phase_is("RolledBack"))
    assert rolled["status"]["stable"]["version"] == "7" and rolled["status"]["rollback"]["track"] == "stable"
    kube.wait_for("deployments", "fraud-stable", lambda d: d["spec"]["template"]["metadata"]["labels"]["version"] == "7")
    assert count_events(kube, "StableRolledBack") == 1
    assert kube.get("modeldeployments", "fraud")["spec"]["stable"]["version"] == "8"  # spec untouched


def test_operator_killed_mid_canary_resumes_without_redoing_a_step(kube, kubelet, operator_factory):
    operator = operator_factory(*DRIVES, env=FAST)
    kube.create("driftpolicies", policy("gate", "canary"))
    body = copy.deepcopy(MD)
    body["spec"]["canary"]["steps"] = [{"weight": 10, "pause": "1s"}, {"weight": 30, "pause": "1s"}, {"weight": 60, "pause": "1s"}]
    kube.create("modeldeployments", body)
    kube.wait_for("modeldeployments", "fraud", lambda o: o.get("status", {}).get("canary", {}).get("ready"))
    pass_current_step(kube, "gate")
    before = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"].get("canaryStep") == 1 and o["status"].get("stepStartedAt"))
    operator.kill()
    started_at = before["status"]["stepStartedAt"]
    operator_factory(*DRIVES, env=FAST)
    # The restarted operator continues at step 2 (index 1) with the same step start and history.
    after = kube.wait_for("modeldeployments", "fraud", lambda o: "reconciled" if o["status"].get("canaryStep") == 1 else None)
    assert after["status"]["stepStartedAt"] == started_at
    assert after["status"]["history"] == before["status"]["history"]
    pass_current_step(kube, "gate")
    kube.wait_for("modeldeployments", "fraud", lambda o: o["status"].get("canaryStep") == 2)
    pass_current_step(kube, "gate")
    done = kube.wait_for("modeldeployments", "fraud", phase_is("Stable"), timeout=90)
    assert [(h["version"], h["reason"]) for h in done["status"]["history"]] == [("7", "Initial"), ("8", "Promoted")]
    assert count_events(kube, "CanaryStepAdvanced", at_least=2) == 2  # no step was redone
    assert count_events(kube, "CanaryStarted") == 1


def test_examples_reconcile(kube, kubelet, operator_factory):
    operator_factory("-A", env=FAST)
    doc = yaml.safe_load((ROOT / "examples" / "modeldeployment-basic.yaml").read_text())
    kube.create("modeldeployments", doc)
    done = kube.wait_for("modeldeployments", "recommender", phase_is("Stable"), namespace="ml")
    assert done["status"]["stable"]["readyReplicas"] == 2


def reconciles(port):
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(m.group(1)) for m in re.finditer(r'^modelwarden_operator_reconciles_total\{outcome="\w+"\} (\S+)$', text, re.M))


def test_a_track_scaled_by_an_hpa_keeps_its_replicas_and_the_weight_it_really_gets(kube, kubelet, operator_factory):
    port = free_port()
    operator_factory(*DRIVES, "--metrics-port", str(port), env=FAST)
    body = copy.deepcopy(MD)
    del body["spec"]["shadow"]
    body["spec"]["canary"] = {"version": "8", "modelUri": "file:///m/8", "weight": 10}
    body["spec"]["traffic"] = {"router": "replicas"}
    kube.create("modeldeployments", body)
    # Without an HPA, 2 serving replicas can only give the canary 1 of 2 pods.
    kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status") or {}).get("weights", {}).get("canary") == 50)
    kube.wait_for("deployments", "fraud-stable", lambda d: d["spec"]["replicas"] == 1)
    kube.create("horizontalpodautoscalers", {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "fraud-stable"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fraud-stable"},
                 "minReplicas": 2, "maxReplicas": 20}})
    kube.patch("deployments", "fraud-stable", {"spec": {"replicas": 9}})  # what the HPA controller does
    md = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"]["weights"]["canary"] == 10)
    assert "HorizontalPodAutoscaler" in next(c for c in md["status"]["conditions"] if c["type"] == "TrafficReady")["message"]
    start = reconciles(port)
    while reconciles(port) < start + 10:
        time.sleep(0.2)
    assert kube.get("deployments", "fraud-stable")["spec"]["replicas"] == 9  # left to the HPA for 10 reconciles
    assert kube.get("deployments", "fraud-canary")["spec"]["replicas"] == 1
    assert kube.get("modeldeployments", "fraud")["status"]["weights"] == {"stable": 90, "canary": 10, "mirror": 0}


def set_winner(kube, name, winner, evidence_from):
    """A Pass of the comparison policy with its A/B answer for version 8, as the policy loop writes it."""
    at = now()
    decided = winner != "Inconclusive"
    kube.patch("driftpolicies", name, {"status": {
        "lastEvaluation": {"time": stamp(at), "verdict": "Pass",
                           "results": [{"check": "comparison/accuracy", "verdict": "Pass", "effect": 0.05, "lowerBound": 0.02,
                                        "upperBound": 0.08, "threshold": 0.001}]},
        "evaluatedVersion": "8", "consecutiveFailures": 0,
        "winner": {"version": "8", "winner": winner, "level": 0.001, "decidedAt": stamp(at) if decided else None,
                   "windowStart": stamp(evidence_from) if decided else None,
                   "metrics": [{"metric": "accuracy", "winner": winner, "effect": 0.05, "lower": 0.02, "upper": 0.08}]},
    }}, subresource="status")


def test_auto_promote_winner_promotes_an_ab_split_once_its_comparison_names_the_canary(kube, kubelet, operator_factory):
    operator_factory(*DRIVES, env=FAST)
    ab = policy("ab", "canary")
    ab["spec"] |= {"performance": [], "reference": {"track": "stable"},
                   "comparison": {"track": "stable", "metrics": ["accuracy"]}}
    kube.create("driftpolicies", ab)
    body = copy.deepcopy(MD)
    body["spec"]["canary"] = {"version": "8", "modelUri": "file:///m/8", "replicas": 1, "weight": 30, "autoPromoteWinner": True}
    kube.create("modeldeployments", body)
    split = kube.wait_for("modeldeployments", "fraud", lambda o: o.get("status", {}).get("canaryStartedAt"))
    started = datetime.datetime.fromisoformat(split["status"]["canaryStartedAt"].replace("Z", "+00:00"))
    while now() < started + WINDOW:
        time.sleep(0.1)
    # Still inconclusive, then a win on a window that began before the split: neither promotes.
    set_winner(kube, "ab", "Inconclusive", None)
    set_winner(kube, "ab", "canary", started - datetime.timedelta(seconds=5))
    time.sleep(2)  # several reconciles (every 0.3 s) see it; an order-of-events check, not a timing one: nothing may happen
    held = kube.get("modeldeployments", "fraud")["status"]
    assert held["stable"]["version"] == "7" and held["canary"]["version"] == "8" and count_events(kube, "CanaryPromoted", timeout=0) == 0
    set_winner(kube, "ab", "canary", started + datetime.timedelta(milliseconds=1))
    promoted = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"]["stable"]["version"] == "8", timeout=90)
    assert "canary" not in promoted["status"]
    assert [(h["version"], h["reason"]) for h in promoted["status"]["history"]] == [("7", "Initial"), ("8", "Promoted")]
    assert count_events(kube, "CanaryPromoted") == 1
    assert "won the A/B comparison (DriftPolicy ab: accuracy +0.05 in [+0.02, +0.08])" in events(kube, "CanaryPromoted")[0]["message"]
    assert spec_untouched(kube)


def test_a_decision_persisted_before_its_children_failed_is_still_announced(cluster, kube, kubelet, tmp_path):
    """The status write succeeds, then every Deployment write is refused: no later decision makes
    the same transition again, so its Event is posted now (once), and the children follow later."""
    import ssl

    from tests.contention import FaultyApiProxy
    from tests.processes import OperatorProcess

    tls = ssl.create_default_context(cafile=str(cluster.plane.ca_path))
    proxy = FaultyApiProxy(cluster.url, ssl_context=tls, allow=False).start()
    proxy.refused_writes = {"deployments"}
    operator = OperatorProcess(kubeconfig=proxy.write_kubeconfig(tmp_path / "kubeconfig-proxy", token=cluster.operator_token),
                               log_path=tmp_path / "operator.log", extra_args=DRIVES, env=FAST)
    try:
        operator.start(timeout=60)
        body = copy.deepcopy(MD)
        del body["spec"]["shadow"]
        kube.create("modeldeployments", body)
        kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status") or {}).get("canary"))
        assert count_events(kube, "CanaryStarted") == 1
        assert proxy.errors_injected > 0 and kube.get("deployments", "fraud-canary") is None
        proxy.refused_writes = set()
        kube.wait_for("deployments", "fraud-canary", lambda d: d["spec"]["template"]["metadata"]["labels"]["version"] == "8")
        assert count_events(kube, "CanaryStarted") == 1  # announced once, not again when the children landed
        assert "reconcile failed" in operator.log()
    finally:
        operator.stop()
        proxy.stop()


def test_kubectl_get_columns_as_the_api_server_serves_them(kube, kubelet, operator_factory):
    """The printer columns' JSONPaths evaluated by the API server itself (what `kubectl get` shows)."""
    from tests.kubeclient import collection_path

    operator_factory(*DRIVES, env=FAST)
    kube.create("driftpolicies", policy("gate", "canary"))
    body = copy.deepcopy(MD)
    del body["spec"]["shadow"]
    kube.create("modeldeployments", body)
    kube.wait_for("modeldeployments", "fraud", lambda o: o.get("status", {}).get("canary", {}).get("ready"))
    set_verdict(kube, "gate", "InsufficientData")
    served = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"].get("verdict") == "InsufficientData")
    table = kube.session.get(kube.url + collection_path("modeldeployments", "default"),
                             headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}, timeout=30).json()
    names = [c["name"] for c in table["columnDefinitions"] if not c.get("priority")]
    assert names == ["Name", "Ready", "Phase", "Stable", "Canary", "Weight", "Step", "Verdict", "SpecBehind", "Age"]
    (row,) = table["rows"]
    weight = served["status"]["weights"]["canary"]
    assert weight > 0 and row["cells"][:8] == ["fraud", "True", "Progressing", "7", "8", weight, "1/2", "InsufficientData"]
