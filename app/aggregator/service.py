"""Shipments followed through the carrier-tracking aggregator (AfterShip): which shipments,
their registration, the pushes we store, and how an update becomes tracking events.

Which shipments: with ``DROPSHIP_AFTERSHIP_API_KEY`` set, every shipment that has a tracking
number and whose supplier's connector reports no carrier events of its own
(``Connector.reports_tracking`` is False: today the portal and rest_json connectors). Nothing to
configure per supplier or merchant.

Events go through ``app.purchasing.service.add_tracking_event``, which stores each
(shipment, status, time) once and never moves a shipment backwards, so a push and a poll that
carry the same scans, a redelivered push or a replay of older ones change nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import structlog
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.aggregator.models import RegistrationState, TrackingRegistration
from app.db import insert_for, utcnow, uuid7
from app.jobs.outbox import enqueue
from app.jobs.task import StaleWindow
from app.purchasing.models import PurchaseOrder, Shipment
from app.purchasing.service import add_tracking_event
from app.settings import Settings
from app.suppliers.models import Supplier
from app.webhooks.models import WebhookDelivery
from connectors.aftership import SIGNATURE_HEADER, AfterShipProvider
from connectors.registry import CONNECTORS
from connectors.tracking import TrackingProvider, TrackingStatus, TrackingUpdateDTO

log = structlog.get_logger(__name__)

PROVIDER = AfterShipProvider.name
#: No push for this long: the fallback poll asks. AfterShip pushes every checkpoint, so a
#: registration this quiet is either idle at the carrier or its pushes are being lost.
POLL_AFTER = timedelta(hours=6)
#: How long a worker owns a registration it is calling the provider about; past it (the worker
#: died), the sweeper or the next poll takes it again.
LEASE = timedelta(minutes=2)
#: Registrations polled by one run of the periodic poll.
POLL_BATCH = 50


def provider(settings: Settings, http: httpx.AsyncClient | None) -> TrackingProvider:
    """The configured provider; ``http`` None for one that only checks pushes."""
    return AfterShipProvider(
        http,
        api_key=settings.aftership_api_key,
        webhook_secret=settings.aftership_webhook_secret,
        api_url=settings.aftership_api_url,
    )


# -- registration -------------------------------------------------------------------------------


async def follow_shipment(
    session: AsyncSession, settings: Settings, shipment_id: uuid.UUID
) -> uuid.UUID | None:
    """On a new shipment: follow it through the aggregator if it needs to be, once. Returns the
    new registration's id (its ``aggregator.register`` job is in the outbox), or None."""
    if not settings.aftership_api_key:
        return None
    row = (
        await session.execute(
            select(Shipment.merchant_id, Shipment.tracking_number, Supplier.connector)
            .join(PurchaseOrder, PurchaseOrder.id == Shipment.purchase_order_id)
            .join(Supplier, Supplier.id == PurchaseOrder.supplier_id)
            .where(Shipment.id == shipment_id)
        )
    ).one_or_none()
    if row is None or not row.tracking_number:
        return None
    kind = CONNECTORS.get(row.connector)
    if kind is not None and kind.reports_tracking:
        return None
    now = utcnow()
    result = await session.execute(
        insert_for(session)(TrackingRegistration)
        .values(
            id=uuid7(),
            merchant_id=row.merchant_id,
            shipment_id=shipment_id,
            provider=PROVIDER,
            tracking_number=row.tracking_number,
            state=RegistrationState.PENDING,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["shipment_id"])
        .returning(TrackingRegistration.id)
    )
    registration_id: uuid.UUID | None = result.scalar_one_or_none()
    if registration_id is None:
        return None  # followed already (a repeated event)
    # Imported here: app.aggregator.tasks works through this module (a cycle).
    from app.aggregator.tasks import register

    await enqueue(session, register, registration_id)
    return registration_id


@dataclass(frozen=True)
class Claim:
    """What a worker needs to call the provider about one registration."""

    id: uuid.UUID
    tracking_number: str
    slug: str | None
    order_ref: str | None
    provider_ref: str | None
    attempts: int


async def claim_registration(session: AsyncSession, registration_id: uuid.UUID) -> Claim | None:
    """Take a pending registration for ``LEASE`` and count the attempt; None if it is not
    pending, or another run holds it, or its retry is not due yet (so a duplicate job never
    calls the provider twice at once)."""
    reg = await session.scalar(
        select(TrackingRegistration)
        .where(TrackingRegistration.id == registration_id)
        .with_for_update()
    )
    now = utcnow()
    if reg is None or reg.state != RegistrationState.PENDING:
        return None
    if reg.next_poll_at is not None and reg.next_poll_at > now:
        return None
    reg.attempts += 1
    reg.next_poll_at = now + LEASE
    po_number = await session.scalar(
        select(PurchaseOrder.number)
        .join(Shipment, Shipment.purchase_order_id == PurchaseOrder.id)
        .where(Shipment.id == reg.shipment_id)
    )
    await session.flush()
    return Claim(reg.id, reg.tracking_number, reg.slug, po_number, reg.provider_ref, reg.attempts)


