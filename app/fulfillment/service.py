"""Shipments to Shopify fulfillments: the rules and every query of the sync.

A shipment becomes one ``shopify_fulfillments`` row when it ships. The ``fulfillment.create``
task claims the row (``creating``, committed before any call), reads the order's fulfillment
orders, takes the shipped quantities from their lines (matched on the Shopify line item id,
never on SKU), and creates one fulfillment per Shopify location with the tracking and only the
shipped lines. A row found ``creating`` again means a call may have reached Shopify without
us learning the answer: the order's fulfillments are read first and one carrying our tracking
number is adopted instead of created again (Shopify takes no idempotency key here; with the
fulfillment orders' ``remainingQuantity`` this keeps it at one fulfillment per shipment).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, or_, select

from app.carriers import best_match
from app.db import DbSession, insert_for, utcnow, uuid7
from app.exceptions.service import open_exception
from app.fulfillment.models import (
    ShopifyFulfillment,
    ShopifyFulfillmentEvent,
    ShopifySyncStop,
    SyncState,
)
from app.jobs.backoff import EARLY
from app.jobs.task import StaleWindow
from app.merchants.models import Merchant
from app.merchants.service import shopify_token
from app.merchants.settings import ShopifySettings, settings_of
from app.orders.models import Order, OrderLine
from app.purchasing.models import PurchaseOrder, PurchaseOrderLine, Shipment, ShipmentLine
from app.security import SecretBox
from app.timeline.service import record
from connectors.shopify_admin import FulfillmentOrder, gid

#: Nobody else calls Shopify for a shipment while its claim is younger than this (longer than a
#: call and its in-helper retries may take).
LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 10
#: Fulfillment orders we may fulfil ourselves.
FULFILLABLE = ("OPEN", "IN_PROGRESS")
#: Shopify fulfillments that no longer count (cancelled or failed ones can be created again).
DEAD_FULFILLMENTS = ("CANCELLED", "ERROR", "FAILURE")

#: Our tracking status -> Shopify's ``FulfillmentEventStatus`` (2025-01 has no RETURNED).
EVENT_STATUS = {
    "info_received": "CONFIRMED",
    "in_transit": "IN_TRANSIT",
    "out_for_delivery": "OUT_FOR_DELIVERY",
    "delivered": "DELIVERED",
    "exception": "FAILURE",
    "returned": "FAILURE",
}
EVENT_MESSAGE = {"returned": "Returned to sender", "exception": "Delivery exception"}


def tracking_company(shipment: Shipment) -> str | None:
    """The carrier's name as Shopify spells it ("ups" from a supplier is Shopify's "UPS"),
    from the number and the supplier's word for it; else the supplier's text (Shopify shows an
    unknown company with the tracking URL)."""
    if shipment.tracking_number:
        match = best_match(shipment.tracking_number, shipment.carrier)
        if match is not None and match.shopify_company:
            return match.shopify_company
    return shipment.carrier


def shopify_prefs(merchant: Merchant) -> ShopifySettings:
    """The merchant's ``shopify`` settings (sync on, Shopify's own email off by default: we
    send ours)."""
    return settings_of(merchant).shopify


# --- Rows -------------------------------------------------------------------------------------


async def track_shipment(session: DbSession, shipment_id: uuid.UUID) -> bool:
    """The shipment's sync row, once (a repeated event is a no-op); True if written now."""
    found = (
        await session.execute(
            select(Shipment.merchant_id, PurchaseOrder.order_id)
            .join(PurchaseOrder, PurchaseOrder.id == Shipment.purchase_order_id)
            .where(Shipment.id == shipment_id)
        )
    ).first()
    if found is None:
        return False
    now = utcnow()
    result = await session.execute(
        insert_for(session)(ShopifyFulfillment)
        .values(
            id=uuid7(),
            shipment_id=shipment_id,
            merchant_id=found.merchant_id,
            order_id=found.order_id,
            state=SyncState.PENDING,
            fulfillment_ids=[],
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["shipment_id"])
    )
    return bool(getattr(result, "rowcount", 0))


