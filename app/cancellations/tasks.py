"""``purchase_order.cancel``: ask a supplier not to ship, with the house pattern of placement
(``app.purchasing.tasks``):

1. In a short transaction, under the purchase order's lock: stop unless the cancellation is
   still ``requested`` and due; resolve it from our own records when they already decide it
   (rejected, shipped); wait while a placement is in flight; count the attempt.
2. With no transaction open: the connector's ``cancel_order``, inside the supplier's rate and
   concurrency limits, with the cancellation's idempotency key (the same on every attempt).
3. In a second transaction: record the answer, unless someone resolved it meanwhile.

A crash between 2 and 3 leaves it ``requested``: the sweeper asks again with the same key, and
the supplier answers for the cancellation it already made; our side resolves once (step 3 checks
under the lock), so stock is released once. 5xx, 429 and timeouts retry with the one backoff
(never sooner than ``Retry-After``), then go to the merchant; so does a channel that cannot
cancel or a refusal we cannot read.
"""

from __future__ import annotations

import random
import uuid

import dramatiq
import structlog

from app.cancellations import service
from app.jobs.backoff import backoff_ms
from app.jobs.task import TaskContext, task
from app.purchasing.tasks import MAX_RETRY_AFTER_MS, supplier_slots
from connectors.base import PermanentConnectorError, RetryableConnectorError
from connectors.registry import connector_class

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 8
BASE_DELAY_MS = 1_000
MAX_DELAY_MS = 10 * 60_000


def retry_delay_ms(attempt: int, retry_after: float | None) -> int:
    floor = None if retry_after is None else min(retry_after * 1000, MAX_RETRY_AFTER_MS)
    return backoff_ms(attempt, base_ms=BASE_DELAY_MS, cap_ms=MAX_DELAY_MS, floor_ms=floor)


@task("purchase_order.cancel", max_retries=MAX_ATTEMPTS * 4, stale=service.stale)
async def cancel_at_supplier(ctx: TaskContext, cancellation_id: str) -> None:
    rid = uuid.UUID(cancellation_id)
    async with ctx.db.transaction() as session:
        claim = await service.claim(session, ctx.box, rid)
    if claim is None:
        return
    if claim.wait_ms:
        raise dramatiq.Retry("waiting for the placement in flight", delay=claim.wait_ms)
    assert claim.dto is not None
    assert claim.supplier is not None
    connector = connector_class(claim.connector)(claim.config or {}, ctx.http)
    try:
        with supplier_slots(ctx, claim.supplier):
            result = await connector.cancel_order(claim.dto, claim.idempotency_key)
    except dramatiq.RateLimitExceeded:
        delay = int(random.uniform(200, 1200))
        async with ctx.db.transaction() as session:
            await service.retry_later(session, rid, "rate limit", delay, failed=False)
        raise dramatiq.Retry("supplier rate limit", delay=delay) from None
    except RetryableConnectorError as exc:
        if claim.attempt >= MAX_ATTEMPTS:
            async with ctx.db.transaction() as session:
                await service.needs_merchant(
                    session, rid, f"gave up after {claim.attempt} attempts: {exc.message}"
                )
            return
        delay = retry_delay_ms(claim.attempt, exc.retry_after)
        async with ctx.db.transaction() as session:
            await service.retry_later(session, rid, exc.message, delay)
        raise dramatiq.Retry(exc.message, delay=delay) from None
    except PermanentConnectorError as exc:
        async with ctx.db.transaction() as session:
            await service.needs_merchant(session, rid, exc.message)
        log.warning("purchase_order.cancel_unconfirmed", cancellation_id=cancellation_id)
        return
    async with ctx.db.transaction() as session:
        await service.apply_result(session, rid, result)
    log.info("purchase_order.cancel", cancellation_id=cancellation_id, outcome=result.outcome)