async def registered(session: AsyncSession, registration_id: uuid.UUID, ref: str) -> None:
    """The provider has it: pushes will come; the poll asks if they do not."""
    await session.execute(
        update(TrackingRegistration)
        .where(
            TrackingRegistration.id == registration_id,
            TrackingRegistration.state == RegistrationState.PENDING,
        )
        .values(
            state=RegistrationState.REGISTERED,
            provider_ref=ref,
            last_error=None,
            next_poll_at=utcnow() + POLL_AFTER,
            updated_at=utcnow(),
        )
    )


async def retry_later(
    session: AsyncSession,
    registration_id: uuid.UUID,
    error: str,
    at: datetime,
    *,
    not_an_attempt: bool = False,
) -> None:
    """Call the provider again at ``at``; ``not_an_attempt``: the call never went out (no
    rate-limit slot), so it does not count."""
    await session.execute(
        update(TrackingRegistration)
        .where(TrackingRegistration.id == registration_id)
        .values(
            last_error=error[:2000],
            next_poll_at=at,
            updated_at=utcnow(),
            attempts=TrackingRegistration.attempts - (1 if not_an_attempt else 0),
        )
    )


async def give_up(session: AsyncSession, registration_id: uuid.UUID, error: str) -> None:
    """The provider refused for good (or kept failing): the supplier API stays the only source."""
    await session.execute(
        update(TrackingRegistration)
        .where(TrackingRegistration.id == registration_id)
        .values(
            state=RegistrationState.FAILED,
            last_error=error[:2000],
            next_poll_at=None,
            updated_at=utcnow(),
        )
    )


