"""Build the notifiers of a policy's spec.actions.alert, keyed by channel name; secrets read by reference."""

from __future__ import annotations

from collections.abc import Callable

from modelwarden.api.driftpolicy import AlertSpec
from modelwarden.notifiers.alertmanager import AlertmanagerNotifier
from modelwarden.notifiers.base import Notifier, SecretReader
from modelwarden.notifiers.email import EmailNotifier
from modelwarden.notifiers.events import EventNotifier, PostEvent
from modelwarden.notifiers.noop import NoopNotifier
from modelwarden.notifiers.slack import SlackNotifier
from modelwarden.notifiers.webhook import WebhookNotifier


def _slack(spec: AlertSpec, secret: SecretReader) -> Notifier:
    assert spec.slack is not None
    return SlackNotifier(secret(spec.slack.webhook_secret_ref.name, spec.slack.webhook_secret_ref.key).strip(), spec.slack.channel)


def _webhook(spec: AlertSpec, secret: SecretReader) -> Notifier:
    assert spec.webhook is not None
    ref = spec.webhook.hmac_secret_ref
    return WebhookNotifier(spec.webhook.url, secret(ref.name, ref.key).encode() if ref else None, spec.webhook.headers)


def _alertmanager(spec: AlertSpec, secret: SecretReader) -> Notifier:
    assert spec.alertmanager is not None
    return AlertmanagerNotifier(spec.alertmanager.url, spec.alertmanager.labels)


def _email(spec: AlertSpec, secret: SecretReader) -> Notifier:
    email = spec.email
    assert email is not None
    auth = email.auth_secret_ref
    credentials = (secret(auth.secret_name, auth.username_key), secret(auth.secret_name, auth.password_key)) if auth else None
    return EmailNotifier(email.host, email.port, email.from_address, email.to, email.starttls, credentials)


BUILDERS: dict[str, Callable[[AlertSpec, SecretReader], Notifier]] = {
    "slack": _slack,
    "webhook": _webhook,
    "alertmanager": _alertmanager,
    "email": _email,
}


def configured_channels(spec: AlertSpec | None) -> list[str]:
    return [name for name in BUILDERS if spec is not None and getattr(spec, name) is not None]


def build(channel: str, spec: AlertSpec | None, secret: SecretReader) -> Notifier:
    """One channel's notifier (a no-op when not configured); reading its secret may raise."""
    if spec is None or getattr(spec, channel, None) is None:
        return NoopNotifier()
    return BUILDERS[channel](spec, secret)


def event_notifier(post: PostEvent) -> Notifier:
    return EventNotifier(post)
