"""Outgoing emails: rendered and stored in the transaction of the event that calls for them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, utcnow


class EmailStatus:
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"  # refused for good (bad address, rejected by the server)


class OutgoingEmail(IdMixin, Base):
    """One email for one event.

    ``key`` names the event (``po-notice:<purchase order id>``): unique per merchant, so however
    often an event is processed it yields one email. ``message_id`` is fixed when the email is
    stored, so a retried send after a crash carries the same ``Message-ID`` (mail servers and
    clients recognise the repeat) and, without SMTP, overwrites the same ``.eml`` file.
    """

    __tablename__ = "emails"
    __table_args__ = (
        UniqueConstraint("merchant_id", "key"),
        Index("ix_emails_status_created", "status", "created_at"),
        Index("ix_emails_order", "order_id"),
    )

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), default=None
    )
    purchase_order_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    to_address: Mapped[str] = mapped_column(String(320))
    from_address: Mapped[str] = mapped_column(String(320))
    #: Where the customer's answers go (the merchant's address); None: back to the sender.
    reply_to: Mapped[str | None] = mapped_column(String(320), default=None)
    subject: Mapped[str] = mapped_column(String(300))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text, default=None)
    message_id: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default=EmailStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    #: When a worker took it for sending (a lease: see ``app.mail.tasks``).
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    #: After a temporary failure: not before this (the sweeper respects the backoff).
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
