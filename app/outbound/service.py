"""Webhook endpoints and their deliveries: the rules and every query of the domain.

An event becomes one delivery row per endpoint that wants it (unique on endpoint and event), its
JSON body built once, in the transaction of the event's handling; ``outbound.deliver`` sends it
(``app.outbound.tasks``). An endpoint failing for a day is disabled here: an exceptions-queue
entry and one email tell the merchant, and its pending deliveries stop.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, String, cast, delete, exists, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import limits
from app.api.pagination import Page, rows_page
from app.codes import wire_amount
from app.db import insert_for, utcnow, uuid7
from app.errors import Conflict, NotFound
from app.events.models import LifecycleEvent
from app.exceptions.service import open_case
from app.jobs.outbox import enqueue
from app.jobs.task import StaleWindow
from app.mail.service import queue_email
from app.merchants.models import Merchant
from app.orders.models import Order
from app.outbound import signing
from app.outbound.models import DeliveryAttempt, DeliveryStatus, EndpointDelivery, WebhookEndpoint
from app.outbound.targets import check_url
from app.purchasing.models import PurchaseOrder, Shipment
from app.security import SecretBox
from app.settings import Settings

#: Retries of a delivery stop this long after the event (the Standard Webhooks guidance).
RETRY_FOR = timedelta(hours=24)
#: An endpoint that has failed every attempt for this long (and at least
#: ``DISABLE_MIN_FAILURES`` times) is disabled; so is one failing this many times in a row.
DISABLE_AFTER = timedelta(hours=24)
DISABLE_MIN_FAILURES = 5
DISABLE_AFTER_FAILURES = 100
#: After a rotation, the previous secret signs too for this long.
ROTATION_OVERLAP = timedelta(hours=24)
EXCEPTION_KIND = "webhook_endpoint_disabled"
NOT_FOUND = "no webhook endpoint with this id in your store"


# --------------------------------------------------------------------------- endpoints


async def create_endpoint(
    session: AsyncSession,
    box: SecretBox,
    merchant_id: uuid.UUID,
    *,
    url: str,
    events: list[str],
    description: str | None,
    enabled: bool,
    allow_http: bool,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (returned this once, stored encrypted)."""
    check_url(url, allow_http=allow_http)
    # The merchant's row lock makes the count and the insert one step (two creates take turns).
    await session.execute(select(Merchant.id).where(Merchant.id == merchant_id).with_for_update())
    count = await session.scalar(
        select(func.count())
        .select_from(WebhookEndpoint)
        .where(WebhookEndpoint.merchant_id == merchant_id)
    )
    if (count or 0) >= limits.MAX_WEBHOOK_ENDPOINTS:
        raise Conflict(
            f"at most {limits.MAX_WEBHOOK_ENDPOINTS} webhook endpoints per store; delete one first"
        )
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        merchant_id=merchant_id,
        url=url,
        events=list(events),
        description=description,
        enabled=enabled,
        secret_encrypted=box.encrypt(secret),
    )
    session.add(endpoint)
    await session.flush()
    return endpoint, secret


async def list_endpoints(
    session: AsyncSession, merchant_id: uuid.UUID, *, cursor: str | None, limit: int
) -> Page[WebhookEndpoint]:
    query = select(WebhookEndpoint).where(WebhookEndpoint.merchant_id == merchant_id)
    return await rows_page(
        session,
        query,
        WebhookEndpoint.created_at,
        WebhookEndpoint.id,
        cursor=cursor,
        limit=limit,
        oldest_first=True,
    )


async def get_endpoint(
    session: AsyncSession, merchant_id: uuid.UUID, endpoint_id: uuid.UUID, *, lock: bool = False
) -> WebhookEndpoint:
    """The merchant's endpoint; another merchant's is a 404 like one that does not exist."""
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.merchant_id == merchant_id
    )
    endpoint = await session.scalar(query.with_for_update() if lock else query)
    if endpoint is None:
        raise NotFound(NOT_FOUND)
    return endpoint


