"""What a supplier owes the merchant back: the cost of purchase orders cancelled after
placement, and of returned lines."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, TimestampMixin


class CreditKind:
    CANCELLATION = "cancellation"
    RETURN = "return"

    ALL = (CANCELLATION, RETURN)


class CreditStatus:
    EXPECTED = "expected"
    SETTLED = "settled"

    ALL = (EXPECTED, SETTLED)


class SupplierCredit(IdMixin, TimestampMixin, Base):
    """``source_key`` (``cancellation:<purchase order>``, ``return:<return>``) is unique per
    merchant: the event that creates a credit may be processed twice, the credit exists once."""

    __tablename__ = "supplier_credits"
    __table_args__ = (
        UniqueConstraint("merchant_id", "source_key"),
        Index("ix_supplier_credits_merchant", "merchant_id", "status", "created_at"),
    )

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    supplier_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("suppliers.id", ondelete="CASCADE"), index=True
    )
    purchase_order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("purchase_orders.id", ondelete="SET NULL"), default=None
    )
    kind: Mapped[str] = mapped_column(String(16))
    source_key: Mapped[str] = mapped_column(String(200))
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default=CreditStatus.EXPECTED)
    settled_at: Mapped[datetime | None] = mapped_column(default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
