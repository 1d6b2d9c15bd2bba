from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, TimestampMixin, utcnow


class RoutingRule(IdMixin, TimestampMixin, Base):
    """Which strategy applies to a line. Rules are tried in ``position`` order; the first whose
    SKU patterns and countries match decides; with no match the strategy is ``priority``."""

    __tablename__ = "routing_rules"

    merchant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(default=0)
    name: Mapped[str] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(16), default="priority")
    #: Shell-style SKU patterns (``TEE-*``); None matches every SKU.
    match_skus: Mapped[list[Any] | None] = mapped_column(default=None)
    #: ISO country codes of the destination; None matches every country.
    match_countries: Mapped[list[Any] | None] = mapped_column(default=None)
    active: Mapped[bool] = mapped_column(default=True)


class LineExclusion(IdMixin, Base):
    """A supplier that rejected (or failed) an order line: routing never sends it back there."""

    __tablename__ = "line_exclusions"
    __table_args__ = (UniqueConstraint("order_line_id", "supplier_id"),)

    order_line_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("order_lines.id", ondelete="CASCADE"), index=True
    )
    supplier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("suppliers.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
