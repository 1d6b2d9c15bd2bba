from __future__ import annotations

import uuid

import structlog

from app.jobs.task import TaskContext, task
from app.purchasing.tasks import place_all
from app.routing import service

log = structlog.get_logger(__name__)


@task("order.route", stale=service.unrouted)
async def route_order(ctx: TaskContext, order_id: str) -> None:
    """Route a ``ready_to_route`` order into purchase orders; any other status: nothing to do."""
    async with ctx.db.transaction() as session:
        routed = await service.route_ready_order(session, uuid.UUID(order_id))
        if routed is None:
            return
        await place_all(session, routed.purchase_orders)
    log.info(
        "order.routed",
        order_id=order_id,
        suppliers=len(routed.plan.by_supplier()),
        unroutable=len(routed.plan.unroutable),
    )
