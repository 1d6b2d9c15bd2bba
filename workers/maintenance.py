"""Housekeeping that makes the system self-healing.

The sweeper re-enqueues work that should have progressed but did not: a webhook accepted but not
processed (its job was lost with a Redis that had no persistence, say), an order still waiting
for validation or routing, a purchase order still to place, an email still to send (those two
not before their ``next_attempt_at`` while they back off). It also drops what has outlived its
use: raw webhook bodies after 30 days, idempotency keys after 24 h.
Tasks are idempotent, so a spurious re-enqueue costs only a no-op run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Select, and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.idempotency.middleware import RETENTION as IDEMPOTENCY_RETENTION
from app.idempotency.models import IdempotencyRecord
from app.jobs.models import PeriodicRun
from app.jobs.outbox import enqueue
from app.jobs.task import Task, TaskContext, task
from app.mail.models import EmailStatus, OutgoingEmail
from app.mail.tasks import LEASE as EMAIL_LEASE
from app.mail.tasks import send_email
from app.merchants.models import Merchant
from app.orders.models import Order, OrderStatus
from app.orders.tasks import auto_route, validate_order
from app.purchasing.models import POStatus, PurchaseOrder
from app.purchasing.tasks import place
from app.routing.tasks import route_order
from app.webhooks.models import WebhookDelivery
from app.webhooks.tasks import MAX_FAILURES as DELIVERY_MAX_FAILURES
from app.webhooks.tasks import process_delivery

log = structlog.get_logger(__name__)

#: Days a handled webhook keeps its raw body (ids are kept for redelivery detection).
PAYLOAD_RETENTION_DAYS = 30


#: Most items of one kind re-enqueued by one sweep (the next sweep takes the rest).
BATCH = 5000


async def _requeue(session: AsyncSession, job: Task, ids: Select[tuple[Any]]) -> int:
    """Enqueue ``job`` for each id the query finds (at most ``BATCH``); return how many."""
    found = (await session.scalars(ids.limit(BATCH))).all()
    for item_id in found:
        await enqueue(session, job, item_id)
    return len(found)


@task("maintenance.sweep", max_retries=0, every=60)
async def sweep(ctx: TaskContext, older_than: int | None = None) -> None:
    """Re-enqueue work idle for ``older_than`` seconds (default: ``settings.stale_after``)."""
    idle = ctx.settings.stale_after if older_than is None else int(older_than)
    now = utcnow()
    cutoff = now - timedelta(seconds=idle)
    async with ctx.db.transaction() as session:
        deliveries = await _requeue(
            session,
            process_delivery,
            select(WebhookDelivery.id).where(
                WebhookDelivery.processed_at.is_(None),
                WebhookDelivery.received_at < cutoff,
                WebhookDelivery.failures < DELIVERY_MAX_FAILURES,
            ),
        )
        orders = await _requeue(
            session,
            validate_order,
            select(Order.id).where(Order.status == OrderStatus.RECEIVED, Order.updated_at < cutoff),
        )
        to_route = (
            await session.execute(
                select(Order.id, Merchant.settings)
                .join(Merchant, Merchant.id == Order.merchant_id)
                .where(
                    Order.status == OrderStatus.READY_TO_ROUTE,
                    Order.updated_at < cutoff,
                    Merchant.status == "active",
                )
                .limit(BATCH)
            )
        ).all()
        routable = [oid for oid, settings in to_route if auto_route(settings)]
        for order_id in routable:
            await enqueue(session, route_order, order_id)
        # A placement whose worker died mid-call: placing again is safe (idempotency key),
        # unless it is backing off (its retry, or the supplier's Retry-After, is not due yet).
        pending = await _requeue(
            session,
            place,
            select(PurchaseOrder.id).where(
                PurchaseOrder.status == POStatus.PENDING,
                PurchaseOrder.updated_at < cutoff,
                or_(PurchaseOrder.next_attempt_at.is_(None), PurchaseOrder.next_attempt_at <= now),
            ),
        )
        # An email whose job was lost, or whose sender died after claiming it (lease over),
        # unless it is backing off after a temporary failure.
        emails = await _requeue(
            session,
            send_email,
            select(OutgoingEmail.id).where(
                OutgoingEmail.status == EmailStatus.QUEUED,
                OutgoingEmail.created_at < cutoff,
                or_(
                    OutgoingEmail.claimed_at.is_(None),
                    OutgoingEmail.claimed_at < now - EMAIL_LEASE,
                ),
                or_(OutgoingEmail.next_attempt_at.is_(None), OutgoingEmail.next_attempt_at <= now),
            ),
        )
        # Raw bodies hold customer data: keep the ids (redelivery detection) and drop the
        # bodies of deliveries handled long ago, or given up on long ago (a person had that
        # long to look at them).
        expired = now - timedelta(days=PAYLOAD_RETENTION_DAYS)
        await session.execute(
            update(WebhookDelivery)
            .where(
                or_(
                    WebhookDelivery.processed_at < expired,
                    and_(
                        WebhookDelivery.failures >= DELIVERY_MAX_FAILURES,
                        WebhookDelivery.received_at < expired,
                    ),
                ),
                WebhookDelivery.payload != "",
            )
            .values(payload="")
        )
        await session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.created_at < now - IDEMPOTENCY_RETENTION
            )
        )
        await session.execute(
            delete(PeriodicRun).where(PeriodicRun.created_at < now - timedelta(days=2))
        )
    result = {
        "webhooks": deliveries,
        "orders": orders,
        "routing": len(routable),
        "placements": pending,
        "emails": emails,
    }
    if any(result.values()):
        log.info("maintenance.sweep", **result)
