"""Background work of returns.

``returns.authorize`` tells the supplier about an approved return, the house way (see
``app.purchasing.tasks``): claim it in a short transaction (count the attempt, lease it), call
``Connector.create_return`` with no transaction open (the supplier dedups on the idempotency key
derived from the purchase order and the RMA number), record the answer in a second transaction
and publish ``return.approved`` with what the customer needs. A second run finds it authorized
and calls nobody. Transient failures back off (``next_attempt_at`` keeps the sweeper away); a
refusal, or too many failures, falls back to the merchant's address with an exceptions-queue
entry.

``returns.check_stalled`` (hourly) puts each return approved but not received after the
merchant's ``returns.stall_after_days`` in the exceptions queue, once.

``purchase_order.cancel_refused`` (the supplier had shipped) opens an approved return for those
lines, once per purchase order.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import dramatiq
import structlog

from app.db import DbSession, utcnow
from app.events.models import LifecycleEvent
from app.jobs.backoff import backoff_ms
from app.jobs.task import TaskContext, subscribe, task
from app.purchasing.tasks import supplier_slots
from app.returns import service
from app.suppliers.service import decrypt_config
from connectors.base import PermanentConnectorError, RetryableConnectorError
from connectors.registry import connector_class

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 8
BASE_DELAY_MS = 2_000
MAX_DELAY_MS = 30 * 60_000


@task("returns.authorize", max_retries=MAX_ATTEMPTS * 4, stale=service.unauthorized)
async def authorize(ctx: TaskContext, return_id: str) -> None:
    rid = uuid.UUID(return_id)
    async with ctx.db.transaction() as session:
        call = await service.claim_authorization(session, rid)
        if call is None:
            return
        config = decrypt_config(ctx.box, call.supplier)

    connector = connector_class(call.kind)(config, ctx.http)
    try:
        with supplier_slots(ctx, call.supplier):
            result = await connector.create_return(call.po, call.lines, call.number, call.reason)
    except dramatiq.RateLimitExceeded:
        async with ctx.db.transaction() as session:
            await service.authorization_retry(
                session, rid, "waiting for the supplier's rate limit", timedelta(seconds=1)
            )
        raise dramatiq.Retry("supplier rate limit", delay=1_000) from None
    except RetryableConnectorError as exc:
        if call.attempt >= MAX_ATTEMPTS:
            async with ctx.db.transaction() as session:
                await service.authorization_failed(
                    session, rid, f"gave up after {call.attempt} attempts: {exc.message}"
                )
            return
        floor = None if exc.retry_after is None else min(exc.retry_after, 86_400) * 1000
        delay = backoff_ms(call.attempt, base_ms=BASE_DELAY_MS, cap_ms=MAX_DELAY_MS, floor_ms=floor)
        async with ctx.db.transaction() as session:
            await service.authorization_retry(
                session, rid, exc.message, timedelta(milliseconds=delay)
            )
        raise dramatiq.Retry(exc.message, delay=delay) from None
    except PermanentConnectorError as exc:
        async with ctx.db.transaction() as session:
            await service.authorization_failed(session, rid, exc.message)
        log.warning("return.authorization_refused", return_id=return_id, error=exc.message)
        return

    async with ctx.db.transaction() as session:
        await service.authorization_done(session, rid, result)
    log.info("return.authorized", return_id=return_id, attempt=call.attempt)


@task("returns.check_stalled", every=3600)
async def check_stalled(ctx: TaskContext) -> None:
    async with ctx.db.transaction() as session:
        opened = await service.open_stalled(session, utcnow())
    if opened:
        log.info("returns.stalled", opened=opened)


@subscribe("purchase_order.cancel_refused")
async def return_refused_cancellation(
    ctx: TaskContext, session: DbSession, event: LifecycleEvent
) -> None:
    data = event.data
    if event.order_id is None or not data.get("purchase_order_id"):
        return
    await service.open_for_cancellation(
        session,
        event.merchant_id,
        event.order_id,
        uuid.UUID(str(data["purchase_order_id"])),
        str(data.get("reason") or "cancelled after shipping"),
        list(data.get("lines") or []),
    )
