"""Outbound webhooks: every lifecycle event becomes deliveries (the subscriber), and
``outbound.deliver`` sends one, signed, until the endpoint answers 2xx or a day has passed.

The send follows the house pattern: a short transaction claims the delivery (a lease), the POST
goes out with no transaction open, a second transaction records the attempt and the outcome.
Every attempt carries the same ``webhook-id`` (the event's) and body with a fresh
``webhook-timestamp`` and signature; a crash after the receiver's 2xx and before our commit sends
it again after the lease, under the same id, which is why receivers drop repeats. Failures retry
with the one backoff (a ``Retry-After`` is a floor) through a delayed outbox job, and
``next_attempt_at`` keeps the sweeper and early duplicates away until then.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import httpx
import structlog

from app.db import DbSession, utcnow
from app.events.models import LifecycleEvent
from app.jobs.backoff import EARLY, backoff_ms
from app.jobs.outbox import enqueue
from app.jobs.task import StaleWindow, TaskContext, housekeeping, rows_affected, subscribe, task
from app.outbound import service, signing
from app.outbound.models import DeliveryStatus, WebhookEndpoint
from app.outbound.targets import TargetRefused, check_target

log = structlog.get_logger(__name__)

#: A receiver gets this long to answer (Standard Webhooks suggests 15 to 30 s).
TIMEOUT = httpx.Timeout(15.0, connect=5.0)
SEND_TIME_LIMIT_S = 60
#: A claimed delivery is left to its sender this long before the sweeper may send it again.
LEASE = timedelta(seconds=SEND_TIME_LIMIT_S * 2.5)
#: 5 s, 10 s, 20 s … doubling up to 2 h between attempts, with equal jitter.
BASE_DELAY_MS = 5_000
MAX_DELAY_MS = 2 * 3600_000
#: A receiver's ``Retry-After`` is honoured up to this.
MAX_RETRY_AFTER_MS = 3600_000
#: Characters of the receiver's answer kept in the delivery log.
EXCERPT = 500
#: Delivered or given-up deliveries (and their attempts) are kept this long.
RETENTION = timedelta(days=30)


def retry_delay_ms(attempt: int, retry_after: float | None = None) -> int:
    floor = None if retry_after is None else min(retry_after * 1000, MAX_RETRY_AFTER_MS)
    return backoff_ms(attempt, base_ms=BASE_DELAY_MS, cap_ms=MAX_DELAY_MS, floor_ms=floor)


@subscribe("*", when=service.may_deliver)
async def deliveries_for_event(ctx: TaskContext, session: DbSession, event: LifecycleEvent) -> None:
    """One delivery (and its job) per endpoint that wants the event; idempotent by its key."""
    await service.fan_out(session, event)


async def _undelivered(session: DbSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    return await service.undelivered(session, window, LEASE)


@task("outbound.deliver", max_retries=20, time_limit_s=SEND_TIME_LIMIT_S, stale=_undelivered)
async def deliver(ctx: TaskContext, delivery_id: str) -> None:
    did = uuid.UUID(delivery_id)
    now = utcnow()
    async with ctx.db.transaction() as session:
        delivery = await service.load_delivery(session, did)
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return
        if delivery.claimed_at is not None and delivery.claimed_at > now - LEASE:
            return  # another worker is sending it right now
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now + EARLY:
            return  # backing off: its own retry is scheduled
        endpoint = await service.endpoint_for_delivery(session, delivery)
        if endpoint is None or not endpoint.enabled:
            delivery.status = DeliveryStatus.FAILED
            delivery.last_error = delivery.last_error or "endpoint disabled"
            return
        delivery.claimed_at = now
        delivery.attempts += 1
        attempt = delivery.attempts
        url, body, message_id = endpoint.url, delivery.body.encode(), delivery.message_id
        secrets = service.signing_secrets(ctx.box, endpoint, now)

    status_code, excerpt, error, retry_after = None, None, None, None
    started = time.monotonic()
    try:
        await check_target(url, allow_loopback=ctx.settings.outbound_allow_http)
        headers = signing.headers(secrets, message_id, int(time.time()), body)
        async with ctx.http.stream(
            "POST", url, content=body, headers=headers, timeout=TIMEOUT, follow_redirects=False
        ) as response:
            status_code = response.status_code
            excerpt = await _excerpt(response)
            retry_after = _retry_after(response)
    except TargetRefused as exc:
        error = f"refused: {exc}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    duration_ms = int((time.monotonic() - started) * 1000)
    ok = status_code is not None and 200 <= status_code < 300

    async with ctx.db.transaction() as session:
        delivery = await service.load_delivery(session, did)
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return
        endpoint = await service.endpoint_for_delivery(session, delivery)
        done = utcnow()
        service.log_attempt(
            session,
            delivery,
            at=now,
            status_code=status_code,
            duration_ms=duration_ms,
            excerpt=excerpt,
            error=error,
        )
        delivery.claimed_at = None
        delivery.last_status_code = status_code
        if ok:
            delivery.status = DeliveryStatus.DELIVERED
            delivery.delivered_at = done
            delivery.last_error = None
            delivery.next_attempt_at = None
            if endpoint is not None:
                endpoint.consecutive_failures = 0
                endpoint.failing_since = None
                endpoint.last_success_at = done
            log.info("outbound.delivered", delivery_id=delivery_id, attempts=attempt)
            return
        reason = error or f"HTTP {status_code}" + (f" {excerpt[:100]}" if excerpt else "")
        delivery.last_error = reason
        if endpoint is None:
            delivery.status = DeliveryStatus.FAILED
            return
        endpoint.consecutive_failures += 1
        endpoint.failing_since = endpoint.failing_since or now
        if status_code == 410:  # the receiver says it is gone for good (Standard Webhooks)
            await service.disable_endpoint(session, ctx.settings, endpoint, "it answered 410 Gone")
        elif service.should_disable(endpoint, done):
            await service.disable_endpoint(
                session, ctx.settings, endpoint, f"every attempt failed since {_day(endpoint)}"
            )
        if not endpoint.enabled:
            log.warning("outbound.endpoint_disabled", endpoint_id=str(endpoint.id))
            return  # its pending deliveries, this one included, stopped with it
        delay = retry_delay_ms(attempt, retry_after)
        next_at = done + timedelta(milliseconds=delay)
        if next_at > delivery.retry_until:
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = None
            delivery.last_error = f"gave up after {attempt} attempts; last: {reason}"
            log.warning("outbound.gave_up", delivery_id=delivery_id, attempts=attempt)
            return
        delivery.next_attempt_at = next_at
        # A delayed outbox job, committed with the outcome: the retry survives any restart.
        await enqueue(session, deliver, delivery.id, delay=delay / 1000)
    log.info("outbound.retry", delivery_id=delivery_id, attempt=attempt, delay_ms=delay)


def _day(endpoint: WebhookEndpoint) -> str:
    since: datetime | None = endpoint.failing_since
    return since.strftime("%Y-%m-%d %H:%M UTC") if since else "a day"


async def _excerpt(response: httpx.Response) -> str | None:
    """The start of the answer, without reading a large one whole."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= EXCERPT * 4:
            break
    text = b"".join(chunks).decode("utf-8", "replace")[:EXCERPT]
    return text or None


def _retry_after(response: httpx.Response) -> float | None:
    if response.status_code not in (429, 503):
        return None
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


@housekeeping("outbound.deliveries")
async def drop_old_deliveries(session: DbSession, now: datetime) -> int:
    return await rows_affected(session, service.finished_before(now - RETENTION))
