"""The inbox's queries for the worker that processes deliveries (the receiver stores them
through :mod:`app.webhooks.ingest`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.jobs.task import StaleWindow, rows_affected
from app.merchants.models import Merchant
from app.webhooks.models import WebhookDelivery

#: ``WebhookDelivery.outcome``'s size.
OUTCOME_MAX = 255


async def load_for_processing(
    session: AsyncSession, delivery_id: uuid.UUID
) -> tuple[WebhookDelivery, Merchant | None] | None:
    """The delivery, row-locked so that two runs of its job take turns, and its merchant,
    loaded in the same statement."""
    query = (
        select(WebhookDelivery, Merchant)
        .outerjoin(Merchant, Merchant.id == WebhookDelivery.merchant_id)
        .where(WebhookDelivery.id == delivery_id)
        .with_for_update(of=WebhookDelivery)
    )
    row = (await session.execute(query)).first()
    return None if row is None else (row[0], row[1])


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
) -> Row[int, uuid.UUID | None, str, str] | None:
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


async def unprocessed(
    session: AsyncSession, window: StaleWindow, max_failures: int
) -> Sequence[uuid.UUID]:
    """Deliveries accepted but not processed (their job was lost with a Redis that had no
    persistence, say), unless given up on after ``max_failures`` runs."""
    return await window.ids(
        session,
        select(WebhookDelivery.id).where(
            # Other sources' deliveries (tracking pushes) have their own task and sweep.
            WebhookDelivery.source == "shopify",
            WebhookDelivery.processed_at.is_(None),
            WebhookDelivery.received_at < window.cutoff,
            WebhookDelivery.failures < max_failures,
        ),
    )


async def drop_old_payloads(
    session: AsyncSession, now: datetime, retention_days: int, max_failures: int
) -> int:
    """Raw bodies hold customer data: keep the ids (redelivery detection) and drop the bodies of
    deliveries handled long ago, or given up on long ago (a person had that long to look at
    them)."""
    expired = now - timedelta(days=retention_days)
    return await rows_affected(
        session,
        update(WebhookDelivery)
        .where(
            or_(
                WebhookDelivery.processed_at < expired,
                and_(
                    WebhookDelivery.failures >= max_failures,
                    WebhookDelivery.received_at < expired,
                ),
            ),
            WebhookDelivery.payload != "",
        )
        .values(payload=""),
    )
