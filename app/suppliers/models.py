"""Suppliers and their catalog. Order validation checks SKUs against the catalog; routing
(a later capability) chooses among these rows."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import Float, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, TimestampMixin


class Supplier(IdMixin, TimestampMixin, Base):
    __tablename__ = "suppliers"
    __table_args__ = (UniqueConstraint("merchant_id", "name"),)

    merchant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    connector: Mapped[str] = mapped_column(String(50))
    #: Connector settings (may hold credentials): Fernet-encrypted JSON.
    config_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    contact_email: Mapped[str | None] = mapped_column(String(320), default=None)
    ship_from_country: Mapped[str | None] = mapped_column(String(2), default=None)
    status: Mapped[str] = mapped_column(String(16), default="active")
    api_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    #: Shipping charged per purchase order: {"US": {"first_item": "4.00", "additional_item":
    #: "1.00"}, "*": {...}}; used for landed cost.
    shipping_rates: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: Placement throttles at this supplier (None: no limit). ``Float`` as migrated: SQLAlchemy
    #: 2.1 maps a bare ``float`` to ``Double``.
    rate_limit_per_second: Mapped[float | None] = mapped_column(Float, default=None)
    max_concurrency: Mapped[int | None] = mapped_column(default=None)


class SupplierProduct(IdMixin, TimestampMixin, Base):
    """One merchant SKU as one supplier sells it."""

    __tablename__ = "supplier_products"
    __table_args__ = (UniqueConstraint("supplier_id", "sku"),)

    merchant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    supplier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("suppliers.id", ondelete="CASCADE"))
    sku: Mapped[str] = mapped_column(String(255), index=True)
    supplier_sku: Mapped[str] = mapped_column(String(255))
    unit_cost: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    stock: Mapped[int] = mapped_column(default=0)
    lead_time_days: Mapped[int] = mapped_column(default=0)
    ships_to: Mapped[list[Any]] = mapped_column(default=lambda: ["*"])
    priority: Mapped[int] = mapped_column(default=1)
