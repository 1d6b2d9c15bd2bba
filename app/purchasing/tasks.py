"""``purchase_order.place``: hand a purchase order to its supplier, exactly once.

1. In a short transaction: lock the purchase order; unless it is still ``pending``, stop (done
   already). Count the attempt.
2. Outside any transaction: take the supplier's rate-limit and concurrency slots, call the
   connector with the purchase order's idempotency key.
3. In a second transaction: record the outcome.

A crash between 2 and 3 leaves the purchase order ``pending``; the retry calls the supplier again
with the same idempotency key, and the supplier answers with the order it already has. Transient
failures retry with exponential backoff and equal jitter (never sooner than the supplier's
``Retry-After``) up to ``MAX_ATTEMPTS``, then the purchase order goes to the merchant's
dead-letter view: it is not rerouted automatically, because after a timeout the supplier may well
have the order. A permanent refusal fails the purchase order with the supplier's message and
reroutes its lines.

A purchase order backing off (a retryable failure, a wait for a rate-limit slot) carries
``next_attempt_at``: the sweeper leaves it alone until then, and a run that arrives earlier (a
duplicate message, a sweeper re-enqueue) does nothing, so the supplier is never called sooner.
"""

from __future__ import annotations

import contextlib
import math
import random
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import dramatiq
import structlog
from dramatiq.rate_limits import ConcurrentRateLimiter, WindowRateLimiter

from app import limits
from app.db import DbSession, utcnow
from app.exceptions.service import open_exception
from app.jobs.backoff import EARLY, backoff_ms
from app.jobs.outbox import enqueue_many
from app.jobs.task import TaskContext, task
from app.orders.models import Order
from app.purchasing import service
from app.purchasing.models import POStatus, PurchaseOrder
from app.purchasing.notices import queue_supplier_notice
from app.routing import service as routing
from app.suppliers.models import Supplier
from app.suppliers.service import decrypt_config
from app.timeline.service import record
from connectors.base import PermanentConnectorError, RetryableConnectorError
from connectors.registry import connector_class

log = structlog.get_logger(__name__)

#: 12 attempts ride out a supplier down for a quarter of an hour before a person is asked: the
#: 11 waits step 1 s, 2 s, ... 512 s, 600 s (the cap), each drawn between half and all of its step,
#: so 13.5 to 27 minutes in all.
MAX_ATTEMPTS = 12
BASE_DELAY_MS = 1_000
MAX_DELAY_MS = 10 * 60_000
#: A supplier's ``Retry-After`` is honoured up to this; a longer one is taken as this.
MAX_RETRY_AFTER_MS = 24 * 3600_000


def retry_delay_ms(attempt: int, retry_after: float | None = None) -> int:
    """The wait before the next placement attempt; a supplier's Retry-After is a floor."""
    floor = None if retry_after is None else min(retry_after * 1000, MAX_RETRY_AFTER_MS)
    return backoff_ms(attempt, base_ms=BASE_DELAY_MS, cap_ms=MAX_DELAY_MS, floor_ms=floor)


@contextlib.contextmanager
def supplier_slots(ctx: TaskContext, supplier: Supplier) -> Iterator[None]:
    """The supplier's rate limit and concurrency limit, shared by every worker (via Redis)."""
    with contextlib.ExitStack() as stack:
        if supplier.rate_limit_per_second:
            # Clamped: a row stored before the API bounded the rate (1e-288/s) would make a
            # window of 1e288 seconds, which the limiter tries to allocate.
            rate = supplier.rate_limit_per_second
            if not rate >= limits.MIN_RATE_PER_SECOND:  # NaN too
                rate = limits.MIN_RATE_PER_SECOND
            rate = min(rate, limits.MAX_RATE_PER_SECOND)
            window = 1 if rate >= 1 else math.ceil(1 / rate)
            limiter: Any = WindowRateLimiter(  # type: ignore[no-untyped-call]
                ctx.rate_limits,
                f"dropship:supplier:{supplier.id}:rate",
                limit=max(1, int(rate * window)),
                window=window,
            )
            stack.enter_context(limiter.acquire(raise_on_failure=True))
        if supplier.max_concurrency:
            concurrency: Any = ConcurrentRateLimiter(  # type: ignore[no-untyped-call]
                ctx.rate_limits,
                f"dropship:supplier:{supplier.id}:concurrency",
                limit=min(supplier.max_concurrency, limits.MAX_CONCURRENCY),
                ttl=120_000,
            )
            stack.enter_context(concurrency.acquire(raise_on_failure=True))
        yield


