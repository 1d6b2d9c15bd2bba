"""The aggregator's background work.

- ``aggregator.register``: hand one shipment's tracking number to AfterShip, once. A short
  transaction claims the registration (a lease, so a duplicate job waits), the call goes out with
  no transaction open, a second transaction stores the provider's id. A crash in between leaves
  it pending; the retry registers again and AfterShip answers "already exists" (4003), which the
  connector resolves to the existing tracking: one tracking, whatever the interleaving.
- ``aggregator.apply_push``: turn a stored, verified push into tracking events, exactly once
  (the delivery row is locked, applied and marked processed in one transaction).
- ``aggregator.poll``: every minute, the registrations no push reached for a while, at most
  ``POLL_BATCH`` a run, paced under AfterShip's limit for ``GET /trackings/:id`` (5/s, shared by
  every worker through the rate limiter's backend).
- ``on_shipment_shipped``: the ``shipment.shipped`` subscriber that starts it all.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import dramatiq
import structlog
from dramatiq.rate_limits import WindowRateLimiter

from app.aggregator import service
from app.db import DbSession, utcnow
from app.events.models import EventType, LifecycleEvent
from app.jobs.backoff import backoff_ms
from app.jobs.errors import is_transient
from app.jobs.task import TaskContext, subscribe, task
from app.webhooks import service as inbox
from app.webhooks.tasks import MAX_FAILURES
from connectors.base import ConnectorError, PermanentConnectorError, RetryableConnectorError

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 10
BASE_DELAY_MS = 5_000
MAX_DELAY_MS = 60 * 60_000
#: AfterShip's documented per-endpoint limits (requests per second, per account).
CREATE_RATE = 20
GET_RATE = 5
POLL_EVERY_S = 60


def retry_delay_ms(attempt: int, retry_after: float | None = None) -> int:
    floor = None if retry_after is None else min(retry_after * 1000, MAX_DELAY_MS)
    return backoff_ms(attempt, base_ms=BASE_DELAY_MS, cap_ms=MAX_DELAY_MS, floor_ms=floor)


def _limiter(ctx: TaskContext, endpoint: str, rate: int) -> Any:
    return WindowRateLimiter(  # type: ignore[no-untyped-call]
        ctx.rate_limits, f"dropship:aftership:{endpoint}", limit=rate, window=1
    )


@subscribe(EventType.SHIPMENT_SHIPPED)
async def on_shipment_shipped(ctx: TaskContext, session: DbSession, event: LifecycleEvent) -> None:
    """Follow a new shipment through the aggregator if it needs it: a row and its job, in the
    subscriber's transaction; a repeated event finds the row and does nothing."""
    shipment_id = event.data.get("shipment_id")
    if shipment_id:
        await service.follow_shipment(session, ctx.settings, uuid.UUID(shipment_id))


@task("aggregator.register", max_retries=MAX_ATTEMPTS * 3, stale=service.unregistered)
async def register(ctx: TaskContext, registration_id: str) -> None:
    rid = uuid.UUID(registration_id)
    async with ctx.db.transaction() as session:
        claim = await service.claim_registration(session, rid)
    if claim is None:
        return
    provider = service.provider(ctx.settings, ctx.http)
    try:
        with _limiter(ctx, "create", CREATE_RATE).acquire(raise_on_failure=True):
            ref = await provider.register(claim.tracking_number, claim.slug, claim.order_ref)
    except dramatiq.RateLimitExceeded:
        async with ctx.db.transaction() as session:
            await service.retry_later(
                session, rid, "waiting for a rate-limit slot", utcnow(), not_an_attempt=True
            )
        raise dramatiq.Retry("aftership rate limit", delay=500) from None
    except RetryableConnectorError as exc:
        async with ctx.db.transaction() as session:
            if claim.attempts >= MAX_ATTEMPTS:
                await service.give_up(session, rid, f"gave up: {exc.message}")
                log.error("aggregator.register_given_up", registration_id=registration_id)
                return
            delay = retry_delay_ms(claim.attempts, exc.retry_after)
            await service.retry_later(
                session, rid, exc.message, utcnow() + timedelta(milliseconds=delay)
            )
        raise dramatiq.Retry(exc.message, delay=delay) from None
    except PermanentConnectorError as exc:
        async with ctx.db.transaction() as session:
            await service.give_up(session, rid, exc.message)
        log.warning(
            "aggregator.register_refused", registration_id=registration_id, error=exc.message
        )
        return
    async with ctx.db.transaction() as session:
        await service.registered(session, rid, ref)
    log.info("aggregator.registered", registration_id=registration_id, provider_ref=ref)


@task("aggregator.apply_push", stale=service.unapplied_pushes)
async def apply_push(ctx: TaskContext, delivery_id: str) -> None:
    did = uuid.UUID(delivery_id)
    try:
        async with ctx.db.transaction() as session:
            delivery = await service.load_push(session, did)
            if delivery is None or delivery.processed_at is not None:
                return
            provider = service.provider(ctx.settings, ctx.http)
            try:
                updates = provider.parse_push(delivery.payload.encode())
            except (ValueError, RecursionError) as exc:
                outcome = f"rejected: {exc}"
                log.warning("aggregator.push_rejected", delivery_id=delivery_id, error=str(exc))
            else:
                outcomes = [await service.apply_update(session, u) for u in updates]
                outcome = "; ".join(outcomes) or f"ignored: {delivery.topic}"
            await inbox.mark_processed(session, did, outcome)
        log.info("aggregator.push_applied", delivery_id=delivery_id, outcome=outcome)
    except Exception as exc:
        if not is_transient(exc):
            async with ctx.db.transaction() as session:
                counted = await inbox.count_failure(session, did, f"failed: {exc!r}")
            if counted is not None and counted.failures >= MAX_FAILURES:
                log.error("aggregator.push_given_up", delivery_id=delivery_id, error=repr(exc))
        raise


@task("aggregator.poll", every=POLL_EVERY_S)
async def poll(ctx: TaskContext) -> None:
    await poll_due(ctx)


async def poll_due(ctx: TaskContext) -> int:
    """Poll the registrations pushes have not reached lately; returns how many were asked."""
    async with ctx.db.transaction() as session:
        claims = await service.claim_due_polls(session, utcnow(), service.POLL_BATCH)
    if not claims:
        return 0
    provider = service.provider(ctx.settings, ctx.http)
    limiter = _limiter(ctx, "get-tracking", GET_RATE)
    for claim in claims:
        assert claim.provider_ref is not None
        while True:
            with limiter.acquire(raise_on_failure=False) as acquired:
                if acquired:
                    outcome = await _poll_one(ctx, provider, claim)
                    break
            await asyncio.sleep(0.2)
        log.info("aggregator.polled", registration_id=str(claim.id), outcome=outcome)
    return len(claims)


async def _poll_one(ctx: TaskContext, provider: Any, claim: service.Claim) -> str:
    try:
        update = await provider.fetch(claim.provider_ref)
    except RetryableConnectorError as exc:
        delay = retry_delay_ms(1, exc.retry_after)
        async with ctx.db.transaction() as session:
            await service.retry_later(
                session, claim.id, exc.message, utcnow() + timedelta(milliseconds=delay)
            )
        return f"retry: {exc.message}"
    except ConnectorError as exc:  # the tracking is gone at AfterShip: stop following it
        async with ctx.db.transaction() as session:
            await service.give_up(session, claim.id, exc.message)
        return f"failed: {exc.message}"
    async with ctx.db.transaction() as session:
        added = await service.apply_poll(session, claim.id, update)
    return f"{added} event(s)"
