"""Purchase orders: what one supplier must ship for one order, with its own state machine."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app import limits
from app.db import Base, IdMixin, TimestampMixin, utcnow


class POStatus:
    PENDING = "pending"  # decided, not yet handed to the supplier
    PLACED = "placed"  # handed over (or visible in the portal), not confirmed
    ACCEPTED = "accepted"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    FAILED = "failed"

    ALL = (
        PENDING,
        PLACED,
        ACCEPTED,
        PARTIALLY_SHIPPED,
        SHIPPED,
        DELIVERED,
        REJECTED,
        CANCELLED,
        FAILED,
    )
    #: Allowed transitions; anything else is refused (HTTP 409).
    TRANSITIONS: dict[str, frozenset[str]] = {
        PENDING: frozenset({PLACED, ACCEPTED, REJECTED, CANCELLED, FAILED}),
        PLACED: frozenset({ACCEPTED, REJECTED, CANCELLED, FAILED, PARTIALLY_SHIPPED, SHIPPED}),
        ACCEPTED: frozenset({PARTIALLY_SHIPPED, SHIPPED, CANCELLED}),
        PARTIALLY_SHIPPED: frozenset({PARTIALLY_SHIPPED, SHIPPED}),
        SHIPPED: frozenset({DELIVERED}),
        DELIVERED: frozenset(),
        REJECTED: frozenset(),
        CANCELLED: frozenset(),
        FAILED: frozenset(),
    }
    #: Still owed by the supplier (lines in these POs are not rerouted automatically).
    OPEN = (PENDING, PLACED, ACCEPTED, PARTIALLY_SHIPPED)


class PurchaseOrder(IdMixin, TimestampMixin, Base):
    __tablename__ = "purchase_orders"
    __table_args__ = (
        UniqueConstraint("merchant_id", "number"),
        Index("ix_purchase_orders_supplier_status", "supplier_id", "status", "created_at"),
    )

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    supplier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("suppliers.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default=POStatus.PENDING)
    #: Sent with every placement attempt so the supplier can recognise a retry.
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    supplier_reference: Mapped[str | None] = mapped_column(String(255), default=None)
    currency: Mapped[str] = mapped_column(String(3))
    total_cost: Mapped[Decimal]
    ship_to: Mapped[dict[str, Any]] = mapped_column(default=dict)
    shipping_method: Mapped[str | None] = mapped_column(String(255), default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    placed_at: Mapped[datetime | None] = mapped_column(default=None)
    accepted_at: Mapped[datetime | None] = mapped_column(default=None)
    shipped_at: Mapped[datetime | None] = mapped_column(default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Set when placement exhausted its retries: the merchant's dead-letter view.
    dead_lettered_at: Mapped[datetime | None] = mapped_column(default=None)
    #: While placement backs off: no attempt (sweeper or duplicate message) before this.
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The merchant (or customer) asked the supplier not to ship (``app.cancellations``).
    cancellation_requested_at: Mapped[datetime | None] = mapped_column(default=None)

    lines: Mapped[list[PurchaseOrderLine]] = relationship(
        lazy="raise", order_by="PurchaseOrderLine.position", cascade="all, delete-orphan"
    )


class PurchaseOrderLine(IdMixin, Base):
    __tablename__ = "purchase_order_lines"

    purchase_order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("purchase_orders.id", ondelete="CASCADE"), index=True
    )
    order_line_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("order_lines.id", ondelete="CASCADE"), index=True
    )
    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    position: Mapped[int]
    sku: Mapped[str] = mapped_column(String(255))
    supplier_sku: Mapped[str] = mapped_column(String(255))
    quantity: Mapped[int]
    unit_cost: Mapped[Decimal]
    quantity_shipped: Mapped[int] = mapped_column(default=0)
    #: ``open`` while the supplier owes it; ``rejected`` once sent back to routing.
    status: Mapped[str] = mapped_column(String(16), default="open")


class Shipment(IdMixin, Base):
    __tablename__ = "shipments"
    __table_args__ = (UniqueConstraint("purchase_order_id", "tracking_number"),)

    purchase_order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("purchase_orders.id", ondelete="CASCADE"), index=True
    )
    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    carrier: Mapped[str | None] = mapped_column(String(100), default=None)
    tracking_number: Mapped[str | None] = mapped_column(String(255), default=None)
    tracking_url: Mapped[str | None] = mapped_column(String(limits.MAX_URL), default=None)
    status: Mapped[str] = mapped_column(String(32), default="shipped")
    shipped_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    #: When a source (carrier, aggregator) expects it.
    estimated_delivery_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The latest tracking event's time: an older event arriving late does not set the status.
    last_event_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ShipmentLine(IdMixin, Base):
    __tablename__ = "shipment_lines"

    shipment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("shipments.id", ondelete="CASCADE"), index=True
    )
    purchase_order_line_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("purchase_order_lines.id", ondelete="CASCADE")
    )
    quantity: Mapped[int]


class TrackingEvent(IdMixin, Base):
    __tablename__ = "tracking_events"
    __table_args__ = (UniqueConstraint("shipment_id", "status", "occurred_at"),)

    shipment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("shipments.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime]
    description: Mapped[str | None] = mapped_column(Text, default=None)
    #: Where it happened, as the source says it (a city, a country; never a street address).
    location: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
