"""One published lifecycle event per row: the record every reaction is derived from."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, utcnow


class EventType:
    """The events the core publishes, by their public name (outbound webhooks use them)."""

    ORDER_CREATED = "order.created"
    ORDER_ROUTED = "order.routed"
    PURCHASE_ORDER_PLACED = "purchase_order.placed"
    SHIPMENT_SHIPPED = "shipment.shipped"
    #: ``shipment.<status>``: the first tracking event of each status, per shipment.
    SHIPMENT_INFO_RECEIVED = "shipment.info_received"
    SHIPMENT_IN_TRANSIT = "shipment.in_transit"
    SHIPMENT_OUT_FOR_DELIVERY = "shipment.out_for_delivery"
    SHIPMENT_DELIVERED = "shipment.delivered"
    SHIPMENT_EXCEPTION = "shipment.exception"
    SHIPMENT_RETURNED = "shipment.returned"
    #: The parcel stopped moving (the merchant's ``tracking.stale_after_days``).
    SHIPMENT_DELAYED = "shipment.delayed"
    #: Carrier, number or link of an existing shipment changed.
    SHIPMENT_TRACKING_UPDATED = "shipment.tracking_updated"
    ORDER_DELIVERED = "order.delivered"
    ORDER_CANCELLED = "order.cancelled"
    #: Returns (``app.returns``): each step of a return, once per return.
    RETURN_REQUESTED = "return.requested"
    #: Published once the customer's instructions are known (the supplier's or the merchant's).
    RETURN_APPROVED = "return.approved"
    RETURN_REJECTED = "return.rejected"
    RETURN_RECEIVED = "return.received"
    #: A purchase order that could not be cancelled: it shipped (its lines become a return).
    PURCHASE_ORDER_CANCEL_REFUSED = "purchase_order.cancel_refused"
    #: Money went back to the customer (Stripe says so), or could not.
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"

    ALL = (
        ORDER_CREATED,
        ORDER_ROUTED,
        PURCHASE_ORDER_PLACED,
        SHIPMENT_SHIPPED,
        SHIPMENT_INFO_RECEIVED,
        SHIPMENT_IN_TRANSIT,
        SHIPMENT_OUT_FOR_DELIVERY,
        SHIPMENT_DELIVERED,
        SHIPMENT_EXCEPTION,
        SHIPMENT_RETURNED,
        SHIPMENT_DELAYED,
        SHIPMENT_TRACKING_UPDATED,
        ORDER_DELIVERED,
        ORDER_CANCELLED,
        RETURN_REQUESTED,
        RETURN_APPROVED,
        RETURN_REJECTED,
        RETURN_RECEIVED,
        PURCHASE_ORDER_CANCEL_REFUSED,
        REFUND_SUCCEEDED,
        REFUND_FAILED,
    )


class LifecycleEvent(IdMixin, Base):
    """Something that happened, written in the transaction of the change itself.

    ``key`` names the occurrence (``shipment.delivered:<shipment id>``), unique per merchant:
    however often the change is processed, it is published once. ``id`` is stable, so receivers
    (outbound webhooks) can drop repeats. ``dispatched_at`` is set once a job per subscriber is
    enqueued.
    """

    __tablename__ = "lifecycle_events"
    __table_args__ = (
        UniqueConstraint("merchant_id", "key"),
        Index("ix_lifecycle_events_undispatched", "dispatched_at", "created_at"),
        Index("ix_lifecycle_events_order", "order_id", "created_at"),
    )

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), default=None
    )
    type: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)


class EventReaction(IdMixin, Base):
    """One subscriber's reaction to one event, written when the event is dispatched and marked
    done in the reaction's own transaction: a lost or exhausted job leaves it pending, and the
    sweeper runs it again."""

    __tablename__ = "lifecycle_reactions"
    __table_args__ = (
        UniqueConstraint("event_id", "subscriber"),
        Index("ix_lifecycle_reactions_pending", "done_at", "created_at"),
    )

    event_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("lifecycle_events.id", ondelete="CASCADE")
    )
    subscriber: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(default=None)
