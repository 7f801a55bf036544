"""Build the notifiers of a policy's spec.actions.alert, keyed by channel name; secrets read by reference.

Every destination is checked against the operator's egress rules (`Refusal`) before any Secret
the channel would send there is read (for Slack the URL is itself the Secret: checked once read).
"""

from __future__ import annotations

from collections.abc import Callable

from modelwarden.api.actions import AlertSpec
from modelwarden.notifiers.alertmanager import AlertmanagerNotifier
from modelwarden.notifiers.base import Notifier, NotifyError, SecretReader
from modelwarden.notifiers.email import EmailNotifier
from modelwarden.notifiers.events import EventNotifier, PostEvent
from modelwarden.notifiers.noop import NoopNotifier
from modelwarden.notifiers.slack import SlackNotifier
from modelwarden.notifiers.webhook import WebhookNotifier

Refusal = Callable[[str], "str | None"]  # destination (URL or host) -> why it is not allowed, or None


def _allowed(refusal: Refusal, destination: str) -> str:
    reason = refusal(destination)
    if reason:
        raise NotifyError(reason)
    return destination


def _slack(spec: AlertSpec, secret: SecretReader, refusal: Refusal) -> Notifier:
    assert spec.slack is not None
    url = secret(spec.slack.webhook_secret_ref.name, spec.slack.webhook_secret_ref.key).strip()
    return SlackNotifier(_allowed(refusal, url), spec.slack.channel)


def _webhook(spec: AlertSpec, secret: SecretReader, refusal: Refusal) -> Notifier:
    assert spec.webhook is not None
    url = _allowed(refusal, spec.webhook.url)
    ref = spec.webhook.hmac_secret_ref
    return WebhookNotifier(url, secret(ref.name, ref.key).encode() if ref else None, spec.webhook.headers)


def _alertmanager(spec: AlertSpec, secret: SecretReader, refusal: Refusal) -> Notifier:
    assert spec.alertmanager is not None
    return AlertmanagerNotifier(_allowed(refusal, spec.alertmanager.url), spec.alertmanager.labels)


def _email(spec: AlertSpec, secret: SecretReader, refusal: Refusal) -> Notifier:
    email = spec.email
    assert email is not None
    _allowed(refusal, email.host)
    auth = email.auth_secret_ref
    credentials = (secret(auth.secret_name, auth.username_key), secret(auth.secret_name, auth.password_key)) if auth else None
    return EmailNotifier(email.host, email.port, email.from_address, email.to, email.starttls, credentials,
                         implicit_tls=email.implicit_tls, allow_plaintext_auth=email.allow_plaintext_auth)


BUILDERS: dict[str, Callable[[AlertSpec, SecretReader, Refusal], Notifier]] = {
    "slack": _slack,
    "webhook": _webhook,
    "alertmanager": _alertmanager,
    "email": _email,
}


def configured_channels(spec: AlertSpec | None) -> list[str]:
    return [name for name in BUILDERS if spec is not None and getattr(spec, name) is not None]


def build(channel: str, spec: AlertSpec | None, secret: SecretReader, refusal: Refusal = lambda _: None) -> Notifier:
    """One channel's notifier (a no-op when not configured); reading its secret, or a destination
    the egress rules refuse (NotifyError), may raise."""
    if spec is None or getattr(spec, channel, None) is None:
        return NoopNotifier()
    return BUILDERS[channel](spec, secret, refusal)


def event_notifier(post: PostEvent) -> Notifier:
    return EventNotifier(post)
