"""Housekeeping that makes the system self-healing.

The sweeper re-enqueues work that should have progressed but did not: a webhook accepted but not
processed (its job was lost with a Redis that had no persistence, say), an order still waiting
for validation or routing, a purchase order still to place, an email still to send. It also
drops what has outlived its use: raw webhook bodies after 30 days, idempotency keys after 24 h.
Tasks are idempotent, so a spurious re-enqueue costs only a no-op run.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import and_, delete, or_, select, update

from app.db import utcnow
from app.idempotency.middleware import RETENTION as IDEMPOTENCY_RETENTION
from app.idempotency.models import IdempotencyRecord
from app.jobs.models import PeriodicRun
from app.jobs.outbox import enqueue
from app.mail.models import EmailStatus, OutgoingEmail
from app.mail.tasks import LEASE as EMAIL_LEASE
from app.merchants.models import Merchant
from app.orders.models import Order, OrderStatus
from app.orders.tasks import auto_route
from app.purchasing.models import POStatus, PurchaseOrder
from app.webhooks.models import WebhookDelivery
from app.webhooks.tasks import MAX_FAILURES as DELIVERY_MAX_FAILURES
from workers.registry import TaskContext, task

log = structlog.get_logger(__name__)

#: Days a handled webhook keeps its raw body (ids are kept for redelivery detection).
PAYLOAD_RETENTION_DAYS = 30


@task("maintenance.sweep", max_retries=0)
async def sweep(ctx: TaskContext, older_than: int | None = None) -> None:
    """Re-enqueue work idle for ``older_than`` seconds (default: ``settings.stale_after``)."""
    idle = ctx.settings.stale_after if older_than is None else int(older_than)
    cutoff = utcnow() - timedelta(seconds=idle)
    async with ctx.db.transaction() as session:
        deliveries = (
            await session.scalars(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.processed_at.is_(None),
                    WebhookDelivery.received_at < cutoff,
                    WebhookDelivery.failures < DELIVERY_MAX_FAILURES,
                )
                .limit(5000)
            )
        ).all()
        for delivery_id in deliveries:
            await enqueue(session, "webhook.process", delivery_id)
        orders = (
            await session.scalars(
                select(Order.id)
                .where(Order.status == OrderStatus.RECEIVED, Order.updated_at < cutoff)
                .limit(5000)
            )
        ).all()
        for order_id in orders:
            await enqueue(session, "order.validate", order_id)
        to_route = (
            await session.execute(
                select(Order.id, Merchant.settings)
                .join(Merchant, Merchant.id == Order.merchant_id)
                .where(
                    Order.status == OrderStatus.READY_TO_ROUTE,
                    Order.updated_at < cutoff,
                    Merchant.status == "active",
                )
                .limit(5000)
            )
        ).all()
        routable = [oid for oid, settings in to_route if auto_route(settings)]
        for order_id in routable:
            await enqueue(session, "order.route", order_id)
        # A placement whose worker died mid-call: placing again is safe (idempotency key).
        pending = (
            await session.scalars(
                select(PurchaseOrder.id)
                .where(PurchaseOrder.status == POStatus.PENDING, PurchaseOrder.updated_at < cutoff)
                .limit(5000)
            )
        ).all()
        for po_id in pending:
            await enqueue(session, "purchase_order.place", po_id)
        # An email whose job was lost, or whose sender died after claiming it (lease over).
        emails = (
            await session.scalars(
                select(OutgoingEmail.id)
                .where(
                    OutgoingEmail.status == EmailStatus.QUEUED,
                    OutgoingEmail.created_at < cutoff,
                    or_(
                        OutgoingEmail.claimed_at.is_(None),
                        OutgoingEmail.claimed_at < utcnow() - EMAIL_LEASE,
                    ),
                    or_(
                        OutgoingEmail.next_attempt_at.is_(None),
                        OutgoingEmail.next_attempt_at <= utcnow(),
                    ),
                )
                .limit(5000)
            )
        ).all()
        for email_id in emails:
            await enqueue(session, "email.send", email_id)
        # Raw bodies hold customer data: keep the ids (redelivery detection) and drop the
        # bodies of deliveries handled long ago, or given up on long ago (a person had that
        # long to look at them).
        expired = utcnow() - timedelta(days=PAYLOAD_RETENTION_DAYS)
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
                IdempotencyRecord.created_at < utcnow() - IDEMPOTENCY_RETENTION
            )
        )
        await session.execute(
            delete(PeriodicRun).where(PeriodicRun.created_at < utcnow() - timedelta(days=2))
        )
    result = {
        "webhooks": len(deliveries),
        "orders": len(orders),
        "routing": len(routable),
        "placements": len(pending),
        "emails": len(emails),
    }
    if any(result.values()):
        log.info("maintenance.sweep", **result)
