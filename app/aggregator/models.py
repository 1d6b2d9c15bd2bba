"""A shipment followed through a carrier-tracking aggregator (one row per shipment)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, TimestampMixin


class RegistrationState:
    #: To register with the provider (the ``aggregator.register`` task).
    PENDING = "pending"
    #: Registered: pushes arrive, and the poll runs when they do not.
    REGISTERED = "registered"
    #: The provider refused the number for good (``last_error`` says why).
    FAILED = "failed"
    #: Delivered or returned: nothing more to follow.
    DONE = "done"


class TrackingRegistration(IdMixin, TimestampMixin, Base):
    __tablename__ = "tracking_registrations"
    __table_args__ = (
        UniqueConstraint("shipment_id"),
        Index("ix_tracking_registrations_due", "state", "next_poll_at"),
        Index("ix_tracking_registrations_ref", "provider", "provider_ref"),
        Index("ix_tracking_registrations_number", "provider", "tracking_number"),
    )

    merchant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    shipment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shipments.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(16))
    #: The provider's id of the tracking, once registered.
    provider_ref: Mapped[str | None] = mapped_column(String(64), default=None)
    tracking_number: Mapped[str] = mapped_column(String(255))
    #: The provider's carrier code (given, or what it detected).
    slug: Mapped[str | None] = mapped_column(String(100), default=None)
    state: Mapped[str] = mapped_column(String(16), default=RegistrationState.PENDING)
    #: Last time anything came from the provider (push or poll).
    last_update_at: Mapped[datetime | None] = mapped_column(default=None)
    last_polled_at: Mapped[datetime | None] = mapped_column(default=None)
    #: When a worker next calls the provider for it: the registration's retry while pending,
    #: the fallback poll once registered (every push pushes it back).
    next_poll_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
