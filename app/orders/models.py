from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, IdMixin, TimestampMixin, UnsignedBigInt, utcnow
from app.timeline.models import OrderEvent


class OrderStatus:
    """Where an order is in its life. Validation moves ``received`` to one of the next three."""

    RECEIVED = "received"
    ON_HOLD = "on_hold"
    NEEDS_ATTENTION = "needs_attention"
    READY_TO_ROUTE = "ready_to_route"
    #: Every line is with a supplier (purchase orders placed or being placed).
    ROUTED = "routed"
    #: Some lines are with suppliers; the rest wait in the exceptions queue.
    PARTIALLY_ROUTED = "partially_routed"
    #: Every line is on its way to the customer (each supplier shipped its part).
    SHIPPED = "shipped"
    #: Every parcel arrived.
    DELIVERED = "delivered"
    CANCELLED = "cancelled"

    ALL = (
        RECEIVED,
        ON_HOLD,
        NEEDS_ATTENTION,
        READY_TO_ROUTE,
        ROUTED,
        PARTIALLY_ROUTED,
        SHIPPED,
        DELIVERED,
        CANCELLED,
    )
    #: Statuses in which the order has not yet been handed to any supplier.
    UNROUTED = (RECEIVED, ON_HOLD, NEEDS_ATTENTION, READY_TO_ROUTE)


class OrderSource:
    SHOPIFY = "shopify"
    MANUAL = "manual"
    CSV = "csv"


class Customer(IdMixin, TimestampMixin, Base):
    __tablename__ = "customers"
    __table_args__ = (UniqueConstraint("merchant_id", "shopify_customer_id"),)

    merchant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    shopify_customer_id: Mapped[int | None] = mapped_column(UnsignedBigInt, default=None)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    first_name: Mapped[str | None] = mapped_column(String(255), default=None)
    last_name: Mapped[str | None] = mapped_column(String(255), default=None)
    phone: Mapped[str | None] = mapped_column(String(64), default=None)
    redacted_at: Mapped[datetime | None] = mapped_column(default=None)


class Order(IdMixin, TimestampMixin, Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("merchant_id", "shopify_order_id"),
        UniqueConstraint("merchant_id", "external_ref"),
        Index("ix_orders_merchant_created", "merchant_id", "created_at", "id"),
        Index("ix_orders_merchant_status", "merchant_id", "status", "created_at"),
    )

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))
    #: Shopify's unsigned 64-bit order id, exact (never a float), beside our own id.
    shopify_order_id: Mapped[int | None] = mapped_column(UnsignedBigInt, default=None)
    shopify_gid: Mapped[str | None] = mapped_column(String(255), default=None)
    #: The merchant's own reference for manual and CSV orders (unique per merchant).
    external_ref: Mapped[str | None] = mapped_column(String(255), default=None)
    name: Mapped[str] = mapped_column(String(255))
    #: The shop's order number: a signed 64-bit integer, not an id.
    order_number: Mapped[int | None] = mapped_column(BigInteger, default=None)
    customer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), default=None
    )
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_price: Mapped[Decimal]
    total_tax: Mapped[Decimal]
    total_shipping: Mapped[Decimal]
    total_discounts: Mapped[Decimal]
    total_price: Mapped[Decimal]
    financial_status: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[str] = mapped_column(String(32), default=OrderStatus.RECEIVED)
    #: Why the order is on hold or needs attention (also on the timeline).
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    shipping_address: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    billing_address: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    shipping_method: Mapped[str | None] = mapped_column(String(255), default=None)
    stripe_payment_reference: Mapped[str | None] = mapped_column(String(255), default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    #: The customer's language as the store gave it (Shopify's ``customer_locale``, ``de-DE``):
    #: customer emails pick their language from it.
    customer_locale: Mapped[str | None] = mapped_column(String(16), default=None)
    #: Shopify's ``updated_at`` of the newest payload applied: older replays never overwrite.
    source_updated_at: Mapped[datetime | None] = mapped_column(default=None)
    placed_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Unguessable token for the customer's tracking page.
    tracking_token: Mapped[str] = mapped_column(String(64), unique=True)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order",
        lazy="raise",
        order_by="OrderLine.position",
        cascade="all, delete-orphan",
    )
    events: Mapped[list[OrderEvent]] = relationship(
        lazy="raise", order_by="OrderEvent.created_at", cascade="all, delete-orphan"
    )


class OrderLine(IdMixin, Base):
    __tablename__ = "order_lines"

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    position: Mapped[int]
    shopify_line_id: Mapped[int | None] = mapped_column(UnsignedBigInt, default=None)
    sku: Mapped[str | None] = mapped_column(String(255), default=None)
    variant_id: Mapped[int | None] = mapped_column(UnsignedBigInt, default=None)
    product_id: Mapped[int | None] = mapped_column(UnsignedBigInt, default=None)
    title: Mapped[str] = mapped_column(String(512))
    variant_title: Mapped[str | None] = mapped_column(String(512), default=None)
    quantity: Mapped[int]
    #: Unit price the customer paid, in the order's currency.
    price: Mapped[Decimal]
    total_discount: Mapped[Decimal] = mapped_column(default=Decimal("0"))
    requires_shipping: Mapped[bool] = mapped_column(default=True)

    order: Mapped[Order] = relationship(back_populates="lines", lazy="raise")
