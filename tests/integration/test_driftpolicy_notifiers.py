"""Each notifier against a real receiver: Alertmanager (fire, then resolve), SMTP with STARTTLS and
AUTH (aiosmtpd), and a failing webhook (bounded retries, then NotifyError)."""

from __future__ import annotations

import datetime
import ssl
import subprocess
import time

import pytest

from modelwarden.api.driftpolicy import CheckResult, Evaluation, Verdict
from modelwarden.notifiers.alertmanager import AlertmanagerNotifier
from modelwarden.notifiers.base import NotifyError, deliver
from modelwarden.notifiers.email import EmailNotifier
from modelwarden.notifiers.webhook import WebhookNotifier
from modelwarden.planning.notification import AlertContext, build_notification

CONTEXT = AlertContext(policy="gate", namespace="ml", modeldeployment="fraud", model="fraud", track="canary", version="2")


def notification(resolved: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    evaluation = Evaluation(time=now, verdict=Verdict.FAIL, results=[CheckResult(check="custom/errors", verdict=Verdict.FAIL, value=5)])
    return build_notification(CONTEXT, "Breach", "Recovered" if resolved else "QualityDegraded", evaluation, "2/2", ["alert"], now,
                              datetime.timedelta(hours=1), resolved)


def test_alertmanager_alert_fires_and_resolves(alertmanager):
    notifier = AlertmanagerNotifier(alertmanager.url)
    notifier.send(notification())
    deadline = time.monotonic() + 10
    while not alertmanager.alerts(policy="gate") and time.monotonic() < deadline:
        time.sleep(0.1)
    alert = alertmanager.alerts(policy="gate")[0]
    assert alert["labels"]["alertname"] == "DriftPolicyBreached" and alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["custom_errors"].startswith("Fail")
    notifier.send(notification(resolved=True))
    deadline = time.monotonic() + 10
    while alertmanager.alerts(policy="gate") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alertmanager.alerts(policy="gate") == []


@pytest.fixture
def tls_files(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_email_with_starttls_and_auth(tls_files):
    from aiosmtpd.smtp import AuthResult

    from tests.receivers import SmtpReceiver

    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.login == b"mw" and auth_data.password == b"pw")

    receiver = SmtpReceiver(tls_context=server_tls, require_starttls=True, authenticator=authenticator, auth_require_tls=True)
    try:
        client_tls = ssl.create_default_context(cafile=str(cert))
        EmailNotifier("127.0.0.1", receiver.port, "mw@example.com", ["ml@example.com"], starttls=True,
                      credentials=("mw", "pw"), tls_context=client_tls).send(notification())
        assert logins == [(b"mw", b"pw")]
        assert "Subject: fraud/canary: DriftPolicy gate breached" in receiver.messages[0]["data"]
        with pytest.raises(NotifyError):  # aiosmtpd leaves a rejected login hanging: our timeout ends it
            EmailNotifier("127.0.0.1", receiver.port, "mw@example.com", ["ml@example.com"], starttls=True,
                          credentials=("mw", "wrong"), tls_context=client_tls, timeout=1).send(notification())
        with pytest.raises(NotifyError):  # the server insists on STARTTLS
            EmailNotifier("127.0.0.1", receiver.port, "mw@example.com", ["ml@example.com"], starttls=False).send(notification())
    finally:
        receiver.stop()


def test_failing_webhook_is_retried_a_bounded_number_of_times(http_receivers):
    receiver = http_receivers(status=500)
    with pytest.raises(NotifyError, match="HTTP 500"):
        deliver(WebhookNotifier(f"{receiver.url}/hook"), notification(), attempts=3, backoff_seconds=0.05)
    assert len(receiver.received) == 3
