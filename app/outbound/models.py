"""Webhook endpoints of a merchant, one delivery per (endpoint, event), and each attempt."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app import limits
from app.db import Base, IdMixin, TimestampMixin, utcnow


class DeliveryStatus:
    PENDING = "pending"  # to be sent, or backing off between attempts
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"  # gave up: a day of failures, or the endpoint was disabled


class WebhookEndpoint(IdMixin, TimestampMixin, Base):
    """Where a merchant wants to hear of which events.

    The signing secret is Fernet-encrypted (``SecretBox``) and shown once. ``failing_since`` and
    ``consecutive_failures`` count failed attempts since the last success: an endpoint that has
    failed for a day is disabled (``disabled_at``, ``disabled_reason``) and the merchant told.
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_merchant", "merchant_id", "created_at"),)

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(limits.MAX_URL))
    #: Public event names (``app.events.models.EventType``), or ``["*"]``.
    events: Mapped[list[Any]] = mapped_column(default=list)
    description: Mapped[str | None] = mapped_column(String(limits.MAX_SHORT_TEXT), default=None)
    enabled: Mapped[bool] = mapped_column(default=True)
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    #: After a rotation the old secret still signs (a second signature) until this: receivers
    #: switch over without missing a message.
    previous_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    failing_since: Mapped[datetime | None] = mapped_column(default=None)
    last_success_at: Mapped[datetime | None] = mapped_column(default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    disabled_reason: Mapped[str | None] = mapped_column(Text, default=None)

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


class EndpointDelivery(IdMixin, Base):
    """One event for one endpoint: unique on (endpoint, event), so however often the event is
    handled it is delivered (at least) once. ``body`` is the JSON sent, built once: every attempt
    sends the same bytes under the same ``webhook-id`` (the event's), with a new timestamp."""

    __tablename__ = "webhook_endpoint_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_endpoint_deliveries_endpoint", "endpoint_id", "created_at"),
        Index("ix_webhook_endpoint_deliveries_status", "status", "created_at"),
    )

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    #: The lifecycle event's id (no foreign key: events are purged before their deliveries).
    event_id: Mapped[uuid.UUID]
    event_type: Mapped[str] = mapped_column(String(64))
    #: The ``webhook-id`` header and the payload's ``id``: the same on every attempt.
    message_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    last_status_code: Mapped[int | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    #: A worker took it for sending (a lease: see ``app.outbound.tasks``).
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Backing off: not before this (the sweeper respects it).
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Retries stop after this (a day after the event, or after a manual retry).
    retry_until: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class DeliveryAttempt(IdMixin, Base):
    """One POST to the endpoint and what came back: the delivery log."""

    __tablename__ = "webhook_endpoint_attempts"
    __table_args__ = (
        Index("ix_webhook_endpoint_attempts_delivery", "delivery_id", "attempted_at"),
    )

    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoint_deliveries.id", ondelete="CASCADE")
    )
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(default=None)
    duration_ms: Mapped[int] = mapped_column(default=0)
    #: The first few hundred characters of the answer, for the merchant's debugging.
    response_excerpt: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
