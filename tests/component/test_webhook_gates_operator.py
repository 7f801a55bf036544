"""Webhook gates of a canary, asked by the real operator process of real local HTTP receivers
through a real control plane: a bad signature holds, an accepting gate lets the canary take
traffic, a refusing one holds it at 0% until it accepts, a gate that times out holds the promotion."""

from __future__ import annotations

import base64
import copy
import json

from tests.component.test_kubectl_plugin import canary_weight, ok
from tests.component.test_modeldeployment_controller import DRIVES, FAST, MD, count_events
from tests.receivers import HttpReceiver

KEY = b"gate-signing-key"


def gate_state(kube, name):
    gates = (kube.get("modeldeployments", "fraud").get("status") or {}).get("gates") or []
    return next((g for g in gates if g["name"] == name), {})


def signing_secret(value: bytes) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gate-signing", "labels": {"modelwarden.io/policy-use": "true"}},
            "data": {"key": base64.b64encode(value).decode()}}


def plugin_view(cluster) -> dict:
    return json.loads(ok(cluster, "get", "fraud", "-o", "json"))


def test_webhook_gates_hold_and_release_the_rollout(cluster, kube, kubelet, operator_factory):
    confirm, smoke = HttpReceiver(status=200, signing_key=KEY), HttpReceiver(status=403)
    promotion = HttpReceiver(status=200, delay=3.0)
    try:
        kube.create("secrets", signing_secret(b"not-the-key"))
        operator_factory(*DRIVES, env=FAST)
        body = copy.deepcopy(MD)
        del body["spec"]["shadow"]
        body["spec"]["traffic"] = {"router": "istio"}
        body["spec"]["canary"]["steps"] = [{"weight": 20, "pause": "1s"}]
        body["spec"]["canary"]["webhooks"] = [
            {"name": "confirm", "type": "confirm-rollout", "url": confirm.url, "interval": "1s",
             "hmacSecretRef": {"name": "gate-signing", "key": "key"}, "metadata": {"ticket": "CHG-1"}},
            {"name": "smoke", "type": "pre-rollout", "url": smoke.url, "interval": "1s"},
            {"name": "promotion", "type": "confirm-promotion", "url": promotion.url, "interval": "1s", "timeout": "1s"},
        ]
        kube.create("modeldeployments", body)
        written = kube.get("modeldeployments", "fraud")["spec"]

        # A signature made with the wrong key: the receiver answers 401, the gate holds, no traffic.
        kube.wait_for("modeldeployments", "fraud", lambda o: gate_state(kube, "confirm").get("lastCode") == 401)
        assert confirm.received[0].rejection and canary_weight(kube) == 0
        assert kube.get("modeldeployments", "fraud")["status"]["phase"] == "Paused"
        kube.patch("secrets", "gate-signing", {"data": {"key": base64.b64encode(KEY).decode()}})
        kube.wait_for("modeldeployments", "fraud", lambda o: gate_state(kube, "confirm").get("passedAt"))
        sent = next(r for r in confirm.received if r.rejection is None).json()
        assert (sent["type"], sent["canary"]["version"], sent["metadata"]) == ("confirm-rollout", "8", {"ticket": "CHG-1"})

        # pre-rollout refuses (403): the canary's pods run, it still gets no traffic; then it accepts.
        kube.wait_for("modeldeployments", "fraud", lambda o: gate_state(kube, "smoke").get("lastCode") == 403)
        assert canary_weight(kube) == 0 and "HTTP 403" in gate_state(kube, "smoke")["message"]
        view = plugin_view(cluster)
        assert {g["name"]: g["passed"] for g in view["gates"]} == {"confirm": True, "smoke": False}
        smoke.status = 200
        kube.wait_for("virtualservices", "fraud", lambda v: canary_weight(kube) == 20, api_version="networking.istio.io/v1")

        # confirm-promotion answers too late (3 s > its 1 s timeout): the last step holds, stable stays 7.
        kube.wait_for("modeldeployments", "fraud", lambda o: "no answer" in gate_state(kube, "promotion").get("message", ""))
        held = kube.get("modeldeployments", "fraud")["status"]
        assert held["stable"]["version"] == "7" and held["phase"] == "Paused"
        promotion.delay = 0.0
        done = kube.wait_for("modeldeployments", "fraud", lambda o: o["status"]["stable"]["version"] == "8")
        assert "gates" not in done["status"] or done["status"]["gates"] == []
        assert count_events(kube, "GatePassed", at_least=3) == 3 and count_events(kube, "CanaryPromoted") == 1
        assert kube.get("modeldeployments", "fraud")["spec"] == written
    finally:
        for receiver in (confirm, smoke, promotion):
            receiver.stop()
