"""``webhook.process``: turn a stored delivery into domain changes, exactly once.

The delivery row is locked, handled and marked processed in one transaction: a second run (the
outbox and the broker deliver at least once) finds ``processed_at`` set and does nothing. A
payload we cannot use is a decision, not a retry: it is marked processed with the reason.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.merchants.models import Merchant, MerchantStatus
from app.merchants.service import deactivate
from app.orders import privacy
from app.orders.drafts import PayloadError, from_shopify
from app.orders.service import apply_update, cancel_order, create_order, find_existing
from app.webhooks import topics
from app.webhooks.models import WebhookDelivery
from workers.registry import TaskContext, task

log = structlog.get_logger(__name__)


@task("webhook.process")
async def process_delivery(ctx: TaskContext, delivery_id: str) -> None:
    async with ctx.db.transaction() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.id == uuid.UUID(delivery_id))
        if ctx.db.dialect == "postgresql":
            query = query.with_for_update()
        delivery = await session.scalar(query)
        if delivery is None or delivery.processed_at is not None:
            return
        merchant = (
            await session.get(Merchant, delivery.merchant_id) if delivery.merchant_id else None
        )
        try:
            payload = json.loads(delivery.payload, parse_float=Decimal)
            outcome = await _handle(session, merchant, delivery.topic, payload)
        except PayloadError as exc:
            outcome = f"rejected: {exc}"
            log.warning("webhook.rejected", topic=delivery.topic, error=str(exc))
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id)
            .values(processed_at=utcnow(), outcome=outcome[:255])
        )
        log.info("webhook.processed", topic=delivery.topic, outcome=outcome)


async def _handle(
    session: AsyncSession, merchant: Merchant | None, topic: str, payload: Any
) -> str:
    if merchant is None:
        return "ignored: merchant deleted"
    if topic == topics.APP_UNINSTALLED:
        if merchant.status == MerchantStatus.ACTIVE:
            await deactivate(session, merchant)
            return "merchant deactivated"
        return "already inactive"
    if topic == topics.CUSTOMERS_DATA_REQUEST:
        return await privacy.data_request(session, merchant.id, payload)
    if topic == topics.CUSTOMERS_REDACT:
        return await privacy.redact_customer(session, merchant.id, payload)
    if topic == topics.SHOP_REDACT:
        return await privacy.redact_shop(session, merchant.id)
    if merchant.status != MerchantStatus.ACTIVE:
        return "ignored: merchant inactive"

    draft = from_shopify(payload)
    if topic == topics.ORDERS_CREATE:
        intake = await create_order(session, merchant.id, draft)
        if intake.created:
            return f"order {intake.order.id} created"
        # A second orders/create for the same order (a retry with another webhook id, or a
        # create that arrived after an update): treat it as an update, which ignores old data.
        return f"order {intake.order.id} exists: " + await apply_update(
            session, intake.order, draft
        )
    if topic == topics.ORDERS_UPDATED:
        existing = await find_existing(session, merchant.id, draft)
        if existing is None:  # the create was never seen (e.g. order placed before install)
            intake = await create_order(session, merchant.id, draft)
            return f"order {intake.order.id} created from update"
        return f"order {existing.id}: " + await apply_update(session, existing, draft)
    if topic == topics.ORDERS_CANCELLED:
        existing = await find_existing(session, merchant.id, draft)
        if existing is None:
            if draft.cancelled_at is None:
                draft.cancelled_at = utcnow()
            intake = await create_order(session, merchant.id, draft)
            return f"order {intake.order.id} recorded as cancelled"
        if (
            draft.source_updated_at is not None
            and existing.source_updated_at is not None
            and draft.source_updated_at < existing.source_updated_at
        ):
            return f"order {existing.id}: stale"
        existing.source_updated_at = draft.source_updated_at or existing.source_updated_at
        return f"order {existing.id}: " + await cancel_order(
            session, existing, reason="cancelled in Shopify"
        )
    return "ignored: unhandled topic"