async def queue_event(
    session: DbSession, shipment_id: uuid.UUID, status: str, occurred_at: datetime | None
) -> uuid.UUID | None:
    """A tracking status to push to the shipment's fulfillment, once per (shipment, status):
    the new row's id, or None (known already, or nothing to push)."""
    if status not in EVENT_STATUS:
        return None
    merchant_id = await session.scalar(
        select(Shipment.merchant_id).where(Shipment.id == shipment_id)
    )
    if merchant_id is None:
        return None
    now = utcnow()
    event_id = uuid7()
    result = await session.execute(
        insert_for(session)(ShopifyFulfillmentEvent)
        .values(
            id=event_id,
            shipment_id=shipment_id,
            merchant_id=merchant_id,
            status=status,
            occurred_at=occurred_at,
            state=SyncState.PENDING,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["shipment_id", "status"])
    )
    return event_id if getattr(result, "rowcount", 0) else None


async def load(
    session: DbSession, shipment_id: uuid.UUID, *, lock: bool = False
) -> ShopifyFulfillment | None:
    query = select(ShopifyFulfillment).where(ShopifyFulfillment.shipment_id == shipment_id)
    if lock:
        query = query.with_for_update()
    row: ShopifyFulfillment | None = await session.scalar(query)
    return row


async def load_event(
    session: DbSession, event_id: uuid.UUID, *, lock: bool = False
) -> ShopifyFulfillmentEvent | None:
    query = select(ShopifyFulfillmentEvent).where(ShopifyFulfillmentEvent.id == event_id)
    if lock:
        query = query.with_for_update()
    row: ShopifyFulfillmentEvent | None = await session.scalar(query)
    return row


# --- What a call needs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Shop:
    """What the Admin API needs: no session, no ORM object, safe to hold across the call."""

    merchant_id: uuid.UUID
    domain: str
    token: str
    notify_customer: bool


@dataclass(frozen=True)
class Claim:
    """A claimed shipment: everything the calls need, read in the claiming transaction."""

    shop: Shop
    shipment_id: uuid.UUID
    attempt: int
    #: Found ``creating``: a previous call may have created it; look first.
    uncertain: bool
    order_gid: str
    #: Shopify ``LineItem`` gid -> quantity shipped.
    wanted: Mapping[str, int]
    tracking: dict[str, str]


async def shop_of(
    session: DbSession, box: SecretBox, merchant: Merchant
) -> tuple[Shop | None, str | None]:
    """The shop's credentials, or why there are none (no token, sync stopped)."""
    if merchant.shopify_token_encrypted is None:
        return None, "no Shopify access token"
    stop = await session.get(ShopifySyncStop, merchant.id)
    if stop is not None and stop.refused_token == merchant.shopify_token_encrypted:
        return None, f"Shopify sync stopped: {stop.reason}"
    token = shopify_token(box, merchant)
    if token is None:
        return None, "no Shopify access token"
    prefs = shopify_prefs(merchant)
    return Shop(merchant.id, merchant.shop_domain, token, prefs.notify_customer), None


async def shipped_lines(session: DbSession, shipment_id: uuid.UUID) -> dict[str, int]:
    """The shipment's quantities by Shopify line item gid (lines without one are left out)."""
    rows = await session.execute(
        select(OrderLine.shopify_line_id, func.sum(ShipmentLine.quantity))
        .select_from(ShipmentLine)
        .join(PurchaseOrderLine, PurchaseOrderLine.id == ShipmentLine.purchase_order_line_id)
        .join(OrderLine, OrderLine.id == PurchaseOrderLine.order_line_id)
        .where(ShipmentLine.shipment_id == shipment_id, OrderLine.shopify_line_id.is_not(None))
        .group_by(OrderLine.shopify_line_id)
    )
    return {
        gid("LineItem", line_id): int(qty) for line_id, qty in rows.all() if line_id is not None
    }


def tracking_input(shipment: Shipment, company: str | None) -> dict[str, str]:
    """``FulfillmentTrackingInput``: a URL only with a number (Shopify's rule)."""
    tracking: dict[str, str] = {}
    if company:
        tracking["company"] = company
    if shipment.tracking_number:
        tracking["number"] = shipment.tracking_number
        if shipment.tracking_url:
            tracking["url"] = shipment.tracking_url
    return tracking


def order_gid(order: Order) -> str:
    return order.shopify_gid or gid("Order", order.shopify_order_id or 0)