async def unregistered(session: AsyncSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Registrations still to send (the ``aggregator.register`` task's stale work): a lost job,
    a worker that died holding the lease, a retry whose time has come."""
    return await window.ids(
        session,
        select(TrackingRegistration.id).where(
            TrackingRegistration.state == RegistrationState.PENDING,
            TrackingRegistration.updated_at < window.cutoff,
            window.due(TrackingRegistration.next_poll_at),
        ),
    )


# -- pushes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushReceipt:
    """What the receiver answers: ``status`` is the HTTP status, ``outcome`` the body's
    ``status`` (accepted, duplicate) or the error's detail."""

    status: int
    outcome: str


async def receive_push(
    session: AsyncSession, settings: Settings, headers: Mapping[str, str], raw: bytes
) -> PushReceipt:
    """Verify an AfterShip push (``headers`` lower-case) and store it; nothing is applied here
    (``aggregator.apply_push`` does, in a worker), so the answer is quick."""
    if not settings.aftership_webhook_secret:
        return PushReceipt(
            503, "AfterShip pushes are not configured: set DROPSHIP_AFTERSHIP_WEBHOOK_SECRET"
        )
    receiver = provider(settings, None)
    if not receiver.verify_push(headers, raw):
        return PushReceipt(401, f"{SIGNATURE_HEADER} missing or not matching the body")
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        return PushReceipt(400, "body: not valid UTF-8")
    push_id = receiver.push_id(raw)
    if push_id is None:
        return PushReceipt(400, "body: a JSON object with an event_id")
    event = json.loads(body).get("event")
    stored = await store_push(session, push_id, event if isinstance(event, str) else "", body)
    return PushReceipt(200, "accepted" if stored else "duplicate")


async def store_push(session: AsyncSession, push_id: str, event: str, body: str) -> bool:
    """Keep a verified push in the webhook inbox with its ``aggregator.apply_push`` job; False
    for a redelivery (same event id), which changes nothing."""
    delivery_id = uuid7()
    result = await session.execute(
        insert_for(session)(WebhookDelivery)
        .values(
            id=delivery_id,
            source=PROVIDER,
            merchant_id=None,  # known once the tracking is matched to its registrations
            topic=event[:128] or "unknown",
            webhook_id=push_id,
            event_id=push_id,
            payload=body,
            received_at=utcnow(),
            failures=0,
        )
        .on_conflict_do_nothing()
        .returning(WebhookDelivery.id)
    )
    if result.scalar_one_or_none() is None:
        return False
    from app.aggregator.tasks import apply_push  # a cycle, see follow_shipment

    await enqueue(session, apply_push, delivery_id)
    return True


async def unapplied_pushes(session: AsyncSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Pushes stored but not applied (their job was lost): the ``aggregator.apply_push``
    task's stale work."""
    from app.webhooks.tasks import MAX_FAILURES

    return await window.ids(
        session,
        select(WebhookDelivery.id).where(
            WebhookDelivery.source == PROVIDER,
            WebhookDelivery.processed_at.is_(None),
            WebhookDelivery.received_at < window.cutoff,
            WebhookDelivery.failures < MAX_FAILURES,
        ),
    )


async def load_push(session: AsyncSession, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    """A stored push of ours, row-locked so two runs of its job take turns."""
    delivery: WebhookDelivery | None = await session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.source == PROVIDER)
        .with_for_update()
    )
    return delivery


# -- applying updates ---------------------------------------------------------------------------


async def apply_update(session: AsyncSession, update_: TrackingUpdateDTO) -> str:
    """Record a provider's update on every shipment registered for its tracking; the outcome
    in words. A tracking nobody registered (a number added by hand in the AfterShip account,
    a registration deleted with its merchant) is ignored."""
    ref, number = update_.provider_ref, update_.tracking_number
    match = and_(
        TrackingRegistration.provider_ref.is_(None), TrackingRegistration.tracking_number == number
    )
    regs = (
        await session.scalars(
            select(TrackingRegistration)
            .where(
                TrackingRegistration.provider == PROVIDER,
                or_(TrackingRegistration.provider_ref == ref, match) if ref else match,
            )
            .order_by(TrackingRegistration.id)
            .with_for_update()
        )
    ).all()
    if not regs:
        log.info("aggregator.unknown_tracking", tracking_number=number, provider_ref=ref)
        return f"ignored: no shipment follows {number}"
    added = 0
    for reg in regs:
        added += await _apply_to(session, reg, update_)
    return f"{added} event(s) on {len(regs)} shipment(s)"


async def _apply_to(
    session: AsyncSession, reg: TrackingRegistration, update_: TrackingUpdateDTO
) -> int:
    shipment = await session.scalar(
        select(Shipment).where(
            Shipment.id == reg.shipment_id, Shipment.merchant_id == reg.merchant_id
        )
    )
    now = utcnow()
    reg.last_update_at = now
    reg.updated_at = now
    reg.slug = update_.carrier_slug or reg.slug
    reg.provider_ref = reg.provider_ref or update_.provider_ref
    if shipment is None:
        return 0
    added = 0
    for event in update_.events:
        if await add_tracking_event(
            session,
            shipment,
            event.status,
            event.occurred_at,
            event.description,
            location=event.location,
        ):
            added += 1
    if update_.estimated_delivery_at is not None:
        shipment.estimated_delivery_at = update_.estimated_delivery_at
    if update_.status in TrackingStatus.FINAL:
        reg.state = RegistrationState.DONE
        reg.next_poll_at = None
    elif reg.state == RegistrationState.REGISTERED:
        reg.next_poll_at = now + POLL_AFTER
    return added


async def claim_due_polls(session: AsyncSession, now: datetime, limit: int) -> list[Claim]:
    """Registered trackings nothing came for since ``POLL_AFTER`` (their ``next_poll_at`` is
    due), taken for ``LEASE`` so an overlapping run skips them."""
    regs = (
        await session.scalars(
            select(TrackingRegistration)
            .where(
                TrackingRegistration.state == RegistrationState.REGISTERED,
                TrackingRegistration.provider_ref.is_not(None),
                TrackingRegistration.next_poll_at <= now,
            )
            .order_by(TrackingRegistration.next_poll_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for reg in regs:
        reg.next_poll_at = now + LEASE
        reg.last_polled_at = now
    await session.flush()
    return [Claim(r.id, r.tracking_number, r.slug, None, r.provider_ref, r.attempts) for r in regs]


async def apply_poll(
    session: AsyncSession, registration_id: uuid.UUID, update_: TrackingUpdateDTO
) -> int:
    """A poll's answer for one registration."""
    reg = await session.scalar(
        select(TrackingRegistration)
        .where(TrackingRegistration.id == registration_id)
        .with_for_update()
    )
    if reg is None or reg.state != RegistrationState.REGISTERED:
        return 0
    reg.last_error = None
    return await _apply_to(session, reg, update_)


async def registration_of_shipment(
    session: AsyncSession, shipment_id: uuid.UUID
) -> TrackingRegistration | None:
    reg: TrackingRegistration | None = await session.scalar(
        select(TrackingRegistration).where(TrackingRegistration.shipment_id == shipment_id)
    )
    return reg
