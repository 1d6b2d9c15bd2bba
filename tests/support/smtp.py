"""A real SMTP server for tests (aiosmtpd, in its own thread) that keeps what it receives."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.support import services as svc


class Inbox:
    """The SMTP server's handler: every accepted message, parsed; ``refuse`` queues answers to
    give instead of accepting (e.g. ``"451 4.3.0 try again later"``)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse: list[str] = []
        #: Answers to give to MAIL FROM instead of accepting (session-level trouble).
        self.refuse_sender: list[str] = []
        self.lock = threading.Lock()
        self.url = ""

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            if self.refuse_sender:
                return self.refuse_sender.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.refuse:
                return self.refuse.pop(0)
            raw = envelope.original_content or envelope.content
            msg = message_from_bytes(raw, policy=policy.default)
            assert isinstance(msg, EmailMessage)
            self.messages.append(msg)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]


def smtp_inbox() -> Iterator[Inbox]:
    inbox = Inbox()
    port = svc.free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    try:
        yield inbox
    finally:
        controller.stop()
