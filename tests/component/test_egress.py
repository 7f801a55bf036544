"""The cluster admin's egress rules and Secret opt-in, with the real operator (#14): a policy
author cannot make the operator send a Secret, or a query, or an alert, where the admin did not
allow it. Receivers are real HTTP servers that count what reaches them."""

from __future__ import annotations

import base64

from tests.component.test_driftpolicy_controller import policy, reasons, start_canary, status
from tests.controlplane.support import wait_for
from tests.receivers import HttpReceiver

TOKEN = "t0ps3cret"


def token_secret(name: str, opted_in: bool) -> dict:
    labels = {"modelwarden.io/policy-use": "true"} if opted_in else {}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default", "labels": labels},
            "data": {"token": base64.b64encode(TOKEN.encode()).decode()}}


def with_token(body: dict, secret: str) -> dict:
    body["spec"]["prometheus"]["bearerTokenSecretRef"] = {"name": secret, "key": "token"}
    body["spec"]["actions"] = {}
    return body


def message(kube, name: str) -> str:
    return status(kube.get("driftpolicies", name))["lastEvaluation"]["results"][0]["message"]


def test_queries_and_secrets_go_only_where_the_admin_allows(kube, kubelet, operator_factory, fake_prometheus):
    allowed, elsewhere = fake_prometheus(value=0), fake_prometheus(value=0)
    # The default rule: only the operator's own --prometheus-url.
    operator_factory("-A", "--prometheus-url", allowed.url, env={"MODELWARDEN_ALLOWED_PROMETHEUS_URLS": ""})
    start_canary(kube)
    kube.create("secrets", token_secret("labelled", opted_in=True))
    kube.create("secrets", token_secret("unlabelled", opted_in=False))

    kube.create("driftpolicies", with_token(policy("exfiltrate", elsewhere.url), "labelled"))
    kube.create("driftpolicies", with_token(policy("not-opted-in", allowed.url), "unlabelled"))
    kube.create("driftpolicies", with_token(policy("proper", allowed.url), "labelled"))
    peek = with_token(policy("peek", allowed.url), "labelled")
    peek["spec"]["checks"][0]["query"] = 'sum(errors{namespace="kube-system"})'  # another tenant's series
    kube.create("driftpolicies", peek)
    for name in ("exfiltrate", "not-opted-in", "peek"):
        kube.wait_for("driftpolicies", name, lambda o: len(status(o).get("evaluations") or []) >= 2)
        assert status(kube.get("driftpolicies", name))["phase"] == "Error"
    kube.wait_for("driftpolicies", "proper", lambda o: status(o).get("phase") == "Passing")

    assert f"prometheus.url {elsewhere.url} is not allowed by the operator" in message(kube, "exfiltrate")
    assert "Secret unlabelled is not labelled modelwarden.io/policy-use=true" in message(kube, "not-opted-in")
    assert 'errors{namespace="kube-system"} has no namespace="default" matcher' in message(kube, "peek")
    assert not any("kube-system" in q for q in allowed.queries)  # never sent
    assert elsewhere.queries == []  # not one request: no query, no token
    assert allowed.authorizations and set(allowed.authorizations) == {f"Bearer {TOKEN}"}  # only the opted-in Secret's token
    assert reasons(kube, "exfiltrate").count("EvaluationError") == 1


def test_alerts_go_only_to_allowed_hosts_and_carry_no_secret_elsewhere(kube, kubelet, operator_factory, fake_prometheus):
    prometheus = fake_prometheus(value=5.0)  # failing at once: the breach alerts
    receiver = HttpReceiver()
    try:
        operator_factory("-A", "--allowed-alert-hosts", "alerts.example.com")
        start_canary(kube)
        signing = token_secret("signing", opted_in=True)
        kube.create("secrets", signing)
        body = policy("gate", prometheus.url, threshold=1, alert={"webhook": {"url": f"{receiver.url}/hook",
                                                                             "hmacSecretRef": {"name": "signing", "key": "token"}}})
        body["spec"]["actions"].pop("retrain")
        kube.create("driftpolicies", body)
        wait_for(lambda: "AlertFailed" in reasons(kube, "gate"), timeout=60, message="AlertFailed")
        failed = next(e["message"] for e in kube.list("events") if e["reason"] == "AlertFailed")
        assert failed.startswith("webhook: alert host 127.0.0.1 is not allowed by the operator"), failed
        assert receiver.received == []
    finally:
        receiver.stop()
