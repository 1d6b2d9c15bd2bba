"""``webhook.process``: turn a stored delivery into domain changes, exactly once.

The delivery row is locked, handled and marked processed in one transaction: a second run (the
outbox and the broker deliver at least once) finds ``processed_at`` set and does nothing. A
payload we cannot use is a decision, not a retry: it is marked processed with the reason.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog

from app.db import DbSession, utcnow
from app.events.service import deferred_publications
from app.exceptions.service import open_case
from app.jobs.errors import is_transient
from app.jobs.task import StaleWindow, TaskContext, housekeeping, task
from app.merchants.models import Merchant, MerchantStatus
from app.merchants.service import deactivate
from app.orders import privacy
from app.orders.drafts import OrderDraft, PayloadError, from_shopify
from app.orders.models import OrderStatus
from app.orders.service import apply_update, cancel_order, create_order, find_existing
from app.orders.tasks import validate_and_route
from app.webhooks import service, topics

log = structlog.get_logger(__name__)

_ORDER_TOPICS = frozenset({topics.ORDERS_CREATE, topics.ORDERS_UPDATED, topics.ORDERS_CANCELLED})
_REDACTION_TOPICS = frozenset({topics.CUSTOMERS_REDACT, topics.SHOP_REDACT})


#: Failed runs after which a delivery is left for a person (the sweeper stops re-enqueuing it).
MAX_FAILURES = 20
#: Days a handled webhook keeps its raw body (ids are kept for redelivery detection).
PAYLOAD_RETENTION_DAYS = 30


async def _unprocessed(session: DbSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    return await service.unprocessed(session, window, MAX_FAILURES)


@housekeeping("webhook.payloads")
async def drop_old_payloads(session: DbSession, now: datetime) -> int:
    return await service.drop_old_payloads(session, now, PAYLOAD_RETENTION_DAYS, MAX_FAILURES)


#: Deliveries one run takes when they queue up (a flash sale): one transaction for all, their
#: orders' events in one batch. Small enough that a batch's row locks (stock) are held briefly.
BATCH = 20


@task("webhook.process", stale=_unprocessed, batch=BATCH)
async def process_delivery(ctx: TaskContext, *delivery_ids: str) -> None:
    """Handle each delivery. Several (queued up, sent as one message by the relay) are handled
    in one transaction; if that fails, each is handled alone, so one bad delivery neither
    holds back nor is hidden by the others (the first failure is then raised: the message is
    retried, and the deliveries handled already find themselves processed)."""
    if len(delivery_ids) == 1:
        await _process_one(ctx, delivery_ids[0])
        return
    try:
        async with ctx.db.transaction() as session, deferred_publications(session):
            for delivery_id in delivery_ids:
                await _process_in(ctx, session, delivery_id)
        return
    except Exception as exc:
        log.warning("webhook.batch_split", size=len(delivery_ids), error=repr(exc))
    failures: list[Exception] = []
    for delivery_id in delivery_ids:
        try:
            await _process_one(ctx, delivery_id)
        except Exception as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


async def _process_one(ctx: TaskContext, delivery_id: str) -> None:
    try:
        async with ctx.db.transaction() as session:
            await _process_in(ctx, session, delivery_id)
    except Exception as exc:
        # Transient trouble (a lost connection, a deadlock) is Dramatiq's to retry and says
        # nothing about this delivery: only failures that would happen again are counted.
        if not is_transient(exc):
            await _count_failure(ctx, delivery_id, exc)
        raise


async def _count_failure(ctx: TaskContext, delivery_id: str, exc: Exception) -> None:
    """Remember a failed run, in its own transaction (the run's was rolled back), in one
    statement that never touches a delivery processed meanwhile by another run. At the limit,
    open an exceptions-queue entry: Shopify got its 200 and will not send this again."""
    try:
        async with ctx.db.transaction() as session:
            counted = await service.count_failure(
                session, uuid.UUID(delivery_id), f"failed: {exc!r}"
            )
            if counted is None or counted.failures != MAX_FAILURES:
                return
            log.error("webhook.given_up", delivery_id=delivery_id, error=repr(exc))
            if counted.merchant_id is not None:
                open_case(
                    session,
                    counted.merchant_id,
                    "webhook_failed",
                    f"Shopify {counted.topic} webhook failed {MAX_FAILURES} times and "
                    f"is no longer retried: {exc!r}"[:2000],
                    delivery_id=delivery_id,
                    topic=counted.topic,
                    shopify_order_id=_raw_order_id(counted.payload),
                )
    except Exception as count_exc:  # the database is what failed: the sweeper will come back
        log.warning("webhook.failure_not_counted", delivery_id=delivery_id, error=repr(count_exc))


async def _process_in(ctx: TaskContext, session: DbSession, delivery_id: str) -> None:
    loaded = await service.load_for_processing(session, uuid.UUID(delivery_id))
    if loaded is None:
        return
    delivery, merchant = loaded
    if delivery.processed_at is not None or delivery.source != "shopify":
        return
    # Plain values: a rolled-back savepoint below expires the ORM objects it touched.
    topic, body, merchant_id = delivery.topic, delivery.payload, delivery.merchant_id
    draft: OrderDraft | None = None
    try:
        payload = json.loads(body, parse_float=Decimal)
        if (
            topic == topics.ORDERS_CREATE
            and merchant is not None
            and merchant.status == MerchantStatus.ACTIVE
        ):
            # The hot path: the payload is judged before anything is written, so a
            # rejection has nothing to undo (no savepoint); a failure after this point is
            # not a rejection, it fails the run (rolled back, retried).
            draft = from_shopify(payload)
        else:
            async with session.begin_nested():  # a rejection leaves no half-done changes
                outcome = await _handle(ctx, session, merchant, topic, payload)
    except (PayloadError, ValueError, RecursionError) as exc:
        # Not retryable: the same body fails the same way. Keep the reason, and tell a person
        # when an order is at stake (Shopify got its 200 and will not send it again).
        outcome = f"rejected: {exc}"
        log.warning("webhook.rejected", topic=topic, error=str(exc))
        if merchant is not None and merchant_id is not None and topic in _ORDER_TOPICS:
            open_case(
                session,
                merchant_id,
                "webhook_rejected",
                f"Shopify {topic} webhook could not be used: {exc}",
                delivery_id=delivery_id,
                topic=topic,
                field=getattr(exc, "field", None),
                shopify_order_id=_raw_order_id(body),
            )
    if draft is not None:
        outcome = await _handle(ctx, session, merchant, topic, payload, draft)
    await service.mark_processed(
        session,
        uuid.UUID(delivery_id),
        outcome,
        # The redaction request itself names the customer.
        payload=privacy.REDACTED_BODY if topic in _REDACTION_TOPICS else None,
    )
    log.info("webhook.processed", topic=topic, outcome=outcome)


async def _create(
    ctx: TaskContext, session: DbSession, merchant: Merchant, draft: OrderDraft
) -> str:
    # The order's events (created, routed, placed in the portal) are written together at the
    # end: one INSERT each for events, reactions and their jobs.
    async with deferred_publications(session):
        intake = await create_order(session, merchant.id, draft, enqueue_validation=False)
        if intake.created:
            outcome = f"order {intake.order.id} created"
            if intake.order.status == OrderStatus.RECEIVED:
                # Validated (and routed) here, in this job's transaction: no job hops.
                await validate_and_route(session, merchant, intake.order, fresh=True, ctx=ctx)
            else:
                await session.flush()
            return outcome
    # A second orders/create for the same order (another subscription, a retry with a new
    # webhook id, or a create arriving after an update or a cancellation already made the
    # order) changes nothing: it can only hold data as old as, or older than, ours.
    return f"order {intake.order.id} exists: unchanged"


def _raw_order_id(body: str) -> str | None:
    try:
        value = json.loads(body).get("id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return str(value)[:32] if isinstance(value, int | str) else None


async def _handle(
    ctx: TaskContext,
    session: DbSession,
    merchant: Merchant | None,
    topic: str,
    payload: Any,
    draft: OrderDraft | None = None,
) -> str:
    """What the delivery changes; ``draft``: the order of ``payload``, parsed already."""
    if merchant is None:
        return "ignored: merchant deleted"
    if topic == topics.APP_UNINSTALLED:
        return "merchant deactivated" if await deactivate(session, merchant) else "already inactive"
    if topic == topics.CUSTOMERS_DATA_REQUEST:
        return await privacy.data_request(session, merchant.id, payload)
    if topic == topics.CUSTOMERS_REDACT:
        return await privacy.redact_customer(session, merchant.id, payload)
    if topic == topics.SHOP_REDACT:
        return await privacy.redact_shop(session, merchant.id)
    if merchant.status != MerchantStatus.ACTIVE:
        return "ignored: merchant inactive"

    draft = draft or from_shopify(payload)
    if topic == topics.ORDERS_CREATE:
        return await _create(ctx, session, merchant, draft)
    if topic == topics.ORDERS_UPDATED:
        existing = await find_existing(session, merchant.id, draft, lock=True)
        if existing is None:  # the create was never seen (e.g. order placed before install)
            intake = await create_order(session, merchant.id, draft)
            if intake.created:
                return f"order {intake.order.id} created from update"
            existing = intake.order  # created concurrently by another delivery
        return f"order {existing.id}: " + await apply_update(session, existing, draft)
    if topic == topics.ORDERS_CANCELLED:
        existing = await find_existing(session, merchant.id, draft, lock=True)
        if existing is None:
            if draft.cancelled_at is None:
                draft.cancelled_at = utcnow()
            intake = await create_order(session, merchant.id, draft)
            if intake.created:
                return f"order {intake.order.id} recorded as cancelled"
            existing = intake.order
        # A cancellation is final in Shopify, so even a replay older than the data we hold
        # stands; it just never moves ``source_updated_at`` backwards.
        # The payload's payment state, unless older than ours (Shopify may have refunded or
        # voided it as it cancelled): the refund policy reads it to refund nothing twice.
        if draft.financial_status and (
            draft.source_updated_at is None
            or existing.source_updated_at is None
            or draft.source_updated_at >= existing.source_updated_at
        ):
            existing.financial_status = draft.financial_status
        if draft.source_updated_at is not None and (
            existing.source_updated_at is None
            or draft.source_updated_at > existing.source_updated_at
        ):
            existing.source_updated_at = draft.source_updated_at
        return f"order {existing.id}: " + await cancel_order(
            session, existing, reason="cancelled in Shopify"
        )
    return "ignored: unhandled topic"
