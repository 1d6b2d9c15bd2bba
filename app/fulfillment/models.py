"""Shipments told to Shopify: one fulfillment per shipment, its later events, and shops whose
sync stopped because Shopify refused their token."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, TimestampMixin, utcnow


class SyncState:
    PENDING = "pending"
    #: About to call, or called without learning the outcome: look before creating again.
    CREATING = "creating"
    CREATED = "created"
    FAILED = "failed"  # refused by Shopify, or given up: in the exceptions queue
    SKIPPED = "skipped"  # nothing to do (sync off, no token, not a Shopify order)

    OPEN = (PENDING, CREATING)


class ShopifyFulfillment(IdMixin, TimestampMixin, Base):
    """One shipment's fulfillment in Shopify. The row is written (``creating``) and committed
    before ``fulfillmentCreate`` is sent, so a retry knows a call may have happened and looks at
    the order's fulfillments before creating one again."""

    __tablename__ = "shopify_fulfillments"
    __table_args__ = (Index("ix_shopify_fulfillments_state_next", "state", "next_attempt_at"),)

    shipment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("shipments.id", ondelete="CASCADE"), unique=True
    )
    merchant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=SyncState.PENDING)
    #: The first (usually only) fulfillment; ``fulfillment_ids`` has one per Shopify location.
    shopify_fulfillment_id: Mapped[str | None] = mapped_column(String(255), default=None)
    fulfillment_ids: Mapped[list[Any]] = mapped_column(default=list)
    attempts: Mapped[int] = mapped_column(default=0)
    #: When the current call started (a lease: nobody else calls for this shipment until then).
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    #: The last tracking status pushed as a fulfillment event.
    last_event_status: Mapped[str | None] = mapped_column(String(32), default=None)


class ShopifyFulfillmentEvent(IdMixin, TimestampMixin, Base):
    """A tracking status pushed to the shipment's fulfillment (``fulfillmentEventCreate``), once
    per shipment and status."""

    __tablename__ = "shopify_fulfillment_events"
    __table_args__ = (
        UniqueConstraint("shipment_id", "status"),
        Index("ix_shopify_fulfillment_events_state_next", "state", "next_attempt_at"),
    )

    shipment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shipments.id", ondelete="CASCADE"))
    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime | None] = mapped_column(default=None)
    state: Mapped[str] = mapped_column(String(16), default=SyncState.PENDING)
    shopify_event_id: Mapped[str | None] = mapped_column(String(255), default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    #: When a worker took it to push (a lease): a second job for it leaves it alone meanwhile.
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)


class ShopifySyncStop(Base):
    """A shop whose token Shopify refused. The sync stays stopped while the merchant still has
    that very token (the encrypted bytes, compared in SQL); a new token resumes it."""

    __tablename__ = "shopify_sync_stops"

    merchant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), primary_key=True
    )
    refused_token: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    reason: Mapped[str] = mapped_column(Text)
    stopped_at: Mapped[datetime] = mapped_column(default=utcnow)


class ShopifyRefund(IdMixin, TimestampMixin, Base):
    """A refund made through Stripe, recorded on the Shopify order (``refundCreate``) without
    moving money a second time. Written (``creating``) and committed before the call: Shopify
    takes no idempotency key, so a retry reads the order's refunds first and adopts the one
    whose note names our refund."""

    __tablename__ = "shopify_refunds"
    __table_args__ = (Index("ix_shopify_refunds_state_next", "state", "next_attempt_at"),)

    #: Our refund (``refunds.id``): one record per refund.
    refund_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=SyncState.PENDING)
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    #: ``[{"line_id", "quantity"}]`` (our order lines) and whether shipping was refunded.
    lines: Mapped[list[Any]] = mapped_column(default=list)
    shipping: Mapped[bool] = mapped_column(default=False)
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255), default=None)
    shopify_refund_id: Mapped[str | None] = mapped_column(String(255), default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
