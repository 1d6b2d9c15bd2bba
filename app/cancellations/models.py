"""A cancellation of an order, and its progress at each supplier."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, TimestampMixin


class CancelOrigin:
    MERCHANT = "merchant"
    SHOPIFY = "shopify"
    CUSTOMER = "customer"

    ALL = (MERCHANT, SHOPIFY, CUSTOMER)


class CancellationStatus:
    #: Waiting for some purchase order's supplier.
    IN_PROGRESS = "in_progress"
    #: Every purchase order resolved; the order is cancelled.
    CANCELLED = "cancelled"


class POCancelStatus:
    #: The ``purchase_order.cancel`` job asks the supplier (or waits for a placement in flight).
    REQUESTED = "requested"
    #: The supplier confirms through the supplier API (portal).
    AWAITING_SUPPLIER = "awaiting_supplier"
    #: The channel cannot cancel, or gave up: the merchant asks the supplier and answers.
    NEEDS_MERCHANT = "needs_merchant"
    #: Resolved: the supplier will not ship what was unshipped.
    CANCELLED = "cancelled"
    #: Resolved: too late, it shipped (the lines become a return).
    REFUSED = "refused"

    RESOLVED = (CANCELLED, REFUSED)
    OPEN = (REQUESTED, AWAITING_SUPPLIER, NEEDS_MERCHANT)


class OrderCancellation(IdMixin, TimestampMixin, Base):
    """One per order: who asked, why, and whether it is done."""

    __tablename__ = "order_cancellations"

    merchant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), unique=True
    )
    origin: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=CancellationStatus.IN_PROGRESS)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class PurchaseOrderCancellation(IdMixin, TimestampMixin, Base):
    """The cancellation of one purchase order at its supplier (one per purchase order).

    ``lines`` are what it cancelled (``[{"order_line_id", "purchase_order_line_id",
    "quantity"}]``), ``refused_lines`` what shipped or will (the return's lines)."""

    __tablename__ = "purchase_order_cancellations"
    __table_args__ = (Index("ix_po_cancellations_open", "status", "updated_at"),)

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    purchase_order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("purchase_orders.id", ondelete="CASCADE"), unique=True
    )
    status: Mapped[str] = mapped_column(String(32), default=POCancelStatus.REQUESTED)
    #: Sent with every attempt, so a supplier can recognise a retry.
    idempotency_key: Mapped[str] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(default=0)
    #: While backing off (or waiting for a placement in flight): no attempt before this.
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    lines: Mapped[list[Any]] = mapped_column(default=list)
    refused_lines: Mapped[list[Any]] = mapped_column(default=list)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