async def place_all(session: DbSession, purchase_orders: Iterable[PurchaseOrder]) -> None:
    """Enqueue the placement of purchase orders just created, in their transaction (one
    statement)."""
    await enqueue_many(session, place, [[po.id] for po in purchase_orders])


async def place_or_enqueue(
    ctx: TaskContext, session: DbSession, order: Order, purchase_orders: Sequence[PurchaseOrder]
) -> None:
    """For purchase orders just created (not written yet) in the caller's transaction: those of
    an active pull-based supplier (the portal) are placed here, since placing one only makes it
    visible to the supplier (status, timeline, event, notice: what ``place`` does, without a
    job); the others' placement is enqueued (:func:`place_all`). A ``place`` job already queued
    for one placed here (old code) finds it placed and does nothing."""
    pos = list(purchase_orders)
    if not pos:
        return
    suppliers = await service.suppliers_by_id(session, {po.supplier_id for po in pos})
    later: list[PurchaseOrder] = []
    placements: list[tuple[PurchaseOrder, str, str, dict[str, Any]]] = []
    notices: list[tuple[PurchaseOrder, Supplier]] = []
    for po in pos:
        supplier = suppliers.get(po.supplier_id)
        if (
            supplier is None
            or supplier.status != "active"
            or not connector_class(supplier.connector).pull_based
        ):
            later.append(po)
            continue
        connector = connector_class(supplier.connector)(decrypt_config(ctx.box, supplier), ctx.http)
        try:
            # Called (it does no I/O) so that its result and its metrics are the job's.
            result = await connector.place_order(service.to_dto(po))
        except Exception:
            log.exception("purchase_order.place_deferred", po_id=str(po.id))
            later.append(po)
            continue
        po.attempts = 1
        po.supplier_reference = result.supplier_reference or po.supplier_reference
        status = POStatus.ACCEPTED if result.status == "accepted" else POStatus.PLACED
        reference = f" (reference {po.supplier_reference})" if po.supplier_reference else ""
        placements.append(
            (
                po,
                status,
                f"placed in the supplier portal{reference}",
                {"supplier_reference": po.supplier_reference, "attempts": 1},
            )
        )
        if result.notify_supplier:
            notices.append((po, supplier))
    await service.place_created(session, order, placements)
    for po, supplier in notices:
        await _notify(session, ctx, po, supplier, order)
    for po, status, _, _ in placements:
        log.info("purchase_order.placed", po_id=str(po.id), status=status, attempts=1)
    await place_all(session, later)


async def _notify(
    session: DbSession, ctx: TaskContext, po: PurchaseOrder, supplier: Supplier, order: Order
) -> None:
    """The supplier's notice; one that cannot be written must not undo the placement it
    reports. Without a contact email it is only a timeline entry: no savepoint needed."""
    try:
        if supplier.contact_email:
            async with session.begin_nested():
                await queue_supplier_notice(session, ctx.settings, po, supplier, order)
        else:
            await queue_supplier_notice(session, ctx.settings, po, supplier, order)
    except Exception as exc:
        log.exception("purchase_order.notice_failed", po_id=str(po.id))
        record(
            session,
            order,
            "purchase_order.notice_failed",
            f"{po.number}: the notice to {supplier.name} could not be queued: {exc}",
            purchase_order_id=str(po.id),
        )


