"""Pure builders of retraining Jobs/CronJobs, Notification values and each notifier's rendering."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json

import pytest

from modelwarden.api.actions import AlertSpec, JobTemplate
from modelwarden.api.driftpolicy import CheckResult, Evaluation, Verdict
from modelwarden.builders.jobs import PolicyOwner, RetrainContext, retrain_cronjob, retrain_job
from modelwarden.planning.retraining import job_state
from modelwarden.notifiers import factory
from modelwarden.notifiers.alertmanager import AlertmanagerNotifier
from modelwarden.notifiers.base import NotifyError, deliver
from modelwarden.notifiers.email import EmailNotifier
from modelwarden.notifiers.noop import NoopNotifier
from modelwarden.notifiers.slack import SlackNotifier
from modelwarden.notifiers.webhook import SignatureError, signature, verify_signature
from modelwarden.planning.notification import AlertContext, build_notification
from tests.validation import validate_any

T0 = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.timezone.utc)
OWNER = PolicyOwner("gate", "ml", "uid-1")
TEMPLATE = JobTemplate.model_validate({
    "metadata": {"labels": {"team": "ml"}},
    "backoffLimit": 1, "ttlSecondsAfterFinished": 3600,
    "template": {"spec": {"initContainers": [{"name": "fetch", "image": "fetch:1"}],
                          "containers": [{"name": "train", "image": "trainer:1", "env": [{"name": "MODELWARDEN_MODEL", "value": "stale"},
                                                                                          {"name": "EPOCHS", "value": "3"}]}]}},
})
CONTEXT = RetrainContext(model="fraud", namespace="ml", track="canary", policy="gate", reason="drift/features failed 2/2",
                         version="2", failing_checks=({"check": "drift/features", "value": 0.5, "threshold": 0.01, "message": ""},),
                         window_start=T0 - datetime.timedelta(minutes=30), window_end=T0)


def env(container: dict) -> dict:
    return {e["name"]: e["value"] for e in container["env"]}


def test_retrain_job_injects_the_context_into_every_container():
    job = retrain_job(OWNER, TEMPLATE, "gate-retrain-0123abcd", "Breach", CONTEXT)
    assert validate_any(job) == []
    assert job["metadata"]["labels"] == {"team": "ml", "app.kubernetes.io/managed-by": "modelwarden",
                                         "modelwarden.io/policy": "gate", "modelwarden.io/trigger": "breach"}
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "name": "gate",
                                                   "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 1 and job["spec"]["ttlSecondsAfterFinished"] == 3600
    for container in (*pod["initContainers"], *pod["containers"]):
        values = env(container)
        assert values["MODELWARDEN_MODEL"] == "fraud" and values["MODELWARDEN_VERSION"] == "2" and values["MODELWARDEN_TRIGGER"] == "Breach"
        assert values["MODELWARDEN_WINDOW_START"] == "2026-01-01T11:30:00Z" and values["MODELWARDEN_WINDOW_END"] == "2026-01-01T12:00:00Z"
        assert json.loads(values["MODELWARDEN_FAILING_CHECKS"])[0]["check"] == "drift/features"
        assert set(values) >= {"MODELWARDEN_NAMESPACE", "MODELWARDEN_TRACK", "MODELWARDEN_REASON", "MODELWARDEN_POLICY"}
    assert env(pod["containers"][0])["EPOCHS"] == "3"
    assert TEMPLATE.template["spec"]["containers"][0]["env"][0]["value"] == "stale"  # the template is never mutated


def test_retrain_cronjob():
    cronjob = retrain_cronjob(OWNER, TEMPLATE, "@weekly", CONTEXT)
    assert validate_any(cronjob) == []
    assert cronjob["metadata"]["name"] == "gate-retrain" and cronjob["spec"]["schedule"] == "@weekly"
    assert cronjob["spec"]["jobTemplate"]["metadata"]["labels"]["modelwarden.io/trigger"] == "schedule"
    assert env(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0])["MODELWARDEN_TRIGGER"] == "Schedule"


@pytest.mark.parametrize("status,outcome", [
    ({}, "Running"),
    ({"active": 1}, "Running"),
    ({"succeeded": 1}, "Succeeded"),
    ({"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T12:00:00Z"}]}, "Succeeded"),
    ({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}, "Failed"),
    ({"conditions": [{"type": "Failed", "status": "False"}]}, "Running"),
])
def test_job_state(status, outcome):
    assert job_state({"metadata": {"name": "j"}, "spec": {}, "status": status}).outcome == outcome


CONTEXT_ALERT = AlertContext(policy="gate", namespace="ml", modeldeployment="fraud", model="fraud", track="canary", version="2",
                             prometheus_url="http://prometheus:9090")
EVALUATION = Evaluation(time=T0, verdict=Verdict.FAIL, samples=1200, results=[
    CheckResult(check="drift/features", verdict=Verdict.FAIL, value=0.5, threshold=0.01, message="2 of 6 drifted"),
    CheckResult(check="performance/accuracy", verdict=Verdict.PASS, value=0.9, threshold=0.8),
])


def notification(resolved: bool = False):
    return build_notification(CONTEXT_ALERT, "Breach", "Recovered" if resolved else "DriftDetected", EVALUATION, "2/2",
                              ["alert", "rollback of the canary track"], T0, datetime.timedelta(hours=1), resolved)


def test_notification_value():
    firing = notification()
    assert firing.subject == "fraud/canary: DriftPolicy gate breached" and firing.severity == "critical"
    assert "drift/features Fail (2 of 6 drifted)" in firing.summary and "performance/accuracy" not in firing.summary
    assert ("Consecutive failures", "2/2") in firing.fields and firing.ends_at == T0 + datetime.timedelta(hours=1)
    assert firing.links[0][1].startswith("http://prometheus:9090/graph?g0.expr=")
    body = firing.to_dict()
    assert body["status"] == "firing" and body["labels"]["policy"] == "gate" and body["startsAt"] == "2026-01-01T12:00:00.000Z"
    resolved = notification(resolved=True)
    assert resolved.resolved and resolved.ends_at == T0 and resolved.alertname == firing.alertname and resolved.labels == firing.labels


def test_renderings():
    slack = SlackNotifier("http://hooks.example/x", channel_override="#ml").payload(notification())
    assert slack["channel"] == "#ml" and slack["text"].startswith(":red_circle:")
    assert [b["type"] for b in slack["blocks"]] == ["header", "section", "section", "context"]
    alert = AlertmanagerNotifier("http://am:9093/", {"team": "ml"}).payload(notification())[0]
    assert alert["labels"] == {"team": "ml", "model": "fraud", "namespace": "ml", "policy": "gate", "track": "canary",
                               "modeldeployment": "fraud", "alertname": "DriftPolicyBreached", "severity": "critical"}
    assert alert["annotations"]["drift_features"].startswith("Fail") and alert["endsAt"] == "2026-01-01T13:00:00.000Z"
    resolved = AlertmanagerNotifier("http://am:9093").payload(notification(resolved=True))[0]
    assert resolved["endsAt"] == resolved["startsAt"]
    mail = EmailNotifier("smtp", 25, "mw@example.com", ["a@example.com", "b@example.com"]).message(notification())
    assert mail["To"] == "a@example.com, b@example.com" and "2 of 6 drifted" in mail.get_content()


def test_webhook_signature_covers_timestamp_and_body():
    body = b'{"a":1}'
    assert signature(b"key", body, 1_700_000_000) == (
        "t=1700000000,v1=" + hmac.new(b"key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest())
    header = signature(b"key", body, 1_700_000_000)
    assert verify_signature(b"key", body, header, now=1_700_000_000 + 299) == 1_700_000_000
    # A second v1 entry (a receiver rotating keys) is accepted when one of them matches.
    assert verify_signature(b"key", body, "t=1700000000,v1=00," + header.split(",")[1], now=1_700_000_000)


@pytest.mark.parametrize("header, now, problem", [
    ("t=1700000000,v1=" + "0" * 64, 1_700_000_000, "does not match"),                    # forged signature
    (signature(b"key", b'{"a":2}', 1_700_000_000), 1_700_000_000, "does not match"),      # another body
    (signature(b"other", b'{"a":1}', 1_700_000_000), 1_700_000_000, "does not match"),    # another key
    (signature(b"key", b'{"a":1}', 1_700_000_000).replace("t=1700000000", "t=1700000999"), 1_700_000_999,
     "does not match"),                                                                     # replay with a fresh t
    (signature(b"key", b'{"a":1}', 1_700_000_000), 1_700_000_301, "tolerance"),           # replayed 301 s later
    (signature(b"key", b'{"a":1}', 1_700_000_400), 1_700_000_000, "tolerance"),           # from the future
    ("sha256=" + hmac.new(b"key", b'{"a":1}', hashlib.sha256).hexdigest(), 1_700_000_000, "expected t="),  # old format
    ("t=soon,v1=ab", 1_700_000_000, "unix seconds"),
    ("", 1_700_000_000, "expected t="),
])
def test_webhook_signature_rejections(header, now, problem):
    with pytest.raises(SignatureError, match=problem):
        verify_signature(b"key", b'{"a":1}', header, now=now)


class Flaky:
    channel = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def send(self, notification) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise NotifyError("down")


def test_deliver_retries_with_a_bound():
    flaky = Flaky(2)
    deliver(flaky, notification(), attempts=3, backoff_seconds=0)
    assert flaky.calls == 3
    with pytest.raises(NotifyError):
        deliver(Flaky(3), notification(), attempts=3, backoff_seconds=0)


def test_factory_builds_configured_channels_from_secret_refs():
    spec = AlertSpec.model_validate({
        "slack": {"webhookSecretRef": {"name": "s", "key": "url"}},
        "webhook": {"url": "http://hook", "hmacSecretRef": {"name": "s", "key": "hmac"}},
        "email": {"host": "smtp", "from": "mw@example.com", "to": ["a@example.com"],
                  "authSecretRef": {"secretName": "smtp"}},
    })
    secrets = {("s", "url"): "http://slack/x\n", ("s", "hmac"): "k", ("smtp", "username"): "u", ("smtp", "password"): "p"}
    read = lambda name, key: secrets[(name, key)]  # noqa: E731
    assert factory.configured_channels(spec) == ["slack", "webhook", "email"]
    assert factory.build("slack", spec, read).webhook_url == "http://slack/x"
    assert factory.build("webhook", spec, read).secret == b"k"
    assert factory.build("email", spec, read).credentials == ("u", "p")
    assert isinstance(factory.build("alertmanager", spec, read), NoopNotifier)
    assert factory.configured_channels(None) == []


def email_policy(**email) -> dict:
    return {"apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": "gate", "namespace": "ml"},
            "spec": {"targetRef": {"name": "fraud"}, "track": "canary", "interval": "1m", "window": "15m",
                     "performance": [{"metric": "error_rate", "max": 0.01}],
                     "actions": {"alert": {"email": {"host": "smtp.example.com", "from": "mw@example.com",
                                                     "to": ["ml@example.com"], **email}}}}}


@pytest.mark.parametrize("email, accepted", [
    ({"authSecretRef": {"secretName": "smtp"}}, True),                                       # starttls by default
    ({"authSecretRef": {"secretName": "smtp"}, "starttls": True}, True),
    ({"authSecretRef": {"secretName": "smtp"}, "starttls": False, "implicitTLS": True, "port": 465}, True),
    ({"authSecretRef": {"secretName": "smtp"}, "starttls": False, "allowPlaintextAuth": True}, True),
    ({"starttls": False}, True),                                                             # a relay without login
    ({"authSecretRef": {"secretName": "smtp"}, "starttls": False}, False),
    ({"authSecretRef": {"secretName": "smtp"}, "starttls": False, "implicitTLS": False, "allowPlaintextAuth": False}, False),
])
def test_email_credentials_need_tls_at_admission(email, accepted):
    from tests.validation import validate_custom_resource

    errors = validate_custom_resource(email_policy(**email))
    if accepted:
        assert errors == []
    else:
        assert [e for e in errors if e.startswith("spec.actions.alert.email.authSecretRef: Invalid value") and "allowPlaintextAuth" in e], errors


def test_factory_passes_the_email_transport_settings():
    spec = AlertSpec.model_validate({"email": {"host": "smtp", "port": 465, "implicitTLS": True, "from": "mw@example.com",
                                               "to": ["a@example.com"], "authSecretRef": {"secretName": "smtp"}}})
    notifier = factory.build("email", spec, lambda name, key: key)
    assert (notifier.implicit_tls, notifier.port, notifier.allow_plaintext_auth, notifier.credentials) == (True, 465, False, ("username", "password"))
    default = factory.build("email", AlertSpec.model_validate({"email": {"host": "smtp", "from": "mw@example.com", "to": ["a@example.com"]}}),
                            lambda name, key: key)
    assert (default.starttls, default.implicit_tls, default.port) == (True, False, 587)


def test_email_refuses_plaintext_credentials_without_connecting():
    # Port 9 (discard) on a documentation address: a connection attempt would fail differently.
    notifier = EmailNotifier("192.0.2.1", 9, "mw@example.com", ["a@example.com"], starttls=False, credentials=("u", "p"))
    with pytest.raises(NotifyError, match="refusing to send SMTP credentials over a plaintext connection"):
        notifier.send(notification())
