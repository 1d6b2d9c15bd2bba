"""Tracking polls: which shipments to ask their supplier about and when, applying what the
suppliers answer (set-based: a batch of 100 parcels is a fixed number of statements), and the
parcels and purchase orders that stopped moving (alerts, exceptions queue, the digest email).

Schedule: a shipment is first due when it is adopted (the first poll after it shipped). After
each poll it waits ``BASE_INTERVAL * 2**idle_polls`` (``idle_polls``: polls in a row with nothing
new), at most ``MAX_INTERVAL``; a parcel out for delivery, or expected today, is asked again
after ``SOON_INTERVAL`` at most. Delivered and returned parcels are not polled any more.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, exists, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import limits
from app.db import UTCDateTime, insert_for, utcnow, uuid7
from app.events.models import EventType
from app.events.service import Publication, publish, publish_many
from app.exceptions.service import open_case
from app.jobs.outbox import enqueue_many
from app.jobs.task import Task
from app.mail.service import queue_email
from app.merchants.models import Merchant
from app.merchants.settings import settings_of
from app.purchasing import service as purchasing
from app.purchasing.models import (
    POStatus,
    PurchaseOrder,
    PurchaseOrderLine,
    Shipment,
    TrackingEvent,
)
from app.settings import Settings
from app.suppliers.models import Supplier, SupplierProduct
from app.timeline.models import OrderEvent
from app.tracking.models import AlertKind, TrackingAlert, TrackingPoll
from connectors.base import TrackingRefDTO
from connectors.tracking import TrackingStatus, TrackingUpdateDTO

log = structlog.get_logger(__name__)

BASE_INTERVAL = timedelta(hours=1)
SOON_INTERVAL = timedelta(minutes=15)
MAX_INTERVAL = timedelta(hours=24)
#: A claimed shipment is left to its poll job this long; a lost job makes it due again after.
LEASE = timedelta(minutes=15)
#: After the supplier failed to answer (timeout, 5xx, rate limit wait too long).
RETRY_INTERVAL = timedelta(minutes=5)
FINAL = (TrackingStatus.DELIVERED, TrackingStatus.RETURNED)
DEFAULT_STALE_AFTER_DAYS = 7
#: A purchase order is late this long after its lead time with no shipment.
LATE_GRACE = timedelta(days=1)
DIGEST_KIND = "tracking_digest"


def next_delay(
    idle_polls: int, status: str | None, eta: datetime | None, now: datetime
) -> timedelta | None:
    """How long until the next poll; None when there is nothing more to ask."""
    if status in FINAL:
        return None
    delay: timedelta = min(BASE_INTERVAL * 2 ** min(idle_polls, 16), MAX_INTERVAL)
    due_soon = status == TrackingStatus.OUT_FOR_DELIVERY or (
        eta is not None and eta.date() <= now.date()
    )
    return min(delay, SOON_INTERVAL) if due_soon else delay


# ---------------------------------------------------------------------- the poll cycle
async def adopt_shipments(session: AsyncSession, now: datetime) -> int:
    """Give every open shipment with a tracking number that has no schedule yet one, due now
    (one INSERT ... SELECT)."""
    source = (
        select(
            Shipment.id,
            Shipment.merchant_id,
            PurchaseOrder.supplier_id,
            func.coalesce(Shipment.shipped_at, Shipment.created_at),
            literal(now, UTCDateTime()),
            literal(0),
        )
        .join(PurchaseOrder, PurchaseOrder.id == Shipment.purchase_order_id)
        .where(
            Shipment.tracking_number.is_not(None),
            Shipment.status.not_in(FINAL),
            ~exists().where(TrackingPoll.shipment_id == Shipment.id),
        )
    )
    result = await session.execute(
        insert(TrackingPoll)
        .from_select(
            ["shipment_id", "merchant_id", "supplier_id", "moved_at", "next_poll_at", "idle_polls"],
            source,
            include_defaults=False,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def suppliers_due(session: AsyncSession, now: datetime) -> Sequence[Supplier]:
    """Suppliers with at least one shipment due."""
    due = select(TrackingPoll.supplier_id).where(TrackingPoll.next_poll_at <= now).distinct()
    return (await session.scalars(select(Supplier).where(Supplier.id.in_(due)))).all()


async def postpone_supplier(session: AsyncSession, supplier_id: uuid.UUID, until: datetime) -> None:
    """A supplier that cannot be polled (inactive, no tracking endpoint): ask again later."""
    await session.execute(
        update(TrackingPoll)
        .where(TrackingPoll.supplier_id == supplier_id, TrackingPoll.next_poll_at <= utcnow())
        .values(next_poll_at=until)
    )


async def claim_due(
    session: AsyncSession, supplier_id: uuid.UUID, now: datetime, limit: int
) -> list[uuid.UUID]:
    """Lease up to ``limit`` due shipments of the supplier, most overdue first (one UPDATE ...
    RETURNING): the next cycles leave them to this one's jobs."""
    due = (
        select(TrackingPoll.shipment_id)
        .where(TrackingPoll.supplier_id == supplier_id, TrackingPoll.next_poll_at <= now)
        .order_by(TrackingPoll.next_poll_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    rows = await session.scalars(
        update(TrackingPoll)
        .where(TrackingPoll.shipment_id.in_(due.scalar_subquery()))
        .values(next_poll_at=now + LEASE)
        .returning(TrackingPoll.shipment_id)
        .execution_options(synchronize_session=False)
    )
    return sorted(rows.all())


async def enqueue_batches(
    session: AsyncSession, task: Task, supplier_id: uuid.UUID, ids: Sequence[uuid.UUID], size: int
) -> int:
    """One job of ``task(supplier_id, *ids)`` per ``size`` shipments, in one statement."""
    jobs = [[supplier_id, *ids[i : i + size]] for i in range(0, len(ids), size)]
    await enqueue_many(session, task, jobs)
    return len(jobs)


@dataclass(frozen=True)
class Parcel:
    shipment_id: uuid.UUID
    tracking_number: str
    ref: TrackingRefDTO


async def parcels_to_poll(
    session: AsyncSession, supplier_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> tuple[Supplier | None, list[Parcel]]:
    """The supplier and the batch's shipments still worth asking about."""
    supplier = await session.get(Supplier, supplier_id)
    rows = await session.execute(
        select(
            Shipment.id,
            Shipment.tracking_number,
            PurchaseOrder.number,
            PurchaseOrder.supplier_reference,
        )
        .join(PurchaseOrder, PurchaseOrder.id == Shipment.purchase_order_id)
        .join(TrackingPoll, TrackingPoll.shipment_id == Shipment.id)
        .where(
            Shipment.id.in_(ids),
            PurchaseOrder.supplier_id == supplier_id,
            Shipment.tracking_number.is_not(None),
            Shipment.status.not_in(FINAL),
            TrackingPoll.next_poll_at.is_not(None),
        )
        .order_by(Shipment.id)
    )
    return supplier, [
        Parcel(sid, str(number), TrackingRefDTO(po_number, reference))
        for sid, number, po_number, reference in rows.all()
    ]


async def retire(session: AsyncSession, ids: Iterable[uuid.UUID]) -> None:
    """Shipments a poll job found nothing to ask about (delivered or returned meanwhile, by a
    push): no more polls."""
    gone = list(ids)
    if gone:
        await session.execute(
            update(TrackingPoll)
            .where(TrackingPoll.shipment_id.in_(gone))
            .values(next_poll_at=None)
            .execution_options(synchronize_session=False)
        )


async def retry_later(
    session: AsyncSession, ids: Sequence[uuid.UUID], when: datetime, *, checked: bool = False
) -> None:
    """The supplier did not answer for these: due again at ``when`` (not a change, not idle)."""
    if not ids:
        return
    values: dict[str, Any] = {"next_poll_at": when}
    if checked:
        values["last_checked_at"] = utcnow()
    await session.execute(
        update(TrackingPoll)
        .where(TrackingPoll.shipment_id.in_(ids), TrackingPoll.next_poll_at.is_not(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class Applied:
    checked: int
    changed: int
    events: int


async def apply_updates(
    session: AsyncSession,
    ids: Sequence[uuid.UUID],
    updates: Iterable[TrackingUpdateDTO],
    now: datetime,
) -> Applied:
    """Record what the supplier answered for these shipments and schedule their next poll.

    The set-based twin of ``app.purchasing.service.add_tracking_event`` (same dedup on
    (shipment, status, occurred_at), same timeline entries, same closing of a delivered purchase
    order), for a whole batch at once: a fixed number of statements for any number of parcels
    (one per distinct idle count among the unchanged ones), plus a few per purchase order that
    becomes delivered. A parcel whose answer is the same as last time (``answer_digest``) is
    not compared event by event. Shipments the answer leaves out count as polled with
    nothing new."""
    by_number = {u.tracking_number: u for u in updates}
    rows = (
        await session.execute(
            select(
                Shipment.id,
                Shipment.tracking_number,
                Shipment.status,
                Shipment.delivered_at,
                PurchaseOrder.id,
                PurchaseOrder.number,
                PurchaseOrder.order_id,
                PurchaseOrder.merchant_id,
                PurchaseOrder.status,
                TrackingPoll.idle_polls,
                TrackingPoll.moved_at,
                TrackingPoll.estimated_delivery_at,
                TrackingPoll.answer_digest,
                Shipment.last_event_at,
                Shipment.estimated_delivery_at,
            )
            .join(PurchaseOrder, PurchaseOrder.id == Shipment.purchase_order_id)
            .join(TrackingPoll, TrackingPoll.shipment_id == Shipment.id)
            .where(Shipment.id.in_(ids), TrackingPoll.next_poll_at.is_not(None))
            .order_by(Shipment.id)
            # The shipments stay as read until this transaction writes them: an event the
            # supplier API records meanwhile waits, rather than being overwritten.
            .with_for_update(of=Shipment)
        )
    ).all()
    digests = {n: answer_digest(u) for n, u in by_number.items()}
    # Only a parcel whose answer differs from the last one can bring a new event.
    answered = [
        r for r in rows if r[1] in by_number and by_number[r[1]].events and digests[r[1]] != r[12]
    ]
    known: dict[uuid.UUID, dict[tuple[str, datetime], None]] = defaultdict(dict)
    newest: dict[uuid.UUID, datetime] = {}
    #: Statuses each shipment already had: only the first event of a status is published.
    statuses_seen: dict[uuid.UUID, set[str]] = defaultdict(set)
    if answered:
        for sid, status, occurred_at in await session.execute(
            select(
                TrackingEvent.shipment_id, TrackingEvent.status, TrackingEvent.occurred_at
            ).where(TrackingEvent.shipment_id.in_([r[0] for r in answered]))
        ):
            known[sid][(status, occurred_at)] = None
            statuses_seen[sid].add(status)
            if sid not in newest or occurred_at > newest[sid]:
                newest[sid] = occurred_at
    new_events: list[dict[str, Any]] = []
    publications: list[Publication] = []
    shipment_rows: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    poll_rows: list[dict[str, Any]] = []
    delivered_pos: dict[uuid.UUID, None] = {}
    changed = 0
    idle_groups: dict[tuple[int, datetime | None], list[uuid.UUID]] = defaultdict(list)
    for sid, number, status, delivered_at, po_id, po_number, order_id, merchant_id, po_status, \
            idle, moved_at, eta, last_digest, last_event_at, shipment_eta in rows:  # fmt: skip
        update_ = by_number.get(number or "")  # polled shipments have a number
        digest = digests.get(number or "", last_digest)
        if digest == last_digest:
            update_ = None  # the same answer as last time: nothing new
        fresh = []
        if update_ is not None:
            seen = known[sid]
            for ev in update_.events:
                if ev.status not in purchasing.TRACKING_STATUSES:
                    continue
                key = (ev.status, ev.occurred_at)
                if key not in seen:
                    seen[key] = None
                    fresh.append(ev)
        new_eta = update_.estimated_delivery_at if update_ is not None else eta
        if fresh or (new_eta is not None and new_eta != shipment_eta):
            # The same rules as add_tracking_event: an older event reported late is recorded
            # but never moves the status back, except a delivery, which always counts.
            if fresh:
                last = max(fresh, key=lambda e: e.occurred_at)
                if sid not in newest or last.occurred_at >= newest[sid]:
                    status = last.status
                    moved_at = max(moved_at, last.occurred_at)
                delivery = next((e for e in fresh if e.status == TrackingStatus.DELIVERED), None)
                if delivery is not None:
                    status = TrackingStatus.DELIVERED
                    if delivered_at is None:
                        delivered_at = delivery.occurred_at
                    if po_status == POStatus.SHIPPED:
                        delivered_pos[po_id] = None
                newest[sid] = max(newest.get(sid, last.occurred_at), last.occurred_at)
                last_event_at = newest[sid]
            shipment_rows.append(
                {
                    "id": sid,
                    "status": status,
                    "delivered_at": delivered_at,
                    "last_event_at": last_event_at,
                    "estimated_delivery_at": new_eta if new_eta is not None else shipment_eta,
                }
            )
            for ev in fresh:
                new_events.append(
                    {
                        "id": uuid7(),
                        "shipment_id": sid,
                        "status": ev.status,
                        "occurred_at": ev.occurred_at,
                        "description": ev.description,
                        "location": ev.location,
                        "created_at": now,
                    }
                )
                if ev.status not in statuses_seen[sid]:  # the first of its status: published
                    statuses_seen[sid].add(ev.status)
                    publications.append(
                        Publication(
                            merchant_id=merchant_id,
                            order_id=order_id,
                            type=f"shipment.{ev.status}",
                            key=f"shipment.{ev.status}:{sid}",
                            data={
                                "purchase_order_id": str(po_id),
                                "shipment_id": str(sid),
                                "status": ev.status,
                                "occurred_at": ev.occurred_at.isoformat(),
                                "description": ev.description,
                                "location": ev.location,
                                "source": "poll",
                            },
                        )
                    )
                timeline.append(
                    {
                        "id": uuid7(),
                        "order_id": order_id,
                        "merchant_id": merchant_id,
                        "type": f"shipment.{ev.status}",
                        "message": f"{po_number} {number}: {ev.status}"
                        + (f" ({ev.description})" if ev.description else ""),
                        "data": {
                            "shipment_id": str(sid),
                            "occurred_at": ev.occurred_at.isoformat(),
                            "source": "poll",
                        },
                        "created_at": now,
                    }
                )
        is_change = bool(fresh) or new_eta != eta
        changed += is_change
        idle = 0 if is_change else idle + 1
        delay = next_delay(idle, status, new_eta, now)
        next_at = None if delay is None else now + delay
        if not is_change and digest == last_digest:
            idle_groups[(idle, next_at)].append(sid)  # the common case: one UPDATE per group
            continue
        poll_rows.append(
            {
                "shipment_id": sid,
                "next_poll_at": next_at,
                "last_checked_at": now,
                "last_change_at": now if is_change else None,
                "idle_polls": idle,
                "moved_at": moved_at,
                "estimated_delivery_at": new_eta,
                "answer_digest": digest,
            }
        )
    if shipment_rows:
        await session.execute(update(Shipment), shipment_rows)
    if new_events:
        await session.execute(
            insert_for(session)(TrackingEvent).on_conflict_do_nothing(), new_events
        )
        await session.execute(insert(OrderEvent), timeline)
        await publish_many(session, publications)
    if poll_rows:
        # last_change_at keeps its value on an idle poll: rows are split by shape.
        for with_change in (True, False):
            part = [r for r in poll_rows if (r["last_change_at"] is not None) is with_change]
            if not with_change:
                part = [{k: v for k, v in r.items() if k != "last_change_at"} for r in part]
            if part:
                await session.execute(update(TrackingPoll), part)
    for (idle, next_at), group in idle_groups.items():
        await session.execute(
            update(TrackingPoll)
            .where(TrackingPoll.shipment_id.in_(group))
            .values(next_poll_at=next_at, last_checked_at=now, idle_polls=idle)
            .execution_options(synchronize_session=False)
        )
    if delivered_pos:
        await _close_delivered(session, list(delivered_pos))
    return Applied(checked=len(rows), changed=changed, events=len(new_events))


def answer_digest(update_: TrackingUpdateDTO) -> str:
    """What of a supplier's answer we record (status, estimate, events), as a short digest."""
    parts = [str(update_.status), str(update_.estimated_delivery_at)]
    parts += [f"{e.status}@{e.occurred_at.isoformat()}" for e in update_.events]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


async def _close_delivered(session: AsyncSession, po_ids: list[uuid.UUID]) -> None:
    """Purchase orders every shipment of which is now delivered become delivered."""
    undelivered = set(
        (
            await session.scalars(
                select(Shipment.purchase_order_id).where(
                    Shipment.purchase_order_id.in_(po_ids), Shipment.delivered_at.is_(None)
                )
            )
        ).all()
    )
    for po_id in po_ids:
        if po_id in undelivered:
            continue
        po = await purchasing.load(session, po_id, lock=True)
        if po is not None and po.status == POStatus.SHIPPED:
            await purchasing.transition(session, po, POStatus.DELIVERED, "every shipment delivered")


# ---------------------------------------------------------------------- stale and late
def stale_after_days(merchant: Merchant) -> int:
    """The merchant's ``tracking.stale_after_days``."""
    return settings_of(merchant).tracking.stale_after_days


@dataclass(frozen=True)
class NewAlert:
    id: uuid.UUID
    kind: str
    merchant_id: uuid.UUID
    order_id: uuid.UUID | None
    purchase_order_id: uuid.UUID | None
    shipment_id: uuid.UUID | None
    summary: str


async def _insert_alerts(session: AsyncSession, rows: list[dict[str, Any]]) -> list[NewAlert]:
    """Insert the alerts not there yet (unique key); return the new ones."""
    if not rows:
        return []
    result = await session.execute(
        insert_for(session)(TrackingAlert)
        .on_conflict_do_nothing(index_elements=["merchant_id", "key"])
        .returning(TrackingAlert.id),
        rows,
    )
    new = set(result.scalars().all())
    return [
        NewAlert(
            r["id"],
            r["kind"],
            r["merchant_id"],
            r["order_id"],
            r["purchase_order_id"],
            r["shipment_id"],
            r["summary"],
        )
        for r in rows
        if r["id"] in new
    ]


async def open_stale_alerts(session: AsyncSession, now: datetime) -> list[NewAlert]:
    """Open parcels that have not moved for the merchant's ``stale_after_days``: one alert and
    one exceptions-queue entry per stall (a parcel that moves and stalls again is new)."""
    oldest = now - timedelta(days=1)
    merchant_ids = (
        await session.scalars(
            select(TrackingPoll.merchant_id)
            .where(TrackingPoll.next_poll_at.is_not(None), TrackingPoll.moved_at < oldest)
            .distinct()
        )
    ).all()
    if not merchant_ids:
        return []
    by_days: dict[int, list[uuid.UUID]] = defaultdict(list)
    for m in (await session.scalars(select(Merchant).where(Merchant.id.in_(merchant_ids)))).all():
        by_days[stale_after_days(m)].append(m.id)
    rows: list[dict[str, Any]] = []
    for days, merchants in sorted(by_days.items()):
        found = await session.execute(
            select(
                TrackingPoll.shipment_id,
                TrackingPoll.merchant_id,
                func.coalesce(Shipment.last_event_at, TrackingPoll.moved_at),
                Shipment.tracking_number,
                Shipment.status,
                PurchaseOrder.id,
                PurchaseOrder.number,
                PurchaseOrder.order_id,
            )
            .join(Shipment, Shipment.id == TrackingPoll.shipment_id)
            .join(PurchaseOrder, PurchaseOrder.id == Shipment.purchase_order_id)
            .where(
                TrackingPoll.merchant_id.in_(merchants),
                TrackingPoll.next_poll_at.is_not(None),
                TrackingPoll.moved_at < now - timedelta(days=days),
                # Pushed events (supplier API, aggregator) move a parcel too; an arrived or
                # returned one is never late.
                or_(
                    Shipment.last_event_at.is_(None),
                    Shipment.last_event_at < now - timedelta(days=days),
                ),
                Shipment.status.not_in(FINAL),
            )
            .order_by(TrackingPoll.moved_at)
            .limit(limits.MAX_LIST)
        )
        for sid, mid, moved, number, status, po_id, po_number, order_id in found.all():
            rows.append(
                {
                    "id": uuid7(),
                    "merchant_id": mid,
                    "kind": AlertKind.STALE_SHIPMENT,
                    "key": f"stale:{sid}:{moved.isoformat()}",
                    "order_id": order_id,
                    "purchase_order_id": po_id,
                    "shipment_id": sid,
                    "summary": f"parcel {number} of {po_number} ({status}) has not moved "
                    f"since {moved:%Y-%m-%d %H:%M} UTC ({(now - moved).days} days)",
                    "created_at": now,
                }
            )
    new = await _insert_alerts(session, rows)
    for alert in new:
        case = open_case(
            session,
            alert.merchant_id,
            AlertKind.STALE_SHIPMENT,
            alert.summary,
            shipment_id=str(alert.shipment_id),
            purchase_order_id=str(alert.purchase_order_id),
        )
        case.order_id = alert.order_id
        session.add(
            OrderEvent(
                order_id=alert.order_id,
                merchant_id=alert.merchant_id,
                type="shipment.delayed",
                message=alert.summary,
                data={"shipment_id": str(alert.shipment_id)},
            )
        )
        await publish(
            session,
            None,
            EventType.SHIPMENT_DELAYED,
            key=f"shipment.delayed:{alert.shipment_id}",
            merchant_id=alert.merchant_id,
            order_id=alert.order_id,
            shipment_id=str(alert.shipment_id),
            purchase_order_id=str(alert.purchase_order_id),
            reason=alert.summary,
        )
    await session.flush()
    return new


async def open_late_alerts(session: AsyncSession, now: datetime) -> list[NewAlert]:
    """Purchase orders placed or accepted with no shipment past their lead time (the longest
    ``lead_time_days`` of their lines at the supplier) plus ``LATE_GRACE``: one alert and one
    exceptions-queue entry each. One query per distinct lead time in use (a handful)."""
    lead = func.coalesce(func.max(SupplierProduct.lead_time_days), 0)
    base = (
        select(
            PurchaseOrder.id,
            PurchaseOrder.merchant_id,
            PurchaseOrder.order_id,
            PurchaseOrder.number,
            PurchaseOrder.placed_at,
            Supplier.name,
        )
        .join(Supplier, Supplier.id == PurchaseOrder.supplier_id)
        .join(PurchaseOrderLine, PurchaseOrderLine.purchase_order_id == PurchaseOrder.id)
        .outerjoin(
            SupplierProduct,
            and_(
                SupplierProduct.supplier_id == PurchaseOrder.supplier_id,
                SupplierProduct.sku == PurchaseOrderLine.sku,
            ),
        )
        .where(
            PurchaseOrder.status.in_([POStatus.PLACED, POStatus.ACCEPTED]),
            PurchaseOrder.placed_at.is_not(None),
            PurchaseOrder.placed_at < now - LATE_GRACE,
            ~exists().where(Shipment.purchase_order_id == PurchaseOrder.id),
            ~exists().where(
                TrackingAlert.merchant_id == PurchaseOrder.merchant_id,
                TrackingAlert.purchase_order_id == PurchaseOrder.id,
                TrackingAlert.kind == AlertKind.LATE_PURCHASE_ORDER,
            ),
        )
        .group_by(
            PurchaseOrder.id,
            PurchaseOrder.merchant_id,
            PurchaseOrder.order_id,
            PurchaseOrder.number,
            PurchaseOrder.placed_at,
            Supplier.name,
        )
    )
    leads = (await session.scalars(select(SupplierProduct.lead_time_days).distinct())).all() or [0]
    rows: list[dict[str, Any]] = []
    for days in sorted({0, *leads}):
        found = await session.execute(
            base.having(
                lead == days, PurchaseOrder.placed_at < now - LATE_GRACE - timedelta(days=days)
            ).limit(limits.MAX_LIST)
        )
        for po_id, mid, order_id, number, placed_at, supplier_name in found.all():
            if placed_at is None:  # not reached: the query asks placed_at < a time
                continue
            rows.append(
                {
                    "id": uuid7(),
                    "merchant_id": mid,
                    "kind": AlertKind.LATE_PURCHASE_ORDER,
                    "key": f"late:{po_id}",
                    "order_id": order_id,
                    "purchase_order_id": po_id,
                    "shipment_id": None,
                    "summary": f"purchase order {number} at {supplier_name}, placed "
                    f"{placed_at:%Y-%m-%d} ({(now - placed_at).days} days ago, lead time "
                    f"{days} days), has no shipment",
                    "created_at": now,
                }
            )
    new = await _insert_alerts(session, rows)
    for alert in new:
        case = open_case(
            session,
            alert.merchant_id,
            AlertKind.LATE_PURCHASE_ORDER,
            alert.summary,
            purchase_order_id=str(alert.purchase_order_id),
        )
        case.order_id = alert.order_id
    await session.flush()
    return new


def digest_period(now: datetime) -> str:
    """The digest's period (an hour): at most one digest email per merchant in it."""
    return now.strftime("%Y-%m-%dT%H")


async def queue_digests(session: AsyncSession, settings: Settings, now: datetime) -> int:
    """One email per merchant listing its alerts not yet sent (key: merchant + period); the
    alerts it lists are marked with it. Returns the emails queued."""
    alerts = (
        await session.scalars(
            select(TrackingAlert)
            .where(TrackingAlert.digested_at.is_(None))
            .order_by(TrackingAlert.merchant_id, TrackingAlert.kind, TrackingAlert.created_at)
            .limit(limits.MAX_LIST * 10)
        )
    ).all()
    by_merchant: dict[uuid.UUID, list[TrackingAlert]] = defaultdict(list)
    for alert in alerts:
        by_merchant[alert.merchant_id].append(alert)
    if not by_merchant:
        return 0
    merchants: Mapping[uuid.UUID, Merchant] = {
        m.id: m
        for m in (
            await session.scalars(select(Merchant).where(Merchant.id.in_(list(by_merchant))))
        ).all()
    }
    period = digest_period(now)
    queued = 0
    for merchant_id, items in by_merchant.items():
        merchant = merchants.get(merchant_id)
        if merchant is None:
            continue
        recipients = settings_of(merchant).notifications.alert_recipients or (
            (merchant.email,) if merchant.email else ()
        )
        stale = [a.summary for a in items if a.kind == AlertKind.STALE_SHIPMENT]
        late = [a.summary for a in items if a.kind == AlertKind.LATE_PURCHASE_ORDER]
        first: uuid.UUID | None = None
        for i, address in enumerate(recipients):
            email_id = await queue_email(
                session,
                merchant_id=merchant_id,
                # The first recipient's key is the period's: one digest a period, whoever reads it.
                key=f"tracking-digest:{period}" + (f":{i}" if i else ""),
                kind=DIGEST_KIND,
                to=address,
                sender=settings.mail_from,
                sender_name="dropship",
                template=DIGEST_KIND,
                context={
                    "shop": merchant.shop_domain,
                    "stale": stale,
                    "late": late,
                    "count": len(items),
                    "exceptions_url": f"{settings.public_url.rstrip('/')}/api/v1/exceptions",
                },
            )
            if i == 0 and email_id is None:
                break  # this period's digest went out already: these wait for the next one
            first = first or email_id
        if recipients and first is None:
            continue
        # Listed (or nobody to tell: the exceptions queue has them): not listed again.
        await session.execute(
            update(TrackingAlert)
            .where(TrackingAlert.id.in_([a.id for a in items]))
            .values(digested_at=now, email_id=first)
            .execution_options(synchronize_session=False)
        )
        queued += first is not None
    return queued