@task("purchase_order.place", max_retries=MAX_ATTEMPTS * 4, stale=service.unplaced)
async def place(ctx: TaskContext, po_id: str) -> None:
    pid = uuid.UUID(po_id)
    async with ctx.db.transaction() as session:
        loaded = await service.load_with_supplier(session, pid)
        if loaded is None:
            return
        po, supplier = loaded
        if po.status != POStatus.PENDING:
            return
        if po.next_attempt_at is not None and po.next_attempt_at > utcnow() + EARLY:
            return  # backing off: its own retry is scheduled for then
        if supplier.status != "active":
            await service.transition(session, po, POStatus.FAILED, "supplier is inactive")
            await place_all(
                session, await routing.placement_failed(session, po, "supplier inactive")
            )
            return
        po.attempts += 1
        attempt = po.attempts
        dto = service.to_dto(po)
        kind = supplier.connector
        config = decrypt_config(ctx.box, supplier)

    connector = connector_class(kind)(config, ctx.http)
    try:
        with supplier_slots(ctx, supplier):
            result = await connector.place_order(dto)
    except dramatiq.RateLimitExceeded:
        delay = int(random.uniform(200, 1200))
        async with ctx.db.transaction() as session:
            waiting = await service.load(session, pid, lock=True)
            if waiting is not None:
                waiting.attempts -= 1  # waiting for a slot is not a failed attempt
                waiting.next_attempt_at = utcnow() + timedelta(milliseconds=delay)
        raise dramatiq.Retry("supplier rate limit", delay=delay) from None
    except RetryableConnectorError as exc:
        await _retry_or_dead_letter(ctx, pid, attempt, exc)
        return
    except PermanentConnectorError as exc:
        async with ctx.db.transaction() as session:
            refused = await service.load(session, pid, lock=True)
            if refused is None or refused.status != POStatus.PENDING:
                return
            refused.last_error = exc.message
            refused.next_attempt_at = None
            await service.transition(session, refused, POStatus.FAILED, exc.message)
            await place_all(session, await routing.placement_failed(session, refused, exc.message))
        log.warning("purchase_order.failed", po_id=po_id, error=exc.message)
        return

    async with ctx.db.transaction() as session:
        # With its order, held here: the session's identity map keeps only referenced
        # objects, and the transition and the notice both need it (one SELECT for both).
        held = await service.load_with_order(session, pid)
        if held is None:
            return
        po, order = held
        if po.status != POStatus.PENDING:
            return
        po.supplier_reference = result.supplier_reference or po.supplier_reference
        po.last_error = None
        po.next_attempt_at = None
        status = POStatus.ACCEPTED if result.status == "accepted" else POStatus.PLACED
        where = "in the supplier portal" if connector.pull_based else f"with {supplier.name}"
        await service.transition(
            session,
            po,
            status,
            f"placed {where}"
            + (f" (reference {po.supplier_reference})" if po.supplier_reference else "")
            + (f" after {attempt} attempts" if attempt > 1 else ""),
            supplier_reference=po.supplier_reference,
            attempts=attempt,
        )
        if result.notify_supplier:
            await _notify(session, ctx, po, supplier, order)
    log.info("purchase_order.placed", po_id=po_id, status=status, attempts=attempt)


async def _retry_or_dead_letter(
    ctx: TaskContext, pid: uuid.UUID, attempt: int, exc: RetryableConnectorError
) -> None:
    async with ctx.db.transaction() as session:
        po = await service.load(session, pid, lock=True)
        if po is None or po.status != POStatus.PENDING:
            return
        po.last_error = exc.message
        order = await service.order_of(session, po)
        if attempt >= MAX_ATTEMPTS:
            po.dead_lettered_at = utcnow()
            po.next_attempt_at = None
            await service.transition(
                session, po, POStatus.FAILED, f"gave up after {attempt} attempts: {exc.message}"
            )
            open_exception(
                session,
                order,
                "placement_dead_letter",
                f"purchase order {po.number} could not be placed after {attempt} attempts: "
                f"{exc.message}. The supplier may have it: check, then reroute or retry by hand.",
                purchase_order_id=str(po.id),
            )
            log.error("purchase_order.dead_letter", po_id=str(pid), error=exc.message)
            return
        delay = retry_delay_ms(attempt, exc.retry_after)
        # The sweeper and early duplicates leave it alone until then.
        po.next_attempt_at = utcnow() + timedelta(milliseconds=delay)
        record(
            session,
            order,
            "purchase_order.retry",
            f"{po.number}: attempt {attempt} failed ({exc.message}); "
            f"retrying in {delay / 1000:.1f}s",
            purchase_order_id=str(po.id),
            attempt=attempt,
        )
    raise dramatiq.Retry(exc.message, delay=delay)
