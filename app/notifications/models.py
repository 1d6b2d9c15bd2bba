"""A merchant's own version of a customer email, per kind and language."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app import limits
from app.db import Base, IdMixin, utcnow


class NotificationTemplate(IdMixin, Base):
    """Replaces the shipped template of ``kind`` in ``locale`` for one merchant; deleting it
    brings the shipped one back."""

    __tablename__ = "notification_templates"
    __table_args__ = (UniqueConstraint("merchant_id", "kind", "locale"),)

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    locale: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(limits.MAX_TEMPLATE_SUBJECT))
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
