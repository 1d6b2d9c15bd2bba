from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.jobs.outbox import enqueue
from app.jobs.task import StaleWindow, TaskContext, task
from app.merchants.models import Merchant
from app.orders.models import Order, OrderStatus
from app.orders.validation import validate
from app.routing.tasks import auto_route, route_order

log = structlog.get_logger(__name__)


async def _unvalidated(session: AsyncSession, window: StaleWindow) -> Sequence[Any]:
    """Orders still waiting for validation."""
    return await window.ids(
        session,
        select(Order.id).where(
            Order.status == OrderStatus.RECEIVED, Order.updated_at < window.cutoff
        ),
    )


@task("order.validate", stale=_unvalidated)
async def validate_order(ctx: TaskContext, order_id: str) -> None:
    """Validate an order in ``received``; any other status means it was already done: no-op."""
    async with ctx.db.transaction() as session:
        query = (
            select(Order).where(Order.id == uuid.UUID(order_id)).options(selectinload(Order.lines))
        )
        if ctx.db.dialect == "postgresql":
            query = query.with_for_update(of=Order)
        order = await session.scalar(query)
        if order is None or order.status != OrderStatus.RECEIVED:
            return
        merchant = await session.get(Merchant, order.merchant_id)
        settings = merchant.settings if merchant else {}
        verdict = await validate(session, order, settings)
        log.info("order.validated", order_id=order_id, status=verdict.status)
        if verdict.status == OrderStatus.READY_TO_ROUTE and auto_route(settings):
            await enqueue(session, route_order, order.id)