async def claim(
    session: DbSession,
    box: SecretBox,
    shipment_id: uuid.UUID,
    *,
    company_of: Callable[[Shipment], str | None] = tracking_company,
) -> Claim | None:
    """Lock the shipment's row and claim it for a call, or settle it without one (skipped,
    stopped, backing off, someone else on it, done). Committed by the caller before the call."""
    row = await load(session, shipment_id, lock=True)
    if row is None or row.state not in SyncState.OPEN:
        return None
    now = utcnow()
    if row.next_attempt_at is not None and row.next_attempt_at > now + EARLY:
        return None  # backing off: its own retry is scheduled
    if row.claimed_at is not None and row.claimed_at > now - LEASE:
        return None  # a worker is calling Shopify for it right now
    merchant = await session.get(Merchant, row.merchant_id)
    order = await session.get(Order, row.order_id)
    shipment = await session.get(Shipment, shipment_id)
    if merchant is None or order is None or shipment is None:
        return None
    if not shopify_prefs(merchant).sync_fulfillments:
        _skip(session, row, order, "Shopify fulfillment sync is off for this store")
        return None
    if order.shopify_order_id is None and order.shopify_gid is None:
        # A manual order: nothing to tell Shopify, and nothing worth a timeline entry.
        _skip(session, row, order, "not a Shopify order", note=False)
        return None
    shop, why = await shop_of(session, box, merchant)
    if shop is None:
        if merchant.shopify_token_encrypted is None:
            _skip(session, row, order, f"not sent to Shopify: {why}")
            return None
        # Stopped: the row waits (no retry) until the merchant gives a new token.
        row.last_error = why
        row.next_attempt_at = None
        return None
    wanted = await shipped_lines(session, shipment_id)
    if not wanted:
        _skip(session, row, order, "no line of this shipment came from Shopify")
        return None
    uncertain = row.state == SyncState.CREATING
    row.state = SyncState.CREATING
    row.claimed_at = now
    row.attempts += 1
    return Claim(
        shop=shop,
        shipment_id=shipment_id,
        attempt=row.attempts,
        uncertain=uncertain,
        order_gid=order_gid(order),
        wanted=wanted,
        tracking=tracking_input(shipment, company_of(shipment)),
    )


def _skip(
    session: DbSession, row: ShopifyFulfillment, order: Order, why: str, *, note: bool = True
) -> None:
    row.state = SyncState.SKIPPED
    row.last_error = why
    row.next_attempt_at = None
    row.claimed_at = None
    if note:
        record(session, order, "shopify.fulfillment_skipped", why, shipment_id=str(row.shipment_id))


# --- Matching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One ``fulfillmentCreate``: fulfillment orders at one location, with their lines."""

    location_id: str | None
    #: fulfillment order id -> [(fulfillment order line id, quantity)]
    lines: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    groups: list[Group]
    #: Line item gid -> quantity no fulfillment order could take.
    shortfall: dict[str, int]
    #: Why fulfillment orders holding our lines were left out.
    held: list[str]


def plan(wanted: Mapping[str, int], orders: Sequence[FulfillmentOrder]) -> Plan:
    """Take each shipped quantity from the fulfillment order lines of its line item, greedily
    up to their ``remainingQuantity``, and group them by location (one call per location)."""
    left = dict(wanted)
    groups: dict[str | None, Group] = {}
    held: list[str] = []
    for fo in orders:
        ours = [ln for ln in fo.lines if left.get(ln.line_item_id) and ln.remaining > 0]
        if not ours:
            continue
        if fo.status not in FULFILLABLE or "CREATE_FULFILLMENT" not in fo.actions:
            held.append(
                f"{fo.id} is {fo.status}" + (f"/{fo.request_status}" if fo.request_status else "")
            )
            continue
        for ln in ours:
            take = min(left[ln.line_item_id], ln.remaining)
            if take <= 0:
                continue
            left[ln.line_item_id] -= take
            group = groups.setdefault(fo.location_id, Group(fo.location_id))
            group.lines.setdefault(fo.id, []).append((ln.id, take))
    return Plan(list(groups.values()), {k: v for k, v in left.items() if v > 0}, held)


def fulfillment_input(group: Group, tracking: dict[str, str], notify: bool) -> dict[str, Any]:
    """``FulfillmentInput`` for one group: always the line list (without it Shopify fulfils
    every remaining item of the fulfillment order)."""
    body: dict[str, Any] = {
        "notifyCustomer": notify,
        "lineItemsByFulfillmentOrder": [
            {
                "fulfillmentOrderId": fo_id,
                "fulfillmentOrderLineItems": [{"id": i, "quantity": q} for i, q in lines],
            }
            for fo_id, lines in group.lines.items()
        ],
    }
    if tracking:
        body["trackingInfo"] = tracking
    return body


