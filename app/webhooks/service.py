"""The inbox's queries for the worker that processes deliveries (the receiver stores them
through :mod:`app.webhooks.ingest`)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.webhooks.models import WebhookDelivery

#: ``WebhookDelivery.outcome``'s size.
OUTCOME_MAX = 255


async def load_for_processing(
    session: AsyncSession, delivery_id: uuid.UUID
) -> WebhookDelivery | None:
    """The delivery, row-locked so that two runs of its job take turns."""
    query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update()
    delivery: WebhookDelivery | None = await session.scalar(query)
    return delivery


async def mark_processed(
    session: AsyncSession, delivery_id: uuid.UUID, outcome: str, *, payload: str | None = None
) -> None:
    """Done, with what happened; ``payload`` replaces the stored body (a redaction request's)."""
    done: dict[str, Any] = {"processed_at": utcnow(), "outcome": outcome[:OUTCOME_MAX]}
    if payload is not None:
        done["payload"] = payload
    await session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**done)
    )


async def count_failure(
    session: AsyncSession, delivery_id: uuid.UUID, outcome: str
) -> Row[tuple[int, uuid.UUID | None, str, str]] | None:
    """Count a failed run, in one statement that never touches a delivery processed meanwhile
    by another run. Returns its ``failures``, ``merchant_id``, ``topic`` and ``payload``, or
    None if it was processed."""
    return (
        await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.processed_at.is_(None),
            )
            .values(failures=WebhookDelivery.failures + 1, outcome=outcome[:OUTCOME_MAX])
            .returning(
                WebhookDelivery.failures,
                WebhookDelivery.merchant_id,
                WebhookDelivery.topic,
                WebhookDelivery.payload,
            )
        )
    ).one_or_none()
