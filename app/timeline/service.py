"""Writing the timeline. Entries are added to the caller's session: they commit (or vanish)
with the change they describe."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.orders.models import Order
from app.timeline.models import OrderEvent


def record(
    session: AsyncSession, order: Order, type_: str, message: str, **data: Any
) -> OrderEvent:
    """Append an entry to the order's timeline."""
    event = OrderEvent(
        order_id=order.id, merchant_id=order.merchant_id, type=type_, message=message, data=data
    )
    session.add(event)
    return event


def set_status(
    session: AsyncSession, order: Order, status: str, reason: str | None, **data: Any
) -> None:
    """Move the order to ``status`` for ``reason``, and say so on its timeline."""
    previous = order.status
    order.status = status
    order.status_reason = reason
    order.updated_at = utcnow()
    record(
        session,
        order,
        f"status.{status}",
        f"{previous} -> {status}" + (f": {reason}" if reason else ""),
        previous=previous,
        **data,
    )