def adoptable(
    fulfillments: Sequence[Mapping[str, Any]],
    tracking: Mapping[str, str],
    wanted: Mapping[str, int],
) -> tuple[list[str], dict[str, int]]:
    """Fulfillments an earlier attempt of ours created: alive, carrying our tracking number and
    only our lines. Their ids, and the quantities still to fulfil after them."""
    number = tracking.get("number")
    left = dict(wanted)
    ids: list[str] = []
    if not number:
        return ids, left
    for f in fulfillments:
        if f.get("status") in DEAD_FULFILLMENTS:
            continue
        numbers = {t.get("number") for t in f.get("trackingInfo") or ()}
        if number not in numbers:
            continue
        items = (f.get("fulfillmentLineItems") or {}).get("nodes") or []
        if not items or any(i["lineItem"]["id"] not in wanted for i in items):
            continue
        ids.append(str(f["id"]))
        for i in items:
            left[i["lineItem"]["id"]] = left.get(i["lineItem"]["id"], 0) - int(i["quantity"])
    return ids, {k: v for k, v in left.items() if v > 0}


# --- Outcomes ---------------------------------------------------------------------------------


async def _open_row(
    session: DbSession, shipment_id: uuid.UUID
) -> tuple[ShopifyFulfillment, Order] | None:
    row = await load(session, shipment_id, lock=True)
    if row is None or row.state not in SyncState.OPEN:
        return None
    order = await session.get(Order, row.order_id)
    assert order is not None
    return row, order


async def mark_created(
    session: DbSession, shipment_id: uuid.UUID, ids: list[str], *, adopted: int
) -> None:
    found = await _open_row(session, shipment_id)
    if found is None:
        return
    row, order = found
    row.state = SyncState.CREATED
    row.fulfillment_ids = ids
    row.shopify_fulfillment_id = ids[0] if ids else None
    row.claimed_at = None
    row.next_attempt_at = None
    row.last_error = None
    how = " (found after an interrupted attempt)" if adopted else ""
    record(
        session,
        order,
        "shopify.fulfilled",
        f"fulfilled in Shopify: {', '.join(ids)}{how}",
        shipment_id=str(shipment_id),
        fulfillment_ids=ids,
        attempts=row.attempts,
    )


async def mark_failed(
    session: DbSession,
    shipment_id: uuid.UUID,
    reason: str,
    *,
    kind: str = "shopify_fulfillment_failed",
    ids: Sequence[str] = (),
) -> None:
    """Refused for good: the timeline says why and the merchant's queue holds it. No retry.
    ``ids``: fulfillments created before the refusal (another location's)."""
    found = await _open_row(session, shipment_id)
    if found is None:
        return
    row, order = found
    if ids:
        row.fulfillment_ids = list(ids)
        row.shopify_fulfillment_id = ids[0]
    row.state = SyncState.FAILED
    row.last_error = reason
    row.claimed_at = None
    row.next_attempt_at = None
    record(session, order, "shopify.fulfillment_failed", reason, shipment_id=str(shipment_id))
    open_exception(session, order, kind, reason, shipment_id=str(shipment_id))


async def mark_retry(
    session: DbSession,
    shipment_id: uuid.UUID,
    reason: str,
    delay_ms: int,
    *,
    uncertain: bool,
    counts: bool = True,
) -> bool:
    """A retryable failure: back off (``creating`` stays when a create may have gone out).
    ``counts``: False for a wait on the shop's cost budget (not a failed attempt). False when
    the attempts are spent (then the row failed into the exceptions queue)."""
    found = await _open_row(session, shipment_id)
    if found is None:
        return False
    row, _ = found
    if not counts:
        row.attempts = max(0, row.attempts - 1)
    elif row.attempts >= MAX_ATTEMPTS:
        await mark_failed(session, shipment_id, f"gave up after {row.attempts} attempts: {reason}")
        return False
    row.last_error = reason
    row.claimed_at = None
    row.state = SyncState.CREATING if uncertain else SyncState.PENDING
    row.next_attempt_at = utcnow() + timedelta(milliseconds=delay_ms)
    return True


