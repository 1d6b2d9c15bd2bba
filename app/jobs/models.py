from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, utcnow


class OutboxMessage(IdMixin, Base):
    """A job written in the same transaction as the state change that calls for it.

    The relay sends it to the broker after commit and then deletes it: a broker outage delays the
    job, never loses it; a rollback discards it with the change.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_available", "available_at"),)

    actor: Mapped[str] = mapped_column(String(128))
    args: Mapped[list[Any]] = mapped_column(default=list)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PeriodicRun(IdMixin, Base):
    """One slot of a periodic job: the unique key makes N schedulers enqueue it once."""

    __tablename__ = "periodic_runs"
    __table_args__ = (UniqueConstraint("job", "slot"),)

    job: Mapped[str] = mapped_column(String(128))
    slot: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
