from __future__ import annotations

import uuid
from typing import Any

import structlog

from app.jobs.outbox import enqueue
from app.merchants.service import get_merchant
from app.merchants.settings import parse as parse_settings
from app.merchants.settings import settings_of
from app.orders.models import OrderStatus
from app.orders.service import load_for_change
from app.orders.validation import validate
from workers.registry import TaskContext, task

log = structlog.get_logger(__name__)


@task("order.validate")
async def validate_order(ctx: TaskContext, order_id: str) -> None:
    """Validate an order in ``received``; any other status means it was already done: no-op."""
    async with ctx.db.transaction() as session:
        order = await load_for_change(session, uuid.UUID(order_id))
        if order is None or order.status != OrderStatus.RECEIVED:
            return
        merchant = await get_merchant(session, order.merchant_id)
        settings = settings_of(merchant)
        verdict = await validate(session, order, settings)
        log.info("order.validated", order_id=order_id, status=verdict.status)
        if verdict.status == OrderStatus.READY_TO_ROUTE and settings.routing.auto_route:
            await enqueue(session, "order.route", order.id)


def auto_route(settings: dict[str, Any] | None) -> bool:
    """Valid orders go to suppliers at once unless the merchant turned that off (then they wait
    in ``ready_to_route`` for a manual reroute)."""
    return parse_settings(settings).routing.auto_route
