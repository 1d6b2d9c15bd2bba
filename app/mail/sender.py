"""Delivering a stored email: over SMTP (``DROPSHIP_SMTP_URL``) or, by default, as an ``.eml``
file under ``var/mail/`` (nothing leaves the machine on the embedded default).

SMTP goes through ``aiosmtplib``: ``smtp://`` upgrades with STARTTLS when the server offers it,
``smtps://`` is TLS from the first byte. Failures are split as for supplier connectors: a
temporary refusal (4xx), a network error or a session problem (authentication, TLS, sender) is
retried with backoff; only a permanent refusal of this email (5xx to its recipient or its
content) fails it for good.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiosmtplib

from app.mail.models import OutgoingEmail


class MailError(Exception):
    """Sending failed; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)  # never in a log line
    implicit_tls: bool

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("DROPSHIP_SMTP_URL: expected smtp://user:pass@host:port or smtps://")
        implicit_tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=implicit_tls,
        )


def build_message(email: OutgoingEmail) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = email.from_address
    msg["To"] = email.to_address
    if email.reply_to:
        msg["Reply-To"] = email.reply_to
    msg["Subject"] = email.subject
    msg["Message-ID"] = email.message_id
    msg["Date"] = formatdate(email.created_at.timestamp(), usegmt=True)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(email.text_body)
    if email.html_body:
        msg.add_alternative(email.html_body, subtype="html")
    return msg


class MailSender:
    """Sends one message; SMTP when configured, else a file in ``mail_dir``."""

    def __init__(self, smtp_url: str | None, mail_dir: Path, *, timeout: float = 30.0) -> None:
        self.smtp = SmtpTarget.parse(smtp_url) if smtp_url else None
        self.mail_dir = mail_dir
        self.timeout = timeout

    @property
    def describe(self) -> str:
        if self.smtp is None:
            return f"files in {self.mail_dir}"
        return f"smtp{'s' if self.smtp.implicit_tls else ''}://{self.smtp.host}:{self.smtp.port}"

    async def send(self, msg: EmailMessage) -> None:
        if self.smtp is None:
            self._write(msg)
            return
        t = self.smtp
        try:
            await aiosmtplib.send(
                msg,
                hostname=t.host,
                port=t.port,
                username=t.username,
                password=t.password,
                use_tls=t.implicit_tls,
                start_tls=False if t.implicit_tls else None,  # None: STARTTLS when offered
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # About this email's address: 5xx will not change by retrying.
            codes = [r.code for r in exc.recipients]
            raise MailError(
                f"recipient refused: {exc}", retryable=all(400 <= c < 500 for c in codes)
            ) from exc
        except aiosmtplib.SMTPDataError as exc:
            # About this message's content.
            raise MailError(
                f"mail server refused the message: {exc.code} {exc.message}",
                retryable=not 500 <= exc.code < 600,
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # About the session (authentication, TLS required, sender refused, greeting): a
            # configuration to fix, not a reason to drop this email. Retried with backoff.
            raise MailError(
                f"mail server answered {exc.code}: {exc.message}", retryable=True
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailError(f"mail server unreachable: {exc}", retryable=True) from exc
        except ValueError as exc:  # aiosmtplib's own checks of addresses and headers
            raise MailError(f"cannot send this message: {exc}", retryable=False) from exc

    def _write(self, msg: EmailMessage) -> None:
        """One file per Message-ID, written atomically: a repeated send replaces it."""
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(msg["Message-ID"]).strip("<>")) + ".eml"
        final = self.mail_dir / name
        tmp = final.with_suffix(".eml.tmp")
        try:
            self.mail_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(bytes(msg))
            os.replace(tmp, final)
        except OSError as exc:  # a full or read-only disk: worth another try later
            raise MailError(f"cannot write {final}: {exc}", retryable=True) from exc
