"""Tracking polls and overdue parcels.

``tracking.poll`` (every minute): adopts new shipments, then for each supplier with shipments
due leases as many as its rate limit lets us ask about before the next cycle, and enqueues one
``tracking.poll_batch`` job per batch (the supplier's batch size, or ``PARCELS_PER_JOB`` parcels
asked one at a time). A job calls the supplier with no transaction open, one call per rate-limit
slot (the same per-supplier limiter as placement: the supplier's limit is for all our calls),
then applies every answer in one transaction. A job that is lost leaves its shipments leased;
they are due again when the lease ends, so no sweeper is needed.

``tracking.check_overdue`` (hourly): stale parcels and late purchase orders become alerts and
exceptions-queue entries, once each; ``tracking.digest`` then emails each merchant one list.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from functools import partial
from typing import TypeVar

import dramatiq
import structlog

from app import limits
from app.db import utcnow
from app.jobs.outbox import enqueue
from app.jobs.task import TaskContext, task
from app.purchasing.tasks import supplier_slots
from app.suppliers.models import Supplier
from app.suppliers.service import decrypt_config
from app.tracking import service
from connectors.base import (
    Connector,
    PermanentConnectorError,
    RetryableConnectorError,
    TrackingRefDTO,
)
from connectors.registry import connector_class
from connectors.tracking import TrackingUpdateDTO

log = structlog.get_logger(__name__)

CYCLE_SECONDS = 60
#: Parcels per job when the supplier is asked one parcel per request.
PARCELS_PER_JOB = 100
#: How long a job waits for a rate-limit slot before leaving its parcels to a later cycle.
SLOT_WAIT_S = 20.0

T = TypeVar("T")


def _connector(ctx: TaskContext, supplier: Supplier) -> Connector:
    return connector_class(supplier.connector)(decrypt_config(ctx.box, supplier), ctx.http)


def cycle_budget(supplier: Supplier, per_call: int) -> int:
    """Shipments the supplier's rate limit lets us ask about in one cycle."""
    cap = limits.MAX_TRACKING_POLLS_PER_CYCLE
    rate = supplier.rate_limit_per_second
    if not rate or not rate > 0:
        return cap
    return max(per_call, min(cap, int(rate * CYCLE_SECONDS) * per_call))


@task("tracking.poll", every=CYCLE_SECONDS)
async def poll(ctx: TaskContext) -> None:
    now = utcnow()
    jobs = 0
    async with ctx.db.transaction() as session:
        await service.adopt_shipments(session, now)
        for supplier in await service.suppliers_due(session, now):
            connector = _connector(ctx, supplier)
            if supplier.status != "active" or not connector.supports_tracking:
                await service.postpone_supplier(session, supplier.id, now + service.MAX_INTERVAL)
                continue
            batch = connector.tracking_batch_size
            ids = await service.claim_due(
                session, supplier.id, now, cycle_budget(supplier, batch or 1)
            )
            jobs += await service.enqueue_batches(
                session, poll_batch, supplier.id, ids, batch or PARCELS_PER_JOB
            )
    log.info("tracking.poll", jobs=jobs)


async def _within_limit(
    ctx: TaskContext, supplier: Supplier, call: Callable[[], Awaitable[T]]
) -> T:
    """``call()`` inside one of the supplier's rate-limit slots, waiting for one (at most
    ``SLOT_WAIT_S``; then ``dramatiq.RateLimitExceeded``)."""
    deadline = time.monotonic() + SLOT_WAIT_S
    while True:
        try:
            with supplier_slots(ctx, supplier):
                return await call()
        except dramatiq.RateLimitExceeded:
            if time.monotonic() > deadline:
                raise
            # The limiter's windows are the clock's seconds: try again as the next one opens.
            await asyncio.sleep(1.0 - time.time() % 1.0 + random.uniform(0.0, 0.02))


@task("tracking.poll_batch", max_retries=5)
async def poll_batch(ctx: TaskContext, supplier_id: str, *shipment_ids: str) -> None:
    sid = uuid.UUID(supplier_id)
    ids = [uuid.UUID(i) for i in shipment_ids]
    async with ctx.db.transaction() as session:
        supplier, parcels = await service.parcels_to_poll(session, sid, ids)
        await service.retire(session, set(ids) - {p.shipment_id for p in parcels})
        if supplier is None or not parcels:
            return
        connector = _connector(ctx, supplier)
    if supplier.status != "active" or not connector.supports_tracking:
        async with ctx.db.transaction() as session:
            await service.retry_later(session, ids, utcnow() + service.MAX_INTERVAL)
        return

    size = connector.tracking_batch_size or 1
    answered: list[uuid.UUID] = []
    updates: list[TrackingUpdateDTO] = []
    failed: list[uuid.UUID] = []
    retry_after = service.RETRY_INTERVAL
    for start in range(0, len(parcels), size):
        chunk = parcels[start : start + size]
        if failed:  # the supplier is struggling: leave the rest to a later cycle
            failed.extend(p.shipment_id for p in chunk)
            continue
        numbers = [p.tracking_number for p in chunk]
        refs: dict[str, TrackingRefDTO] = {p.tracking_number: p.ref for p in chunk}
        try:
            got: Sequence[TrackingUpdateDTO] = await _within_limit(
                ctx, supplier, partial(connector.fetch_tracking, numbers, refs)
            )
        except dramatiq.RateLimitExceeded:
            failed.extend(p.shipment_id for p in chunk)
            retry_after = timedelta(seconds=CYCLE_SECONDS)
            continue
        except RetryableConnectorError as exc:
            log.warning("tracking.poll_failed", supplier_id=supplier_id, error=exc.message)
            failed.extend(p.shipment_id for p in chunk)
            if exc.retry_after:
                retry_after = max(retry_after, timedelta(seconds=min(exc.retry_after, 86_400)))
            continue
        except PermanentConnectorError as exc:
            # Asked and refused: counts as a poll with nothing new (the backoff grows).
            log.warning("tracking.poll_refused", supplier_id=supplier_id, error=exc.message)
            got = ()
        answered.extend(p.shipment_id for p in chunk)
        updates.extend(got)

    async with ctx.db.transaction() as session:
        now = utcnow()
        applied = await service.apply_updates(session, answered, updates, now)
        await service.retry_later(session, failed, now + retry_after, checked=True)
    log.info(
        "tracking.polled",
        supplier_id=supplier_id,
        checked=applied.checked,
        changed=applied.changed,
        events=applied.events,
        failed=len(failed),
    )


@task("tracking.check_overdue", every=3600)
async def check_overdue(ctx: TaskContext) -> None:
    async with ctx.db.transaction() as session:
        now = utcnow()
        stale = await service.open_stale_alerts(session, now)
        late = await service.open_late_alerts(session, now)
        if stale or late:
            await enqueue(session, digest)
    log.info("tracking.overdue", stale=len(stale), late=len(late))


@task("tracking.digest", every=3600)
async def digest(ctx: TaskContext) -> None:
    async with ctx.db.transaction() as session:
        emails = await service.queue_digests(session, ctx.settings, utcnow())
    log.info("tracking.digest", emails=emails)
