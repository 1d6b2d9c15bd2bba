from __future__ import annotations

import uuid

import structlog

from app.jobs.outbox import enqueue
from app.jobs.task import TaskContext, task
from app.merchants.service import get_merchant
from app.merchants.settings import settings_of
from app.orders import service
from app.orders.models import OrderStatus
from app.orders.validation import validate
from app.routing.tasks import route_order

log = structlog.get_logger(__name__)


@task("order.validate", stale=service.unvalidated)
async def validate_order(ctx: TaskContext, order_id: str) -> None:
    """Validate an order in ``received``; any other status means it was already done: no-op."""
    async with ctx.db.transaction() as session:
        order = await service.load_for_change(session, uuid.UUID(order_id))
        if order is None or order.status != OrderStatus.RECEIVED:
            return
        merchant = await get_merchant(session, order.merchant_id)
        settings = settings_of(merchant)
        verdict = await validate(session, order, settings)
        log.info("order.validated", order_id=order_id, status=verdict.status)
        if verdict.status == OrderStatus.READY_TO_ROUTE and settings.routing.auto_route:
            await enqueue(session, route_order, order.id)
