from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.jobs.task import StaleWindow, TaskContext, task
from app.merchants.models import Merchant
from app.orders.models import Order, OrderStatus
from app.routing.service import route_lines

log = structlog.get_logger(__name__)


def auto_route(settings: dict[str, Any] | None) -> bool:
    """Valid orders go to suppliers at once unless the merchant turned that off (then they wait
    in ``ready_to_route`` for a manual reroute)."""
    routing = (settings or {}).get("routing") or {}
    return bool(routing.get("auto_route", True)) if isinstance(routing, dict) else True


async def _unrouted(session: AsyncSession, window: StaleWindow) -> Sequence[Any]:
    """Valid orders of active merchants with auto-route on, still waiting to be routed."""
    rows = (
        await session.execute(
            select(Order.id, Merchant.settings)
            .join(Merchant, Merchant.id == Order.merchant_id)
            .where(
                Order.status == OrderStatus.READY_TO_ROUTE,
                Order.updated_at < window.cutoff,
                Merchant.status == "active",
            )
            .limit(window.limit)
        )
    ).all()
    return [order_id for order_id, settings in rows if auto_route(settings)]


@task("order.route", stale=_unrouted)
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
