from __future__ import annotations

import uuid

import structlog

from app.db import DbSession
from app.jobs.task import TaskContext, task
from app.merchants.models import Merchant
from app.orders.models import Order
from app.purchasing.tasks import place_all, place_or_enqueue
from app.routing import service

log = structlog.get_logger(__name__)


@task("order.route", stale=service.unrouted)
async def route_order(ctx: TaskContext, order_id: str) -> None:
    """Route a ``ready_to_route`` order into purchase orders; any other status: nothing to do.
    (Valid orders are routed where they are validated, ``app.orders.tasks.validate_and_route``;
    this job is the fallback when that failed, and the sweeper's for orders left behind.)"""
    async with ctx.db.transaction() as session:
        routed = await service.route_ready_order(session, uuid.UUID(order_id))
        if routed is None:
            return
        await place_all(session, routed.purchase_orders)
    _log_routed(order_id, routed)


async def route_now(
    session: DbSession,
    merchant: Merchant,
    order: Order,
    *,
    fresh: bool = False,
    ctx: TaskContext | None = None,
) -> None:
    """Route a ``ready_to_route`` order in the caller's transaction, placements enqueued; in a
    job (``ctx``), portal purchase orders are placed right here (no job of their own)."""
    routed = await service.route_lines(session, merchant, order, order.lines, fresh=fresh)
    if ctx is None:
        await place_all(session, routed.purchase_orders)
    else:
        await place_or_enqueue(ctx, session, order, routed.purchase_orders)
    _log_routed(str(order.id), routed)


def _log_routed(order_id: str, routed: service.Routed) -> None:
    log.info(
        "order.routed",
        order_id=order_id,
        suppliers=len(routed.plan.by_supplier()),
        unroutable=len(routed.plan.unroutable),
    )