async def update_endpoint(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    url: str | None,
    events: list[str] | None,
    description: str | None,
    enabled: bool | None,
    allow_http: bool,
) -> WebhookEndpoint:
    """Change what was sent; enabling a disabled endpoint starts its failure count afresh."""
    endpoint = await get_endpoint(session, merchant_id, endpoint_id, lock=True)
    if url is not None:
        endpoint.url = check_url(url, allow_http=allow_http)
    if events is not None:
        endpoint.events = list(events)
    if description is not None:
        endpoint.description = description or None
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        if enabled:
            endpoint.consecutive_failures = 0
            endpoint.failing_since = None
            endpoint.disabled_at = None
            endpoint.disabled_reason = None
    endpoint.updated_at = utcnow()
    await session.flush()
    return endpoint


async def delete_endpoint(
    session: AsyncSession, merchant_id: uuid.UUID, endpoint_id: uuid.UUID
) -> None:
    """The endpoint and its delivery log (a job still queued for it finds nothing)."""
    endpoint = await get_endpoint(session, merchant_id, endpoint_id, lock=True)
    await session.delete(endpoint)
    await session.flush()


async def rotate_secret(
    session: AsyncSession, box: SecretBox, merchant_id: uuid.UUID, endpoint_id: uuid.UUID
) -> tuple[WebhookEndpoint, str]:
    """A new signing secret (shown once). For a day attempts carry two signatures, the new
    secret's and the old one's, so the receiver can switch over without missing a message."""
    endpoint = await get_endpoint(session, merchant_id, endpoint_id, lock=True)
    secret = signing.new_secret()
    now = utcnow()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
    endpoint.secret_encrypted = box.encrypt(secret)
    endpoint.updated_at = now
    await session.flush()
    return endpoint, secret


async def endpoint_for_delivery(
    session: AsyncSession, delivery: EndpointDelivery
) -> WebhookEndpoint | None:
    """The delivery's endpoint, row-locked: its failure count changes with each outcome."""
    endpoint: WebhookEndpoint | None = await session.scalar(
        select(WebhookEndpoint).where(WebhookEndpoint.id == delivery.endpoint_id).with_for_update()
    )
    return endpoint


async def disable_endpoint(
    session: AsyncSession, settings: Settings, endpoint: WebhookEndpoint, reason: str
) -> None:
    """Turn the endpoint off after repeated failure; tell the merchant once (a queue entry and an
    email); stop its pending deliveries (the merchant may retry them once it is fixed)."""
    if not endpoint.enabled:
        return
    now = utcnow()
    endpoint.enabled = False
    endpoint.disabled_at = now
    endpoint.disabled_reason = reason
    endpoint.updated_at = now
    await session.execute(
        update(EndpointDelivery)
        .where(
            EndpointDelivery.endpoint_id == endpoint.id,
            EndpointDelivery.status == DeliveryStatus.PENDING,
        )
        .values(
            status=DeliveryStatus.FAILED,
            claimed_at=None,
            next_attempt_at=None,
            last_error=func.coalesce(EndpointDelivery.last_error, "endpoint disabled"),
        ),
        execution_options={"synchronize_session": "fetch"},
    )
    message = f"Webhook endpoint {endpoint.url} was disabled: {reason}."
    open_case(
        session,
        endpoint.merchant_id,
        EXCEPTION_KIND,
        message,
        endpoint_id=str(endpoint.id),
        url=endpoint.url,
    )
    merchant = await session.get(Merchant, endpoint.merchant_id)
    if merchant is not None:
        await queue_email(
            session,
            merchant_id=merchant.id,
            # One email per disabling: the endpoint is disabled once until re-enabled.
            key=f"webhook-endpoint-disabled:{endpoint.id}:{now.isoformat()}",
            kind="webhook_endpoint_disabled",
            to=merchant.email,
            sender=settings.mail_from,
            template="webhook_endpoint_disabled",
            context={
                "shop": merchant.shop_domain,
                "url": endpoint.url,
                "endpoint_id": str(endpoint.id),
                "reason": reason,
                "failures": endpoint.consecutive_failures,
                "since": endpoint.failing_since.isoformat() if endpoint.failing_since else None,
            },
        )


