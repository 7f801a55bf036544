"""Each notifier against a real receiver: Alertmanager (fire, then resolve), SMTP with STARTTLS and
AUTH, with implicit TLS (port-465 style) and with plaintext login refused (aiosmtpd), a signing
webhook receiver that rejects stale and replayed alerts, and a failing webhook (bounded retries,
then NotifyError)."""

from __future__ import annotations

import datetime
import re
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests

from modelwarden.api.driftpolicy import CheckResult, Evaluation, Verdict
from modelwarden.notifiers.alertmanager import AlertmanagerNotifier
from modelwarden.notifiers.base import NotifyError, deliver
from modelwarden.notifiers.email import EmailNotifier
from modelwarden.notifiers.slack import SlackNotifier
from modelwarden.notifiers.webhook import WebhookNotifier
from modelwarden.planning.notification import AlertContext, build_notification
from tests.processes import free_port

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


def tls_server(tls_files) -> ssl.SSLContext:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    return server_tls


def recording_authenticator(logins: list, accept: bool | None = None):
    """An aiosmtpd authenticator that records each login; accepts mw/pw (or everything: accept=True)."""
    from aiosmtpd.smtp import AuthResult

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=accept or (auth_data.login == b"mw" and auth_data.password == b"pw"))

    return authenticator


def test_email_with_starttls_and_auth(tls_files):
    from tests.receivers import SmtpReceiver

    cert, _ = tls_files
    logins: list = []
    receiver = SmtpReceiver(tls_context=tls_server(tls_files), require_starttls=True, authenticator=recording_authenticator(logins),
                            auth_require_tls=True)
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
    # Every attempt is the same transition: one key, in the header and the body, for the receiver to dedupe on.
    keys = {(r.headers["Idempotency-Key"], r.json()["dedupKey"]) for r in receiver.received}
    assert len(keys) == 1 and len(next(iter(keys))[0]) == 32 and next(iter(keys))[0] == next(iter(keys))[1]
    assert notification(resolved=True).dedup_key != notification().dedup_key


def test_a_failed_post_names_the_host_but_never_the_secret_path_or_the_answer(http_receivers):
    """A Slack webhook URL's path is its secret and the error ends up in Events: only the host shows."""
    receiver = http_receivers(status=500)
    secret_path = "/services/T000/B000/s3cr3tT0ken"
    with pytest.raises(NotifyError) as failed:
        SlackNotifier(f"{receiver.url}{secret_path}").send(notification())
    assert str(failed.value) == "HTTP 500 from 127.0.0.1" and receiver.received[0].path == secret_path
    closed = f"http://127.0.0.1:{free_port()}{secret_path}"  # nothing listens: connection refused
    with pytest.raises(NotifyError) as refused:
        SlackNotifier(closed).send(notification())
    assert "s3cr3t" not in str(refused.value) and "127.0.0.1" in str(refused.value)


def test_email_with_implicit_tls_and_auth(tls_files):
    """SMTPS: TLS from the first byte against a self-signed certificate the client trusts explicitly."""
    from tests.receivers import SmtpReceiver

    cert, _ = tls_files
    logins: list = []
    # aiosmtpd's auth_require_tls only knows STARTTLS; here the whole connection is TLS already.
    receiver = SmtpReceiver(ssl_context=tls_server(tls_files), authenticator=recording_authenticator(logins, accept=True),
                            auth_require_tls=False)
    try:
        client_tls = ssl.create_default_context(cafile=str(cert))
        EmailNotifier("127.0.0.1", receiver.port, "mw@example.com", ["ml@example.com"], implicit_tls=True,
                      credentials=("mw", "pw"), tls_context=client_tls).send(notification())
        assert logins == [(b"mw", b"pw")]
        assert "Subject: fraud/canary: DriftPolicy gate breached" in receiver.messages[0]["data"]
        # The certificate is verified: without the CA the handshake fails, and nothing is sent.
        with pytest.raises(NotifyError, match="CERTIFICATE_VERIFY_FAILED"):
            EmailNotifier("127.0.0.1", receiver.port, "mw@example.com", ["ml@example.com"], implicit_tls=True,
                          credentials=("mw", "pw"), timeout=5).send(notification())
        # A plaintext client cannot talk to a TLS port (no fallback either way).
        with pytest.raises(NotifyError):
            EmailNotifier("127.0.0.1", receiver.port, "mw@example.com", ["ml@example.com"], starttls=False,
                          timeout=2).send(notification())
        assert len(logins) == 1 and len(receiver.messages) == 1
    finally:
        receiver.stop()


def test_implicit_tls_against_a_plaintext_server_fails_instead_of_falling_back():
    from tests.receivers import SmtpReceiver

    receiver = SmtpReceiver()
    try:
        with pytest.raises(NotifyError):
            EmailNotifier("127.0.0.1", receiver.port, "mw@example.com", ["ml@example.com"], implicit_tls=True,
                          credentials=("mw", "pw"), timeout=2).send(notification())
        assert receiver.messages == []
    finally:
        receiver.stop()