async def stop_shop(
    session: DbSession,
    merchant_id: uuid.UUID,
    reason: str,
    shipment_id: uuid.UUID | None = None,
    *,
    uncertain: bool = False,
) -> None:
    """Shopify refused the shop's token: stop its sync until the merchant gives another one,
    and tell the merchant once (timeline of the order at hand and the exceptions queue)."""
    merchant = await session.get(Merchant, merchant_id)
    if merchant is None:
        return
    stop = await session.get(ShopifySyncStop, merchant_id)
    already = stop is not None and stop.refused_token == merchant.shopify_token_encrypted
    if stop is None:
        stop = ShopifySyncStop(merchant_id=merchant_id, reason=reason)
        session.add(stop)
    stop.refused_token = merchant.shopify_token_encrypted
    stop.reason = reason
    stop.stopped_at = utcnow()
    if shipment_id is not None:
        row = await load(session, shipment_id, lock=True)
        if row is not None and row.state in SyncState.OPEN:
            # Waits for a new token; still looking first if an earlier call may have created it.
            row.state = SyncState.CREATING if uncertain else SyncState.PENDING
            row.claimed_at = None
            row.next_attempt_at = None
            row.attempts = max(0, row.attempts - 1)
            row.last_error = f"Shopify sync stopped: {reason}"
            if not already:
                order = await session.get(Order, row.order_id)
                assert order is not None
                message = (
                    f"Shopify sync stopped: {reason}. Give the store a new access token "
                    "(PUT /api/v1/settings/shopify-token); waiting shipments are sent then."
                )
                record(session, order, "shopify.sync_stopped", message)
                open_exception(session, order, "shopify_sync_stopped", message)


def sync_running() -> Any:
    return ~exists().where(
        ShopifySyncStop.merchant_id == Merchant.id,
        ShopifySyncStop.refused_token == Merchant.shopify_token_encrypted,
    )


