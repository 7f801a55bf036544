"""Day-2 requests and webhook gates while the API server is slow and answers 409s and 500s: the
operator (behind the fault-injecting proxy) acts on each request value exactly once and records a
gate's 2xx exactly once. Counted from the operator's own decision log (written decisions), since
kopf may drop an Event the proxy fails."""

from __future__ import annotations

import copy
import ssl

from tests.component.test_contention import decisions_by_object
from tests.component.test_kubectl_plugin import ok
from tests.component.test_modeldeployment_controller import DRIVES, FAST, MD
from tests.contention import FaultyApiProxy
from tests.processes import OperatorProcess
from tests.receivers import HttpReceiver


def written(decisions, reason: str) -> int:
    return sum(1 for outcome, events, _ in decisions.get(("default", "fraud"), []) if outcome == "written" and reason in events)


def test_requests_and_gates_act_once_when_the_api_fails(cluster, kube, kubelet, tmp_path):
    proxy = FaultyApiProxy(cluster.url, seed=5, ssl_context=ssl.create_default_context(cafile=str(cluster.plane.ca_path)),
                           min_delay=0.05, max_delay=0.5, conflict_rate=0.2, error_rate=0.1).start()
    receiver = HttpReceiver(status=200)
    operator = OperatorProcess(kubeconfig=proxy.write_kubeconfig(tmp_path / "kubeconfig-proxy", token=cluster.operator_token),
                               log_path=tmp_path / "operator.log", extra_args=DRIVES, env=FAST)
    try:
        proxy.pause_faults()
        operator.start(timeout=120)
        proxy.resume_faults()
        body = copy.deepcopy(MD)
        del body["spec"]["shadow"]
        body["spec"]["traffic"] = {"router": "istio"}
        body["spec"]["canary"]["steps"] = [{"weight": 20, "pause": "1h"}, {"weight": 60, "pause": "1h"}]
        body["spec"]["canary"]["webhooks"] = [{"name": "confirm", "type": "confirm-rollout", "url": receiver.url, "interval": "1s"}]
        kube.create("modeldeployments", body)
        kube.wait_for("modeldeployments", "fraud", lambda o: (o.get("status") or {}).get("weights", {}).get("canary") == 20,
                      timeout=300)
        ok(cluster, "promote", "fraud", "--timeout", "300")  # the step pauses an hour: only the request advances it
        kube.wait_for("modeldeployments", "fraud", lambda o: o["status"].get("canaryStep") == 1, timeout=300)
        ok(cluster, "pause", "fraud", "--timeout", "300")  # a later decision, on a view that has the promote
        final = kube.get("modeldeployments", "fraud")["status"]
        counters = proxy.counters()
    finally:
        proxy.pause_faults()
        log = operator.log()
        operator.stop()
        proxy.stop()
        receiver.stop()
    assert counters["conflicts_injected"] > 0 and counters["errors_injected"] > 0  # the proxy did get in the way
    decisions = decisions_by_object(log)
    refused = sum(1 for outcome, _, _ in decisions.get(("default", "fraud"), []) if outcome == "refused")
    print(f"proxy: {counters}; decisions refused as stale: {refused}")
    assert final["canaryStep"] == 1 and final["paused"] is True and final["phase"] == "Paused"
    assert written(decisions, "CanaryStepAdvanced") == 1 and written(decisions, "GatePassed") == 1
    assert written(decisions, "CanaryPaused") == 1 and written(decisions, "CanaryStarted") == 1
    assert [g["name"] for g in final["gates"] if g.get("passedAt")] == ["confirm"]
