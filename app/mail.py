"""A small SMTP sender (aiosmtplib). The notifications issue moves mail onto the outbox."""

from __future__ import annotations

import logging
from email.message import EmailMessage

import aiosmtplib

from app.config import Settings, SmtpSecurity

logger = logging.getLogger(__name__)


def build_message(
    settings: Settings, *, to: str, subject: str, text: str, html: str | None = None
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


async def send(settings: Settings, message: EmailMessage) -> None:
    """Send one message over SMTP. Raises on failure; never call inside a database transaction."""
    if not settings.smtp_host:
        raise RuntimeError("SMTP_HOST is not set")
    await aiosmtplib.send(
        message,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_user or None,
        password=settings.smtp_password or None,
        use_tls=settings.smtp_security is SmtpSecurity.tls,
        start_tls=settings.smtp_security is SmtpSecurity.starttls,
        timeout=settings.smtp_timeout_seconds,
    )