def signing_secrets(box: SecretBox, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets an attempt is signed with: the current one, and the previous one during the
    overlap after a rotation."""
    secrets = [box.decrypt(endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted is not None and expires is not None and expires > now:
        secrets.append(box.decrypt(endpoint.previous_secret_encrypted))
    return secrets


def should_disable(endpoint: WebhookEndpoint, now: datetime) -> bool:
    """After a failed attempt: has the endpoint failed long enough to be turned off?"""
    if endpoint.consecutive_failures >= DISABLE_AFTER_FAILURES:
        return True
    return (
        endpoint.failing_since is not None
        and endpoint.failing_since <= now - DISABLE_AFTER
        and endpoint.consecutive_failures >= DISABLE_MIN_FAILURES
    )


# --------------------------------------------------------------------------- deliveries


def may_deliver(event: type[LifecycleEvent]) -> ColumnElement[bool]:
    """The event's merchant has an enabled endpoint that may want its type (the subscriber's
    reaction filter, evaluated in the INSERT of the reactions): most merchants have none, and
    their events then cost no reaction and no job. ``events`` is matched as JSON text: a listed
    name is ``"<type>"`` in it (names are validated identifiers; ``_`` matching any character
    only lets more through), and ``fan_out`` still checks ``wants``."""
    events = cast(WebhookEndpoint.events, String)
    return exists().where(
        WebhookEndpoint.merchant_id == event.merchant_id,
        WebhookEndpoint.enabled,
        events.like('%"*"%') | events.like(literal('%"') + event.type + literal('"%')),
    )


async def fan_out(session: AsyncSession, event: LifecycleEvent) -> list[uuid.UUID]:
    """One delivery per enabled endpoint of the event's merchant that wants its type; the ids of
    the new ones (a repeated handling of the event creates none)."""
    endpoints = [
        e
        for e in await session.scalars(
            select(WebhookEndpoint).where(
                WebhookEndpoint.merchant_id == event.merchant_id, WebhookEndpoint.enabled
            )
        )
        if e.wants(event.type)
    ]
    if not endpoints:
        return []
    message_id = f"evt_{event.id}"
    body = msgspec.json.encode(
        {
            "id": message_id,
            "type": event.type,
            "timestamp": event.created_at,
            "data": await event_data(session, event),
        }
    ).decode()
    now = utcnow()
    rows = [
        {
            "id": uuid7(),
            "merchant_id": event.merchant_id,
            "endpoint_id": endpoint.id,
            "event_id": event.id,
            "event_type": event.type,
            "message_id": message_id,
            "body": body,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "retry_until": now + RETRY_FOR,
            "created_at": now,
        }
        for endpoint in endpoints
    ]
    insert = insert_for(session)
    created = list(
        await session.scalars(
            insert(EndpointDelivery)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
            .returning(EndpointDelivery.id)
        )
    )
    from app.outbound.tasks import deliver  # a cycle: the task reads deliveries through here

    for delivery_id in created:
        await enqueue(session, deliver, delivery_id)
    return created


async def event_data(session: AsyncSession, event: LifecycleEvent) -> dict[str, Any]:
    """What the receiver gets in ``data``: the event's own fields and the order, purchase order
    and shipment it concerns as they are now (no customer contact details, no secrets)."""
    data: dict[str, Any] = dict(event.data)
    if event.order_id is not None:
        order = await session.get(Order, event.order_id)
        if order is not None:
            data["order"] = {
                "id": str(order.id),
                "name": order.name,
                "reference": order.external_ref,
                "shopify_order_id": (
                    str(order.shopify_order_id) if order.shopify_order_id is not None else None
                ),
                "source": order.source,
                "status": order.status,
                "currency": order.currency,
                "total_price": str(wire_amount(order.total_price, order.currency)),
                "placed_at": order.placed_at,
                "cancelled_at": order.cancelled_at,
            }
    po_id = _uuid(data.get("purchase_order_id"))
    if po_id is not None:
        po = await session.get(PurchaseOrder, po_id)
        if po is not None and po.merchant_id == event.merchant_id:
            data["purchase_order"] = {
                "id": str(po.id),
                "number": po.number,
                "status": po.status,
                "supplier_id": str(po.supplier_id),
                "supplier_reference": po.supplier_reference,
                "placed_at": po.placed_at,
            }
    shipment_id = _uuid(data.get("shipment_id"))
    if shipment_id is not None:
        shipment = await session.get(Shipment, shipment_id)
        if shipment is not None and shipment.merchant_id == event.merchant_id:
            data["shipment"] = {
                "id": str(shipment.id),
                "purchase_order_id": str(shipment.purchase_order_id),
                "carrier": shipment.carrier,
                "tracking_number": shipment.tracking_number,
                "tracking_url": shipment.tracking_url,
                "status": shipment.status,
                "shipped_at": shipment.shipped_at,
                "delivered_at": shipment.delivered_at,
                "estimated_delivery_at": shipment.estimated_delivery_at,
            }
    return data


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


async def load_delivery(session: AsyncSession, delivery_id: uuid.UUID) -> EndpointDelivery | None:
    """The delivery, row-locked so that its claim and its outcome take turns."""
    delivery: EndpointDelivery | None = await session.scalar(
        select(EndpointDelivery).where(EndpointDelivery.id == delivery_id).with_for_update()
    )
    return delivery


def log_attempt(
    session: AsyncSession,
    delivery: EndpointDelivery,
    *,
    at: datetime,
    status_code: int | None,
    duration_ms: int,
    excerpt: str | None,
    error: str | None,
) -> None:
    session.add(
        DeliveryAttempt(
            delivery_id=delivery.id,
            attempted_at=at,
            status_code=status_code,
            duration_ms=duration_ms,
            response_excerpt=excerpt,
            error=error,
        )
    )


async def list_deliveries(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> Page[tuple[EndpointDelivery, list[DeliveryAttempt]]]:
    """The endpoint's delivery log, newest first, each delivery with its attempts (newest
    first): two queries a page."""
    await get_endpoint(session, merchant_id, endpoint_id)
    page = await rows_page(
        session,
        select(EndpointDelivery).where(EndpointDelivery.endpoint_id == endpoint_id),
        EndpointDelivery.created_at,
        EndpointDelivery.id,
        cursor=cursor,
        limit=limit,
    )
    attempts: dict[uuid.UUID, list[DeliveryAttempt]] = {d.id: [] for d in page.items}
    if attempts:
        for attempt in await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(attempts))
            .order_by(DeliveryAttempt.attempted_at.desc(), DeliveryAttempt.id.desc())
        ):
            attempts[attempt.delivery_id].append(attempt)
    return page.map(lambda d: (d, attempts[d.id]))


async def retry_delivery(
    session: AsyncSession, merchant_id: uuid.UUID, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> tuple[EndpointDelivery, list[DeliveryAttempt]]:
    """Send a delivery again now (same id and body), with a fresh day of retries."""
    endpoint = await get_endpoint(session, merchant_id, endpoint_id)
    delivery = await load_delivery(session, delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint.id:
        raise NotFound("no delivery with this id for this endpoint")
    if not endpoint.enabled:
        raise Conflict("the endpoint is disabled: enable it (PATCH enabled=true) first")
    if delivery.status == DeliveryStatus.PENDING and delivery.claimed_at is not None:
        raise Conflict("the delivery is being sent right now")
    now = utcnow()
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = None
    delivery.claimed_at = None
    delivery.retry_until = now + RETRY_FOR
    from app.outbound.tasks import deliver

    await enqueue(session, deliver, delivery.id)
    await session.flush()
    attempts = list(
        await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery.id)
            .order_by(DeliveryAttempt.attempted_at.desc(), DeliveryAttempt.id.desc())
        )
    )
    return delivery, attempts


async def undelivered(
    session: AsyncSession, window: StaleWindow, lease: timedelta
) -> Sequence[uuid.UUID]:
    """Pending deliveries whose job was lost or whose sender died (lease over), unless they are
    backing off."""
    return await window.ids(
        session,
        select(EndpointDelivery.id).where(
            EndpointDelivery.status == DeliveryStatus.PENDING,
            EndpointDelivery.created_at < window.cutoff,
            (EndpointDelivery.claimed_at.is_(None))
            | (EndpointDelivery.claimed_at < window.now - lease),
            window.due(EndpointDelivery.next_attempt_at),
        ),
    )


def finished_before(before: datetime) -> Any:
    """Deliveries done with (delivered or given up) older than ``before``, attempts included."""
    return delete(EndpointDelivery).where(
        EndpointDelivery.status != DeliveryStatus.PENDING, EndpointDelivery.created_at < before
    )
