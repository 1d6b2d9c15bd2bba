from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, utcnow


class ExceptionCase(IdMixin, Base):
    """Something that needs a person, with the reason: the merchant's exceptions queue."""

    __tablename__ = "exception_cases"
    __table_args__ = (
        Index("ix_exception_cases_open", "merchant_id", "resolved_at", "created_at"),
        # Open cases of every merchant by kind, for the metrics (an index range, not a scan).
        Index("ix_exception_cases_kind", "resolved_at", "kind"),
    )

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), default=None, index=True
    )
    kind: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
