"""The poll schedule of each open shipment, and the alerts (stale parcel, late purchase order)
waiting for the merchant's digest."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, utcnow


class TrackingPoll(Base):
    """When to ask the supplier about a shipment next. ``next_poll_at`` is None once the parcel
    is delivered or returned (nothing more to ask); while a poll job holds it, it is a lease (a
    lost job makes the shipment due again)."""

    __tablename__ = "tracking_polls"
    __table_args__ = (
        Index("ix_tracking_polls_supplier_due", "supplier_id", "next_poll_at"),
        Index("ix_tracking_polls_moved", "moved_at"),
        # The oldest due check, for the tracking poll lag metric (one index lookup).
        Index("ix_tracking_polls_next", "next_poll_at"),
    )

    shipment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("shipments.id", ondelete="CASCADE"), primary_key=True
    )
    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    supplier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("suppliers.id", ondelete="CASCADE"))
    next_poll_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    last_checked_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The last poll that brought something new (an event, a new estimate).
    last_change_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The parcel's newest event (its shipping time before any): what staleness is measured on.
    moved_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Polls in a row that brought nothing new: the backoff exponent.
    idle_polls: Mapped[int] = mapped_column(default=0)
    estimated_delivery_at: Mapped[datetime | None] = mapped_column(default=None)
    #: A digest of the supplier's last answer: the same answer again is nothing new, without
    #: reading the parcel's events.
    answer_digest: Mapped[str | None] = mapped_column(String(32), default=None)


class AlertKind:
    STALE_SHIPMENT = "stale_shipment"
    LATE_PURCHASE_ORDER = "late_purchase_order"


class TrackingAlert(IdMixin, Base):
    """A stale parcel or a late purchase order, once (``key``), until the merchant's digest
    email lists it (``email_id``)."""

    __tablename__ = "tracking_alerts"
    __table_args__ = (
        UniqueConstraint("merchant_id", "key"),
        Index("ix_tracking_alerts_undigested", "digested_at", "merchant_id"),
    )

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(200))
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), default=None
    )
    purchase_order_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    shipment_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    summary: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    digested_at: Mapped[datetime | None] = mapped_column(default=None)
    email_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
