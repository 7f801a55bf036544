"""Email over SMTP (smtplib): STARTTLS and login when configured."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from modelwarden.notifiers.base import NotifyError
from modelwarden.planning.notification import Notification


class EmailNotifier:
    channel = "email"

    def __init__(self, host: str, port: int, sender: str, recipients: list[str], starttls: bool = True,
                 credentials: tuple[str, str] | None = None, timeout: float = 10.0, tls_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.sender, self.recipients = host, port, sender, list(recipients)
        self.starttls, self.credentials, self.timeout = starttls, credentials, timeout
        self.tls_context = tls_context or ssl.create_default_context()

    def message(self, notification: Notification) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = notification.subject
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        lines = [notification.summary, "", *(f"{name}: {value}" for name, value in notification.fields),
                 "", *(f"{title}: {url}" for title, url in notification.links)]
        message.set_content("\n".join(lines).rstrip() + "\n")
        return message

    def send(self, notification: Notification) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self.tls_context)
                if self.credentials:
                    smtp.login(*self.credentials)
                smtp.send_message(self.message(notification))
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"{type(exc).__name__}: {exc}") from exc
