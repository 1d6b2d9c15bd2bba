from __future__ import annotations

import uuid

import structlog
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.jobs.task import TaskContext, task
from app.merchants.models import Merchant
from app.orders.models import Order, OrderStatus
from app.routing.service import route_lines

log = structlog.get_logger(__name__)


@task("order.route")
async def route_order(ctx: TaskContext, order_id: str) -> None:
    """Route a ``ready_to_route`` order into purchase orders; any other status: nothing to do."""
    async with ctx.db.transaction() as session:
        query = (
            select(Order).where(Order.id == uuid.UUID(order_id)).options(selectinload(Order.lines))
        )
        if ctx.db.dialect == "postgresql":
            query = query.with_for_update(of=Order)
        order = await session.scalar(query)
        if order is None or order.status != OrderStatus.READY_TO_ROUTE:
            return
        merchant = await session.get(Merchant, order.merchant_id)
        if merchant is None or merchant.status != "active":
            return
        plan = await route_lines(session, merchant, order, order.lines)
        log.info(
            "order.routed",
            order_id=order_id,
            suppliers=len(plan.by_supplier()),
            unroutable=len(plan.unroutable),
        )
