from __future__ import annotations

import contextlib
import uuid

import structlog

from app.db import DbSession
from app.jobs.outbox import enqueue
from app.jobs.task import TaskContext, task
from app.merchants.models import Merchant
from app.merchants.service import get_merchant
from app.merchants.settings import settings_of
from app.orders import service
from app.orders.models import Order, OrderStatus
from app.orders.validation import validate
from app.purchasing.service import StockConflict
from app.routing.tasks import route_now, route_order

log = structlog.get_logger(__name__)


@task("order.validate", stale=service.unvalidated)
async def validate_order(ctx: TaskContext, order_id: str) -> None:
    """Validate an order in ``received``; any other status means it was already done: no-op."""
    async with ctx.db.transaction() as session:
        order = await service.load_for_change(session, uuid.UUID(order_id))
        if order is None or order.status != OrderStatus.RECEIVED:
            return
        merchant = await get_merchant(session, order.merchant_id)
        assert merchant is not None  # orders go with their merchant
        await validate_and_route(session, merchant, order, ctx=ctx)


async def validate_and_route(
    session: DbSession,
    merchant: Merchant,
    order: Order,
    *,
    fresh: bool = False,
    ctx: TaskContext | None = None,
) -> str:
    """Validate an order in ``received`` and, when it is ready and the merchant routes
    automatically, route it in the same transaction (one job where there were three: intake,
    ``order.validate``, ``order.route``). Each state change is on the timeline, and commits with
    the jobs that follow it (the placements). ``fresh``: created in this transaction; ``ctx``:
    the job's (portal purchase orders are then placed here, ``route_now``).

    Everything is written in one flush at the end (the order's status in one UPDATE, the
    timeline in one INSERT). Routing reserves stock before it writes anything else: when stock
    moved since the decision, the reservation is undone, the validation stands and the order
    gets its own ``order.route`` job, which retries as it always did. Any other failure fails
    the whole transaction (the job is retried). Returns the status reached."""
    settings = settings_of(merchant)
    # A fresh order's validation and routing read nothing back they wrote (they are handed what
    # they decided), so everything waits for one flush at the end. An order stored earlier is
    # checked against the database (exceptions, lines covered by purchase orders): there each
    # query sees what was written before it.
    batched = session.no_autoflush if fresh else contextlib.nullcontext()
    with batched:
        verdict = await validate(session, order, settings, fresh=fresh)
        log.info("order.validated", order_id=str(order.id), status=verdict.status)
        status = verdict.status
        if verdict.status != OrderStatus.READY_TO_ROUTE or not settings.routing.auto_route:
            pass
        elif merchant.status != "active":  # as before: the route job finds nothing to do
            await enqueue(session, route_order, order.id)
        else:
            try:
                await route_now(session, merchant, order, fresh=fresh, ctx=ctx)
                status = str(order.status)
            except StockConflict as exc:
                log.warning("order.route_deferred", order_id=str(order.id), error=repr(exc))
                await enqueue(session, route_order, order.id)
    await session.flush()
    return status
