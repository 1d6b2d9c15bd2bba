"""Shipments to Shopify: ``fulfillment.create``, ``fulfillment.event``, ``fulfillment.tracking``.

``fulfillment.create`` follows the house pattern (app/purchasing/tasks.py): claim in a short
transaction (``creating``, committed), call Shopify with no transaction open, record the outcome
in a second transaction. What differs is the recovery: Shopify takes no idempotency key for
``fulfillmentCreate``, so a row claimed again while ``creating`` reads the order's fulfillments
first and adopts the one carrying our tracking number (see app/fulfillment/service.py).

Outcomes: ``userErrors`` and other refusals fail the row into the timeline and the exceptions
queue, with no retry; a token Shopify refuses stops the shop's sync until the merchant gives a
new one (told once, nothing retried meanwhile); throttling, 5xx and network errors back off
(``next_attempt_at``, at least what Shopify's cost bucket needs), and the sweeper is the safety
net for lost jobs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import dramatiq
import structlog

from app.db import DbSession
from app.events.models import EventType, LifecycleEvent
from app.fulfillment import refunds, service
from app.fulfillment.service import NOT_YET, Shop
from app.jobs.backoff import backoff_ms
from app.jobs.outbox import enqueue
from app.jobs.task import TaskContext, subscribe, task
from app.purchasing.models import Shipment
from connectors.base import PermanentConnectorError, RetryableConnectorError
from connectors.shopify_admin import BudgetExceeded, ShopifyAdmin, ShopifyAuthError

log = structlog.get_logger(__name__)

BASE_DELAY_MS = 2_000
MAX_DELAY_MS = 15 * 60_000
#: Shopify's cost-bucket wait is honoured up to this.
MAX_RETRY_AFTER_MS = 10 * 60_000
CALL_TIME_LIMIT_S = 120

#: The Shopify company name of a shipment's carrier (carrier detection plugs in here).
company_of: Callable[[Shipment], str | None] = service.tracking_company


def retry_delay_ms(attempt: int, retry_after: float | None = None) -> int:
    floor = None if retry_after is None else min(retry_after * 1000, MAX_RETRY_AFTER_MS)
    return backoff_ms(attempt, base_ms=BASE_DELAY_MS, cap_ms=MAX_DELAY_MS, floor_ms=floor)


def admin(ctx: TaskContext, shop: Shop) -> ShopifyAdmin:
    return ShopifyAdmin(
        ctx.shopify_http,
        shop.domain,
        shop.token,
        ctx.settings.shopify_api_version,
        ctx.shopify_costs,
    )


@task(
    "fulfillment.create",
    max_retries=service.MAX_ATTEMPTS * 4,
    time_limit_s=CALL_TIME_LIMIT_S,
    stale=service.unsynced,
)
async def create_fulfillment(ctx: TaskContext, shipment_id: str) -> None:
    sid = uuid.UUID(str(shipment_id))
    async with ctx.db.transaction() as session:
        claim = await service.claim(session, ctx.box, sid, company_of=company_of)
    if claim is None:
        return

    api = admin(ctx, claim.shop)
    ids: list[str] = []
    adopted = 0
    looked = sent = False
    try:
        wanted = dict(claim.wanted)
        if claim.uncertain:
            if not claim.tracking.get("number"):
                # Nothing to recognise our earlier create by: a person looks, rather than
                # risking a second fulfillment of the same parcel.
                raise PermanentConnectorError(
                    "an earlier attempt may have created this fulfillment in Shopify and the "
                    "shipment has no tracking number to recognise it by: check the order there"
                )
            existing = await api.order_fulfillments(claim.order_gid)
            looked = True
            found, wanted = service.adoptable(existing, claim.tracking, wanted)
            ids.extend(found)
            adopted = len(found)
        if wanted:
            plan = service.plan(wanted, await api.fulfillment_orders(claim.order_gid))
            if plan.shortfall or not plan.groups:
                missing = ", ".join(f"{q} x {g}" for g, q in plan.shortfall.items())
                held = f" ({'; '.join(plan.held)})" if plan.held else ""
                raise PermanentConnectorError(
                    f"Shopify has no open fulfillment order line for {missing}{held}"
                )
            for group in plan.groups:
                sent = True
                body = service.fulfillment_input(group, claim.tracking, claim.shop.notify_customer)
                created = await api.create_fulfillment(body)
                ids.append(str(created["id"]))
    except ShopifyAuthError as exc:
        async with ctx.db.transaction() as session:
            await service.stop_shop(
                session,
                claim.shop.merchant_id,
                exc.message,
                sid,
                uncertain=sent or (claim.uncertain and not looked),
            )
        log.warning(
            "shopify.sync_stopped", merchant_id=str(claim.shop.merchant_id), error=exc.message
        )
        return
    except RetryableConnectorError as exc:
        waiting = isinstance(exc, BudgetExceeded)
        delay = retry_delay_ms(claim.attempt, exc.retry_after)
        async with ctx.db.transaction() as session:
            again = await service.mark_retry(
                session,
                sid,
                exc.message,
                delay,
                # A create may have reached Shopify: the next attempt looks first.
                uncertain=sent or (claim.uncertain and not looked),
                counts=not waiting,
            )
        if again:
            raise dramatiq.Retry(exc.message, delay=delay) from None
        return
    except PermanentConnectorError as exc:
        async with ctx.db.transaction() as session:
            await service.mark_failed(session, sid, exc.message, ids=ids)
        log.warning("shopify.fulfillment_failed", shipment_id=str(sid), error=exc.message)
        return

    async with ctx.db.transaction() as session:
        await service.mark_created(session, sid, ids, adopted=adopted)
        # Tracking statuses that came before the fulfillment go now, not at their next retry.
        for event_id in await service.waiting_events(session, sid):
            await enqueue(session, push_event, event_id)
    log.info("shopify.fulfilled", shipment_id=str(sid), fulfillments=ids, adopted=adopted)


@task(
    "fulfillment.event",
    max_retries=service.MAX_ATTEMPTS * 4,
    time_limit_s=CALL_TIME_LIMIT_S,
    stale=service.unpushed_events,
)
async def push_event(ctx: TaskContext, event_id: str) -> None:
    """One tracking status as a fulfillment event, once the fulfillment exists."""
    eid = uuid.UUID(str(event_id))
    async with ctx.db.transaction() as session:
        claim = await service.claim_event(session, ctx.box, eid)
    if claim == NOT_YET:
        return  # the fulfillment's creation enqueues this event again
    if not isinstance(claim, service.EventClaim):
        return
    api = admin(ctx, claim.shop)
    pushed: str | None = None
    try:
        for fulfillment_id in claim.fulfillment_ids:
            created = await api.create_event({**claim.event, "fulfillmentId": fulfillment_id})
            pushed = pushed or created.get("id")
    except ShopifyAuthError as exc:
        async with ctx.db.transaction() as session:
            await service.stop_shop(session, claim.shop.merchant_id, exc.message)
        return
    except RetryableConnectorError as exc:
        delay = retry_delay_ms(claim.attempt, exc.retry_after)
        async with ctx.db.transaction() as session:
            if claim.attempt >= service.MAX_ATTEMPTS:
                await service.event_done(session, eid, error=f"gave up: {exc.message}")
                return
            await service.event_wait(session, eid, delay, exc.message)
        raise dramatiq.Retry(exc.message, delay=delay) from None
    except PermanentConnectorError as exc:
        async with ctx.db.transaction() as session:
            await service.event_done(session, eid, error=exc.message)
        return
    async with ctx.db.transaction() as session:
        await service.event_done(session, eid, shopify_event_id=pushed)


@task("fulfillment.tracking", max_retries=service.MAX_ATTEMPTS, time_limit_s=CALL_TIME_LIMIT_S)
async def update_tracking(ctx: TaskContext, shipment_id: str) -> None:
    """The shipment's current tracking on its fulfillment (setting the same values twice is
    harmless, so no record-before-call is needed)."""
    sid = uuid.UUID(str(shipment_id))
    async with ctx.db.transaction() as session:
        claim = await service.tracking_update(session, ctx.box, sid, company_of=company_of)
    if claim is None:
        return
    api = admin(ctx, claim.shop)
    try:
        for fulfillment_id in claim.fulfillment_ids:
            await api.update_tracking(
                fulfillment_id, claim.tracking, notify_customer=claim.shop.notify_customer
            )
    except ShopifyAuthError as exc:
        async with ctx.db.transaction() as session:
            await service.stop_shop(session, claim.shop.merchant_id, exc.message)
        return
    except RetryableConnectorError as exc:
        raise dramatiq.Retry(exc.message, delay=retry_delay_ms(1, exc.retry_after)) from None
    except PermanentConnectorError as exc:
        async with ctx.db.transaction() as session:
            await service.note(
                session,
                sid,
                "shopify.tracking_failed",
                f"tracking not updated in Shopify: {exc.message}",
            )
        return
    async with ctx.db.transaction() as session:
        await service.note(
            session,
            sid,
            "shopify.tracking_updated",
            f"tracking updated in Shopify: {claim.tracking.get('number', '')}".strip(),
        )


@task(
    "fulfillment.refund",
    max_retries=refunds.MAX_ATTEMPTS * 4,
    time_limit_s=CALL_TIME_LIMIT_S,
    stale=refunds.unrecorded,
)
async def record_refund(ctx: TaskContext, row_id: str) -> None:
    """A refund that succeeded in Stripe, recorded on the Shopify order (see
    app/fulfillment/refunds.py: once, and without moving money a second time)."""
    rid = uuid.UUID(str(row_id))
    async with ctx.db.transaction() as session:
        claim = await refunds.claim_refund(session, ctx.box, rid)
    if claim is None:
        return
    api = admin(ctx, claim.shop)
    sent = looked = False
    try:
        order = await api.order_refunds(claim.order_gid)
        looked = True
        found = refunds.adopt(order.get("refunds") or [], claim.refund_id)
        if found is None:
            body = refunds.refund_input(claim, order.get("transactions") or [])
            if not body:
                async with ctx.db.transaction() as session:
                    await refunds.mark_skipped(
                        session,
                        rid,
                        "refund not recorded in Shopify: an amount alone paid through a gateway "
                        "Shopify refunds itself cannot be booked without moving money again",
                    )
                return
            sent = True
            created = await api.create_refund(body)
            shopify_id = str(created["id"])
        else:
            shopify_id = found
    except ShopifyAuthError as exc:
        async with ctx.db.transaction() as session:
            await service.stop_shop(session, claim.shop.merchant_id, exc.message)
            await refunds.mark_retry(
                session, rid, exc.message, 0, uncertain=sent or claim.uncertain, counts=False
            )
        return
    except RetryableConnectorError as exc:
        delay = retry_delay_ms(claim.attempt, exc.retry_after)
        async with ctx.db.transaction() as session:
            again = await refunds.mark_retry(
                session,
                rid,
                exc.message,
                delay,
                # A record may have reached Shopify: the next attempt looks first (it always
                # does; this keeps the row honest about it).
                uncertain=sent or (claim.uncertain and not looked),
                counts=not isinstance(exc, BudgetExceeded),
            )
        if again:
            raise dramatiq.Retry(exc.message, delay=delay) from None
        return
    except PermanentConnectorError as exc:
        async with ctx.db.transaction() as session:
            await refunds.mark_failed(session, rid, exc.message)
        log.warning("shopify.refund_failed", row_id=str(rid), error=exc.message)
        return
    async with ctx.db.transaction() as session:
        await refunds.mark_recorded(session, rid, shopify_id, adopted=found is not None)
    log.info("shopify.refund_recorded", row_id=str(rid), shopify_refund_id=shopify_id)


# --- Reacting to lifecycle events (subscribers: write rows, enqueue our own tasks) ------------


def _shipment_of(event: LifecycleEvent) -> uuid.UUID | None:
    raw = event.data.get("shipment_id")
    try:
        return uuid.UUID(str(raw)) if raw else None
    except ValueError:
        return None


@subscribe(EventType.SHIPMENT_SHIPPED)
async def on_shipment_shipped(ctx: TaskContext, session: DbSession, event: LifecycleEvent) -> None:
    shipment_id = _shipment_of(event)
    if shipment_id is not None:
        await shipment_shipped(session, shipment_id)


@subscribe(*(f"shipment.{status}" for status in service.EVENT_STATUS))
async def on_tracking_status(ctx: TaskContext, session: DbSession, event: LifecycleEvent) -> None:
    shipment_id = _shipment_of(event)
    if shipment_id is None:
        return
    status = str(event.data.get("status") or event.type.removeprefix("shipment."))
    raw = event.data.get("occurred_at")
    occurred_at = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    await shipment_status(session, shipment_id, status, occurred_at)


@subscribe(EventType.SHIPMENT_TRACKING_UPDATED)
async def on_tracking_updated(ctx: TaskContext, session: DbSession, event: LifecycleEvent) -> None:
    shipment_id = _shipment_of(event)
    if shipment_id is not None:
        await tracking_changed(session, shipment_id)


async def shipment_shipped(session: DbSession, shipment_id: uuid.UUID) -> None:
    if await service.track_shipment(session, shipment_id):
        await enqueue(session, create_fulfillment, shipment_id)


async def shipment_status(
    session: DbSession, shipment_id: uuid.UUID, status: str, occurred_at: datetime | None
) -> None:
    event_id = await service.queue_event(session, shipment_id, status, occurred_at)
    if event_id is not None:
        await enqueue(session, push_event, event_id)


async def tracking_changed(session: DbSession, shipment_id: uuid.UUID) -> None:
    await enqueue(session, update_tracking, shipment_id)


@subscribe(EventType.REFUND_SUCCEEDED)
async def on_refund_succeeded(ctx: TaskContext, session: DbSession, event: LifecycleEvent) -> None:
    row_id = await refunds.track_refund(session, event)
    if row_id is not None:
        await enqueue(session, record_refund, row_id)