def test_plaintext_login_is_refused_unless_explicitly_allowed():
    """A server that would accept AUTH over plaintext: the refusal is ours, and the opt-in works."""
    from modelwarden.notifiers.email import PLAINTEXT_AUTH_REFUSED
    from tests.receivers import SmtpReceiver

    logins: list = []
    receiver = SmtpReceiver(authenticator=recording_authenticator(logins, accept=True), auth_require_tls=False)
    try:
        plaintext = dict(host="127.0.0.1", port=receiver.port, sender="mw@example.com", recipients=["ml@example.com"],
                         starttls=False, credentials=("mw", "pw"), timeout=5)
        with pytest.raises(NotifyError, match=re.escape(PLAINTEXT_AUTH_REFUSED)):
            deliver(EmailNotifier(**plaintext), notification(), attempts=2, backoff_seconds=0)
        assert logins == [] and receiver.messages == []
        EmailNotifier(**plaintext, allow_plaintext_auth=True).send(notification())
        assert logins == [(b"mw", b"pw")] and len(receiver.messages) == 1
        # Without credentials a plaintext relay stays allowed (nothing secret is sent).
        EmailNotifier(**{**plaintext, "credentials": None}).send(notification())
        assert len(receiver.messages) == 2 and len(logins) == 1
    finally:
        receiver.stop()


def test_signed_webhook_is_accepted_fresh_and_rejected_stale_or_replayed(http_receivers):
    """The receiver verifies as docs/driftpolicy.md tells receivers to; its clock is ours to move."""
    key = b"webhook-signing-key"
    offset = {"seconds": 0.0}
    receiver = http_receivers(signing_key=key, clock=lambda: time.time() + offset["seconds"])
    url = f"{receiver.url}/hook"

    WebhookNotifier(url, secret=key).send(notification())
    (fresh,) = receiver.received
    assert fresh.rejection is None and fresh.headers["X-Modelwarden-Signature"].startswith("t=")

    # The operator's clock ten minutes behind: the alert is stale on arrival.
    with pytest.raises(NotifyError, match="HTTP 401"):
        WebhookNotifier(url, secret=key, clock=lambda: time.time() - 600).send(notification())
    assert receiver.received[-1].rejection == "timestamp outside tolerance"

    # A captured alert replayed byte for byte after the tolerance has passed (the receiver's clock
    # moves on 301 s), and the same alert with its timestamp rewritten to look fresh.
    offset["seconds"] = 301
    replay = {"Content-Type": "application/json", "X-Modelwarden-Signature": fresh.headers["X-Modelwarden-Signature"]}
    assert requests.post(url, data=fresh.body, headers=replay, timeout=5).status_code == 401
    assert receiver.received[-1].rejection == "timestamp outside tolerance"
    retimed = re.sub(r"t=\d+", f"t={int(time.time() + 301)}", replay["X-Modelwarden-Signature"])
    assert requests.post(url, data=fresh.body, headers={**replay, "X-Modelwarden-Signature": retimed}, timeout=5).status_code == 401
    assert receiver.received[-1].rejection == "signature mismatch"

    # A wrong key never verifies.
    offset["seconds"] = 0
    with pytest.raises(NotifyError, match="HTTP 401"):
        WebhookNotifier(url, secret=b"another-key").send(notification())
    assert receiver.received[-1].rejection == "signature mismatch"


def test_documented_verification_snippet_accepts_fresh_and_rejects_stale():
    """The Python snippet in docs/driftpolicy.md, run as written against a real signed request."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "driftpolicy.md").read_text()
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", docs, re.S) if "def verified" in block]
    namespace: dict = {}
    exec(compile(snippet, "docs/driftpolicy.md", "exec"), namespace)  # noqa: S102 (our own documentation)
    verified = namespace["verified"]

    from tests.receivers import HttpReceiver

    receiver = HttpReceiver()
    try:
        WebhookNotifier(f"{receiver.url}/hook", secret=b"k").send(notification())
        (hook,) = receiver.received
    finally:
        receiver.stop()
    header = hook.headers["X-Modelwarden-Signature"]
    signed_at = int(header.split(",")[0].removeprefix("t="))
    assert verified(hook.body, header, b"k", now=signed_at + 10)
    assert not verified(hook.body, header, b"k", now=signed_at + 301)
    assert not verified(hook.body + b" ", header, b"k", now=signed_at)
    assert not verified(hook.body, header, b"other", now=signed_at)


def test_sandbox_receiver_verifies_like_a_real_receiver():
    """The demo's receiver (modelwarden.sandbox.receiver) accepts a fresh signed alert and answers
    401 to a stale one, so `make demo` shows the verification receivers are asked to do."""
    from modelwarden.sandbox.receiver import AlertReceiver

    receiver = AlertReceiver("demo-secret").start()
    try:
        WebhookNotifier(receiver.url, secret=b"demo-secret").send(notification())
        with pytest.raises(NotifyError, match="HTTP 401"):
            WebhookNotifier(receiver.url, secret=b"demo-secret", clock=lambda: time.time() - 3600).send(notification())
        with pytest.raises(NotifyError, match="HTTP 401"):
            WebhookNotifier(receiver.url).send(notification())  # unsigned
    finally:
        receiver.stop()
    assert [r["signatureValid"] for r in receiver.received] == [True, False, False]
    assert receiver.received[0]["rejected"] is None and "tolerance" in receiver.received[1]["rejected"]
    assert receiver.received[0]["payload"]["labels"]["policy"] == "gate"
