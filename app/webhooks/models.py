from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, utcnow


class WebhookDelivery(IdMixin, Base):
    """An accepted inbound webhook: the durable inbox and the record of processed ids.

    The unique constraints make a redelivery (same webhook id, or the same event id for the same
    topic) a no-op at insert time, whatever the concurrency.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("source", "webhook_id"),
        UniqueConstraint("source", "topic", "event_id"),
        Index("ix_webhook_deliveries_pending", "processed_at", "received_at"),
    )

    source: Mapped[str] = mapped_column(String(16))
    merchant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), default=None, index=True
    )
    topic: Mapped[str] = mapped_column(String(128))
    webhook_id: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str | None] = mapped_column(String(128), default=None)
    #: The raw body as received (the HMAC was computed over it).
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(default=None)
    outcome: Mapped[str | None] = mapped_column(String(255), default=None)
    #: Runs that ended in an error (the last one is in ``outcome``). At
    #: ``app.webhooks.tasks.MAX_FAILURES`` the sweeper stops retrying it and a person is told.
    failures: Mapped[int] = mapped_column(default=0, server_default="0")
