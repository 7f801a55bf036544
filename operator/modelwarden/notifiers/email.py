"""Email over SMTP (smtplib): STARTTLS (default) or implicit TLS, then login when configured.

Credentials never travel in plaintext by accident: with neither STARTTLS nor implicit TLS, a
notifier with credentials refuses to connect unless `allow_plaintext_auth` was set explicitly."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from modelwarden.notifiers.base import NotifyError
from modelwarden.planning.notification import Notification

PLAINTEXT_AUTH_REFUSED = ("refusing to send SMTP credentials over a plaintext connection: enable starttls or implicitTLS, "
                          "or set allowPlaintextAuth: true")


class EmailNotifier:
    channel = "email"

    def __init__(self, host: str, port: int, sender: str, recipients: list[str], starttls: bool = True,
                 credentials: tuple[str, str] | None = None, timeout: float = 10.0, tls_context: ssl.SSLContext | None = None,
                 implicit_tls: bool = False, allow_plaintext_auth: bool = False) -> None:
        self.host, self.port, self.sender, self.recipients = host, port, sender, list(recipients)
        self.starttls, self.implicit_tls, self.allow_plaintext_auth = starttls, implicit_tls, allow_plaintext_auth
        self.credentials, self.timeout = credentials, timeout
        self.tls_context = tls_context or ssl.create_default_context()

    @property
    def encrypted(self) -> bool:
        """Whether the session is TLS before any credential or message is sent."""
        return self.implicit_tls or self.starttls

    def message(self, notification: Notification) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = notification.subject
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        lines = [notification.summary, "", *(f"{name}: {value}" for name, value in notification.fields),
                 "", *(f"{title}: {url}" for title, url in notification.links)]
        message.set_content("\n".join(lines).rstrip() + "\n")
        return message

    def _connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.tls_context)
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    def send(self, notification: Notification) -> None:
        if self.credentials and not self.encrypted and not self.allow_plaintext_auth:
            raise NotifyError(PLAINTEXT_AUTH_REFUSED)  # before connecting: nothing reaches the server
        try:
            with self._connect() as smtp:
                if self.starttls and not self.implicit_tls:
                    smtp.starttls(context=self.tls_context)  # raises if the server does not offer it: no silent downgrade
                if self.credentials:
                    smtp.login(*self.credentials)
                smtp.send_message(self.message(notification))
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"{type(exc).__name__}: {exc}") from exc
