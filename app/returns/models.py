"""Returns (RMA): items coming back from the customer to one supplier, with their own state
machine. A return belongs to one purchase order (one supplier); a request over lines of several
suppliers becomes one return per purchase order."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app import limits
from app.db import Base, IdMixin, TimestampMixin


class ReturnStatus:
    REQUESTED = "requested"  # waiting for the merchant's decision
    APPROVED = "approved"  # the customer may send it (instructions once ``authorized_at``)
    REJECTED = "rejected"
    RECEIVED = "received"  # back at the supplier (or the merchant), condition known

    ALL = (REQUESTED, APPROVED, REJECTED, RECEIVED)
    #: Allowed transitions; anything else is refused (HTTP 409).
    TRANSITIONS: dict[str, frozenset[str]] = {
        REQUESTED: frozenset({APPROVED, REJECTED}),
        APPROVED: frozenset({RECEIVED}),
        REJECTED: frozenset(),
        RECEIVED: frozenset(),
    }
    #: Returns whose quantities count against what may still be returned.
    COUNTED = (REQUESTED, APPROVED, RECEIVED)


class ReturnOrigin:
    MERCHANT = "merchant"
    CUSTOMER = "customer"
    #: The supplier had already shipped when the order was cancelled.
    CANCELLATION = "cancellation"

    ALL = (MERCHANT, CUSTOMER, CANCELLATION)


class ReturnCondition:
    RESELLABLE = "resellable"  # back in the supplier's stock
    DAMAGED = "damaged"  # disposed of

    ALL = (RESELLABLE, DAMAGED)


class Return(IdMixin, TimestampMixin, Base):
    __tablename__ = "returns"
    __table_args__ = (
        UniqueConstraint("merchant_id", "number"),
        #: One return per occurrence that opens one by itself (``cancel_refused:<po>``).
        UniqueConstraint("merchant_id", "source_key"),
        Index("ix_returns_merchant_created", "merchant_id", "created_at", "id"),
        Index("ix_returns_supplier_status", "supplier_id", "status", "created_at"),
        Index("ix_returns_status_approved", "status", "approved_at"),
    )

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    purchase_order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("purchase_orders.id", ondelete="CASCADE"), index=True
    )
    supplier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("suppliers.id", ondelete="CASCADE"))
    #: The RMA number, ``R-<order name>-<n>``.
    number: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=ReturnStatus.REQUESTED)
    origin: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    rejection_reason: Mapped[str | None] = mapped_column(Text, default=None)
    source_key: Mapped[str | None] = mapped_column(String(200), default=None)
    exchange: Mapped[bool] = mapped_column(default=False)
    exchange_sku: Mapped[str | None] = mapped_column(String(255), default=None)
    exchange_variant_id: Mapped[str | None] = mapped_column(String(32), default=None)
    #: What the customer is told (the supplier's, else the merchant's), fixed at approval.
    return_address: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    label_url: Mapped[str | None] = mapped_column(String(limits.MAX_URL), default=None)
    supplier_reference: Mapped[str | None] = mapped_column(String(255), default=None)
    instructions: Mapped[str | None] = mapped_column(Text, default=None)
    condition: Mapped[str | None] = mapped_column(String(16), default=None)
    received_by: Mapped[str | None] = mapped_column(String(16), default=None)
    requested_at: Mapped[datetime]
    approved_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The supplier was told (or offers nothing): the instructions above are final.
    authorized_at: Mapped[datetime | None] = mapped_column(default=None)
    rejected_at: Mapped[datetime | None] = mapped_column(default=None)
    received_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The supplier call: attempts, last error, no attempt before ``next_attempt_at``.
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The exceptions-queue entry opened when the return stalled (resolved when received).
    stall_case_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("exception_cases.id", ondelete="SET NULL"), default=None
    )
    replacement_order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("orders.id", ondelete="SET NULL"), default=None
    )

    lines: Mapped[list[ReturnLine]] = relationship(
        lazy="raise", order_by="ReturnLine.position", cascade="all, delete-orphan"
    )


class ReturnLine(IdMixin, Base):
    __tablename__ = "return_lines"

    return_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("returns.id", ondelete="CASCADE"), index=True
    )
    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    order_line_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("order_lines.id", ondelete="CASCADE")
    )
    purchase_order_line_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("purchase_order_lines.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    sku: Mapped[str] = mapped_column(String(255))
    supplier_sku: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(limits.MAX_TITLE))
    quantity: Mapped[int]