async def unsynced(session: DbSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Shipments still to send (the ``fulfillment.create`` task's stale work): not backing off,
    not claimed by a live call, of a shop whose sync runs."""
    return await window.ids(
        session,
        select(ShopifyFulfillment.shipment_id)
        .join(Merchant, Merchant.id == ShopifyFulfillment.merchant_id)
        .where(
            ShopifyFulfillment.state.in_(SyncState.OPEN),
            ShopifyFulfillment.updated_at < window.cutoff,
            window.due(ShopifyFulfillment.next_attempt_at),
            or_(
                ShopifyFulfillment.claimed_at.is_(None),
                ShopifyFulfillment.claimed_at < window.now - LEASE,
            ),
            sync_running(),
        ),
    )


# --- Events and tracking ----------------------------------------------------------------------


@dataclass(frozen=True)
class EventClaim:
    shop: Shop
    fulfillment_ids: list[str]
    event: dict[str, Any]
    attempt: int


#: ``claim_event``'s answer when the fulfillment does not exist yet: its creation sends it.
NOT_YET = "not_yet"


async def claim_event(
    session: DbSession, box: SecretBox, event_id: uuid.UUID
) -> EventClaim | str | None:
    """The event to push, ``NOT_YET`` (its fulfillment is still to be created), or None
    (settled: pushed, skipped, backing off)."""
    ev = await load_event(session, event_id, lock=True)
    if ev is None or ev.state != SyncState.PENDING:
        return None
    shipment_id, status = ev.shipment_id, ev.status
    now = utcnow()
    if ev.next_attempt_at is not None and ev.next_attempt_at > now + EARLY:
        return None
    if ev.claimed_at is not None and ev.claimed_at > now - LEASE:
        return None  # another worker is pushing it right now
    # Locked: a creation committing now either sees this event waiting (and enqueues it) or
    # has committed before we look.
    row = await load(session, shipment_id, lock=True)
    if row is not None and row.state in (SyncState.FAILED, SyncState.SKIPPED):
        ev.state = SyncState.SKIPPED
        ev.last_error = "the shipment has no Shopify fulfillment"
        return None
    if row is None or row.state != SyncState.CREATED or not row.fulfillment_ids:
        return NOT_YET  # the creation enqueues the shipment's waiting events
    merchant = await session.get(Merchant, row.merchant_id)
    assert merchant is not None
    shop, why = await shop_of(session, box, merchant)
    if shop is None:
        ev.last_error = why
        return None
    ev.attempts += 1
    ev.claimed_at = now
    event: dict[str, Any] = {"status": EVENT_STATUS[status]}
    if ev.occurred_at is not None:
        event["happenedAt"] = ev.occurred_at.isoformat()
    if status in EVENT_MESSAGE:
        event["message"] = EVENT_MESSAGE[status]
    shipment = await session.get(Shipment, shipment_id)
    eta = getattr(shipment, "estimated_delivery_at", None)
    if isinstance(eta, datetime):
        event["estimatedDeliveryAt"] = eta.isoformat()
    return EventClaim(shop, list(row.fulfillment_ids), event, ev.attempts)


async def event_wait(session: DbSession, event_id: uuid.UUID, delay_ms: int, reason: str) -> None:
    ev = await load_event(session, event_id, lock=True)
    if ev is not None and ev.state == SyncState.PENDING:
        ev.last_error = reason
        ev.claimed_at = None
        ev.next_attempt_at = utcnow() + timedelta(milliseconds=delay_ms)


async def event_done(
    session: DbSession,
    event_id: uuid.UUID,
    *,
    shopify_event_id: str | None = None,
    error: str | None = None,
) -> None:
    ev = await load_event(session, event_id, lock=True)
    if ev is None or ev.state != SyncState.PENDING:
        return
    shipment_id, status = ev.shipment_id, ev.status
    ev.next_attempt_at = None
    ev.claimed_at = None
    if error is None:
        ev.state = SyncState.CREATED
        ev.shopify_event_id = shopify_event_id
        ev.last_error = None
        row = await load(session, shipment_id, lock=True)
        if row is not None:
            row.last_event_status = status
        return
    ev.state = SyncState.FAILED
    ev.last_error = error
    row = await load(session, shipment_id)
    order = await session.get(Order, row.order_id) if row is not None else None
    if order is not None:
        record(
            session,
            order,
            "shopify.event_failed",
            f"Shopify refused the {status} event: {error}",
            shipment_id=str(shipment_id),
        )


async def waiting_events(session: DbSession, shipment_id: uuid.UUID) -> Sequence[uuid.UUID]:
    """The shipment's events still to push (to send once its fulfillment exists)."""
    return (
        await session.scalars(
            select(ShopifyFulfillmentEvent.id).where(
                ShopifyFulfillmentEvent.shipment_id == shipment_id,
                ShopifyFulfillmentEvent.state == SyncState.PENDING,
            )
        )
    ).all()


async def unpushed_events(session: DbSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Events still to push whose fulfillment exists (the ``fulfillment.event`` task's stale
    work; the others are sent when their fulfillment is created)."""
    return await window.ids(
        session,
        select(ShopifyFulfillmentEvent.id)
        .join(Merchant, Merchant.id == ShopifyFulfillmentEvent.merchant_id)
        .join(
            ShopifyFulfillment,
            ShopifyFulfillment.shipment_id == ShopifyFulfillmentEvent.shipment_id,
        )
        .where(
            ShopifyFulfillment.state == SyncState.CREATED,
            ShopifyFulfillmentEvent.state == SyncState.PENDING,
            ShopifyFulfillmentEvent.updated_at < window.cutoff,
            window.due(ShopifyFulfillmentEvent.next_attempt_at),
            or_(
                ShopifyFulfillmentEvent.claimed_at.is_(None),
                ShopifyFulfillmentEvent.claimed_at < window.now - LEASE,
            ),
            sync_running(),
        ),
    )


@dataclass(frozen=True)
class TrackingClaim:
    shop: Shop
    fulfillment_ids: list[str]
    tracking: dict[str, str]


async def tracking_update(
    session: DbSession,
    box: SecretBox,
    shipment_id: uuid.UUID,
    *,
    company_of: Callable[[Shipment], str | None] = tracking_company,
) -> TrackingClaim | None:
    """The shipment's current tracking for its fulfillment; None when there is none yet (the
    creation, still to come, carries the current tracking anyway)."""
    row = await load(session, shipment_id)
    if row is None or row.state != SyncState.CREATED or not row.fulfillment_ids:
        return None
    merchant = await session.get(Merchant, row.merchant_id)
    shipment = await session.get(Shipment, shipment_id)
    if merchant is None or shipment is None:
        return None
    shop, _ = await shop_of(session, box, merchant)
    if shop is None:
        return None
    tracking = tracking_input(shipment, company_of(shipment))
    return TrackingClaim(shop, list(row.fulfillment_ids), tracking) if tracking else None


async def note(session: DbSession, shipment_id: uuid.UUID, type_: str, message: str) -> None:
    row = await load(session, shipment_id)
    order = await session.get(Order, row.order_id) if row is not None else None
    if order is not None:
        record(session, order, type_, message, shipment_id=str(shipment_id))
