"""Purchase orders: created from a routing plan (with the stock they reserve), their state
machine, releasing lines (stock back; where they go next is routing's decision), shipments and
tracking. Nothing here routes: ``app.routing.service`` decides and orchestrates."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from app.api.pagination import Page, rows_page
from app.carriers import best_match, normalise, tracking_url_for
from app.codes import wire_amount
from app.db import insert_for, utcnow, uuid7
from app.errors import Conflict, InvalidInput, NotFound, RetryableConflict
from app.events.models import EventType
from app.events.service import Publication, publish, publish_many
from app.jobs.task import StaleWindow
from app.orders.models import Order, OrderStatus
from app.orders.service import order_by_id
from app.purchasing.models import (
    POStatus,
    PurchaseOrder,
    PurchaseOrderLine,
    Shipment,
    ShipmentLine,
    TrackingEvent,
)
from app.routing.engine import RoutingPlan
from app.suppliers.models import Supplier, SupplierProduct
from app.timeline.service import record, set_status
from connectors.base import AddressDTO, PurchaseOrderDTO, PurchaseOrderLineDTO

#: One vocabulary for every source (supplier API, connector polls, the aggregator).
TRACKING_STATUSES = (
    "info_received",
    "in_transit",
    "out_for_delivery",
    "delivered",
    "exception",
    "returned",
)


#: Purchase orders a supplier may still refuse, or a merchant take lines back from.
REVOCABLE = (POStatus.PENDING, POStatus.PLACED, POStatus.ACCEPTED)


class StockConflict(RetryableConflict):
    """Stock moved between the decision and the reservation: route again."""


async def load(
    session: AsyncSession, po_id: uuid.UUID, *, lock: bool = False
) -> PurchaseOrder | None:
    """The purchase order with its lines. ``lock`` takes its row lock (PostgreSQL; SQLite's
    transactions begin IMMEDIATE, so writers are serialised already and the clause is left
    out by SQLAlchemy)."""
    # Lines joined in: one statement, where a select-in load took two (the placement loads a
    # purchase order twice per attempt). The lock stays on the purchase order's row.
    query = (
        select(PurchaseOrder)
        .where(PurchaseOrder.id == po_id)
        .options(joinedload(PurchaseOrder.lines))
    )
    if lock:
        query = query.with_for_update(of=PurchaseOrder)
    po: PurchaseOrder | None = (await session.execute(query)).unique().scalar_one_or_none()
    return po


async def _load_locked_with(session: AsyncSession, po_id: uuid.UUID, other: Any, on: Any) -> Any:
    """``load(lock=True)`` and one related row (``other`` joined ``on``), in one statement."""
    row = (
        (
            await session.execute(
                select(PurchaseOrder, other)
                .join(other, on)
                .where(PurchaseOrder.id == po_id)
                .options(joinedload(PurchaseOrder.lines))
                .with_for_update(of=PurchaseOrder)
            )
        )
        .unique()
        .first()
    )
    return None if row is None else (row[0], row[1])


async def load_with_supplier(
    session: AsyncSession, po_id: uuid.UUID
) -> tuple[PurchaseOrder, Supplier] | None:
    """``load(lock=True)`` and the purchase order's supplier, in one statement."""
    loaded: tuple[PurchaseOrder, Supplier] | None = await _load_locked_with(
        session, po_id, Supplier, Supplier.id == PurchaseOrder.supplier_id
    )
    return loaded


async def load_with_order(
    session: AsyncSession, po_id: uuid.UUID
) -> tuple[PurchaseOrder, Order] | None:
    """``load(lock=True)`` and the purchase order's order (the session holds it: the
    transition's ``order_of`` reads no more), in one statement."""
    loaded: tuple[PurchaseOrder, Order] | None = await _load_locked_with(
        session, po_id, Order, Order.id == PurchaseOrder.order_id
    )
    return loaded


async def load_for_merchant(
    session: AsyncSession, merchant_id: uuid.UUID, po_id: uuid.UUID
) -> PurchaseOrder | None:
    po = await load(session, po_id)
    return po if po is not None and po.merchant_id == merchant_id else None


#: What "pending" means to a supplier: waiting for its answer.
SUPPLIER_STATUS_ALIASES = {"pending": (POStatus.PLACED,), "open": POStatus.OPEN}
#: Our ``pending`` (decided, not yet handed over) is never the supplier's to see or act on.
SUPPLIER_VISIBLE = tuple(s for s in POStatus.ALL if s != POStatus.PENDING)


async def page_for_supplier(
    session: AsyncSession,
    supplier_id: uuid.UUID,
    status: str | None,
    *,
    cursor: str | None,
    limit: int,
) -> Page[PurchaseOrder]:
    """The purchase orders handed to a supplier, by its view of their status, oldest first (a
    work queue)."""
    statuses = SUPPLIER_STATUS_ALIASES.get(status, (status,)) if status else SUPPLIER_VISIBLE
    if not set(statuses) <= set(POStatus.ALL):
        raise InvalidInput(f"one of pending, open, {', '.join(SUPPLIER_VISIBLE)}", field="status")
    query = (
        select(PurchaseOrder)
        .where(
            PurchaseOrder.supplier_id == supplier_id,
            PurchaseOrder.status.in_([s for s in statuses if s in SUPPLIER_VISIBLE]),
        )
        .options(selectinload(PurchaseOrder.lines))
    )
    return await rows_page(
        session,
        query,
        PurchaseOrder.created_at,
        PurchaseOrder.id,
        cursor=cursor,
        limit=limit,
        oldest_first=True,
    )


async def load_for_supplier(
    session: AsyncSession, supplier_id: uuid.UUID, po_id: uuid.UUID, *, lock: bool = False
) -> PurchaseOrder:
    """A purchase order handed to this supplier, or ``NotFound``. Pending is not handed over
    yet: seeing or acting on it would race its placement."""
    po = await load(session, po_id, lock=lock)
    if po is None or po.supplier_id != supplier_id or po.status == POStatus.PENDING:
        raise NotFound(f"purchase order {po_id} not found")
    return po


async def shipment_for_supplier(
    session: AsyncSession, supplier_id: uuid.UUID, shipment_id: uuid.UUID
) -> Shipment:
    shipment = await session.scalar(
        select(Shipment)
        .join(PurchaseOrder, PurchaseOrder.id == Shipment.purchase_order_id)
        .where(Shipment.id == shipment_id, PurchaseOrder.supplier_id == supplier_id)
    )
    if shipment is None:
        raise NotFound(f"shipment {shipment_id} not found")
    return shipment


async def accept(session: AsyncSession, po: PurchaseOrder, reference: str | None) -> None:
    """The supplier accepts, optionally with its own reference; accepting twice is harmless."""
    if po.status == POStatus.ACCEPTED and reference in (None, po.supplier_reference):
        return
    po.supplier_reference = reference or po.supplier_reference
    await transition(
        session,
        po,
        POStatus.ACCEPTED,
        "accepted by supplier" + (f" (reference {reference})" if reference else ""),
    )


async def page_for_merchant(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    *,
    status: str | None = None,
    order_id: uuid.UUID | None = None,
    supplier_id: uuid.UUID | None = None,
    dead_letter: bool = False,
    cursor: str | None,
    limit: int,
) -> Page[PurchaseOrder]:
    """The merchant's purchase orders, filtered, newest first."""
    query = (
        select(PurchaseOrder)
        .where(PurchaseOrder.merchant_id == merchant_id)
        .options(selectinload(PurchaseOrder.lines))
    )
    if status:
        if status not in POStatus.ALL:
            raise InvalidInput(f"one of {', '.join(POStatus.ALL)}", field="status")
        query = query.where(PurchaseOrder.status == status)
    if order_id:
        query = query.where(PurchaseOrder.order_id == order_id)
    if supplier_id:
        query = query.where(PurchaseOrder.supplier_id == supplier_id)
    if dead_letter:
        query = query.where(PurchaseOrder.dead_lettered_at.is_not(None))
    return await rows_page(
        session, query, PurchaseOrder.created_at, PurchaseOrder.id, cursor=cursor, limit=limit
    )


async def open_lines_of_order(
    session: AsyncSession, order_id: uuid.UUID
) -> dict[uuid.UUID, tuple[PurchaseOrderLine, PurchaseOrder]]:
    """Each order line a supplier still owes, with its purchase order."""
    rows = (
        await session.execute(
            select(PurchaseOrderLine, PurchaseOrder)
            .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.purchase_order_id)
            .where(PurchaseOrder.order_id == order_id, PurchaseOrderLine.status == "open")
        )
    ).all()
    return {pl.order_line_id: (pl, po) for pl, po in rows}


async def covered_line_ids(session: AsyncSession, order_id: uuid.UUID) -> set[uuid.UUID]:
    """Order lines on a live purchase order (open at the supplier, shipped or delivered)."""
    return set(
        (
            await session.scalars(
                select(PurchaseOrderLine.order_line_id)
                .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.purchase_order_id)
                .where(
                    PurchaseOrder.order_id == order_id,
                    PurchaseOrderLine.status == "open",
                    PurchaseOrder.status.in_(
                        [*POStatus.OPEN, POStatus.SHIPPED, POStatus.DELIVERED]
                    ),
                )
            )
        ).all()
    )


def _ship_to(order: Order) -> dict[str, Any]:
    addr = order.shipping_address or {}
    keys = ("name", "company", "address1", "address2", "city", "province_code", "zip")
    out = {k: addr.get(k) for k in keys}
    out["country_code"] = addr.get("country_code")
    out["phone"] = addr.get("phone")
    return out


#: The length of the ``number`` columns built from an order's name (purchase orders, returns).
NUMBER_LENGTH = 64


def bounded_number(prefix: str, order_name: str, n: int) -> str:
    """``<prefix><order name>-<n>`` within ``NUMBER_LENGTH``: a longer name is cut and tagged
    with a digest of the whole name, so two long names sharing a beginning still differ."""
    name = order_name.lstrip("#")
    suffix = f"-{n}"
    if len(prefix) + len(name) + len(suffix) <= NUMBER_LENGTH:
        return f"{prefix}{name}{suffix}"
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = NUMBER_LENGTH - len(prefix) - len("~") - len(digest) - len(suffix)
    return f"{prefix}{name[:keep]}~{digest}{suffix}"


async def create_from_plan(
    session: AsyncSession, order: Order, decided: RoutingPlan, *, fresh: bool = False
) -> list[PurchaseOrder]:
    """One ``pending`` purchase order per supplier of the plan, with the stock it reserves.

    The caller enqueues their placement once its transaction holds them. Raises
    ``StockConflict`` (retryable) when stock moved since the decision. ``fresh``: the order
    was created in this transaction (it has no purchase order yet).
    """
    existing = (
        0
        if fresh
        else int(
            await session.scalar(
                select(func.count())
                .select_from(PurchaseOrder)
                .where(PurchaseOrder.order_id == order.id)
            )
            or 0
        )
    )
    by_supplier = sorted(decided.by_supplier().items())
    reservations: dict[tuple[uuid.UUID, str], int] = {}
    names: dict[tuple[uuid.UUID, str], str] = {}
    for supplier_id, decisions in by_supplier:
        for d in decisions:
            assert d.offer is not None
            key = (supplier_id, d.offer.sku)
            reservations[key] = reservations.get(key, 0) + d.quantity
            names[key] = d.offer.supplier_name
    # Stock first, before anything else is written: a conflict leaves nothing to undo but the
    # reservation itself (no savepoint).
    await reserve_stock(session, reservations, names)
    created: list[PurchaseOrder] = []
    now = utcnow()
    for n, (supplier_id, decisions) in enumerate(by_supplier, start=1):
        po_id = uuid7()
        po_lines = []
        total = Decimal("0")
        for position, d in enumerate(decisions):
            assert d.offer is not None
            total += d.offer.unit_cost * d.quantity
            po_lines.append(
                PurchaseOrderLine(
                    id=uuid7(),
                    purchase_order_id=po_id,
                    order_line_id=d.line_id,
                    merchant_id=order.merchant_id,
                    position=position,
                    sku=d.offer.sku,
                    supplier_sku=d.offer.supplier_sku,
                    quantity=d.quantity,
                    unit_cost=d.offer.unit_cost,
                )
            )
        first = decisions[0].offer
        assert first is not None
        po = PurchaseOrder(
            id=po_id,
            merchant_id=order.merchant_id,
            order_id=order.id,
            supplier_id=supplier_id,
            number=bounded_number("", order.name, existing + n),
            status=POStatus.PENDING,
            idempotency_key=f"dropship-po-{po_id}",
            currency=first.currency,
            total_cost=total,
            ship_to=_ship_to(order),
            shipping_method=order.shipping_method,
            # Held by the purchase order too: placing it in this transaction (a portal
            # supplier's) reads them before they are written.
            lines=po_lines,
            # What placing it here sets, given to every one: rows naming the same columns are
            # one INSERT.
            supplier_reference=None,
            attempts=0,
            placed_at=None,
            accepted_at=None,
            created_at=now,
            updated_at=now,
        )
        # No flush per purchase order: the unit of work inserts them all, then all their lines
        # (one statement per table).
        session.add(po)
        session.add_all(po_lines)
        created.append(po)
        record(
            session,
            order,
            "purchase_order.created",
            f"purchase order {po.number} for {first.supplier_name}: "
            + ", ".join(f"{pl.quantity} x {pl.sku}" for pl in po_lines),
            purchase_order_id=str(po.id),
            supplier_id=str(supplier_id),
        )
    return created


async def reserve_stock(
    session: AsyncSession,
    reservations: dict[tuple[uuid.UUID, str], int],
    names: dict[tuple[uuid.UUID, str], str],
) -> None:
    """Take ``reservations`` (quantity per supplier and SKU) from stock, all or nothing, in one
    UPDATE. Raises ``StockConflict`` (retryable) when stock moved since the decision: what the
    UPDATE took is given back first.

    The rows are locked in key order (PostgreSQL: the sub-select's ``FOR UPDATE`` runs on its
    sorted rows), so concurrent routings of the same SKUs wait for each other, never deadlock."""
    if not reservations:
        return
    keys = sorted(reservations, key=lambda k: (str(k[0]), k[1]))

    def per_key(values: dict[tuple[uuid.UUID, str], int]) -> Any:
        return case(
            *(
                (and_(SupplierProduct.supplier_id == sid, SupplierProduct.sku == sku), q)
                for (sid, sku), q in values.items()
            ),
            else_=0,
        )

    wanted = tuple_(SupplierProduct.supplier_id, SupplierProduct.sku).in_(keys)
    locked = (
        select(SupplierProduct.id)
        .where(wanted)
        .order_by(SupplierProduct.supplier_id, SupplierProduct.sku)
        .with_for_update()
    )
    with session.no_autoflush:
        taken = (
            await session.execute(
                update(SupplierProduct)
                .where(
                    SupplierProduct.id.in_(locked.scalar_subquery()),
                    SupplierProduct.stock >= per_key(reservations),
                )
                .values(stock=SupplierProduct.stock - per_key(reservations))
                .returning(SupplierProduct.supplier_id, SupplierProduct.sku)
                .execution_options(synchronize_session=False)
            )
        ).all()
        if len(taken) == len(keys):
            return
        done = {(row.supplier_id, row.sku) for row in taken}
        if done:
            back = {k: q for k, q in reservations.items() if k in done}
            await session.execute(
                update(SupplierProduct)
                .where(
                    tuple_(SupplierProduct.supplier_id, SupplierProduct.sku).in_(
                        sorted(back, key=lambda k: (str(k[0]), k[1]))
                    )
                )
                .values(stock=SupplierProduct.stock + per_key(back))
                .execution_options(synchronize_session=False)
            )
    short = next(k for k in keys if k not in done)
    raise StockConflict(f"stock of {short[1]} at {names[short]} changed")


async def suppliers_by_id(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, Supplier]:
    """The suppliers of purchase orders just created, in one statement."""
    if not ids:
        return {}
    found = await session.scalars(select(Supplier).where(Supplier.id.in_(sorted(ids))))
    return {s.id: s for s in found.all()}


async def place_created(
    session: AsyncSession,
    order: Order,
    placements: Sequence[tuple[PurchaseOrder, str, str, dict[str, Any]]],
) -> None:
    """:func:`transition` from ``pending`` to ``placed`` or ``accepted`` (status, message, data)
    for purchase orders created in this transaction and not written yet: their INSERT carries
    the new status (no UPDATE), their timeline entries join the transaction's one INSERT and
    their events are published in one batch, whatever their number."""
    now = utcnow()
    events = []
    for po, status, message, data in placements:
        previous = po.status
        if previous != POStatus.PENDING or status not in (POStatus.PLACED, POStatus.ACCEPTED):
            raise Conflict(f"purchase order {po.number} is {previous}: cannot become {status}")
        po.status = status
        po.updated_at = now
        po.placed_at = po.placed_at or now
        if status == POStatus.ACCEPTED:
            po.accepted_at = now
        record(
            session,
            order,
            f"purchase_order.{status}",
            f"purchase order {po.number}: {previous} -> {status}: {message}",
            purchase_order_id=str(po.id),
            previous=previous,
            **data,
        )
        events.append(
            Publication(
                merchant_id=order.merchant_id,
                order_id=order.id,
                type=EventType.PURCHASE_ORDER_PLACED,
                key=f"purchase_order.placed:{po.id}",
                data={
                    "purchase_order_id": str(po.id),
                    "number": po.number,
                    "supplier_id": str(po.supplier_id),
                },
            )
        )
    await publish_many(session, events)


async def order_of(session: AsyncSession, po: PurchaseOrder) -> Order:
    order = await order_by_id(session, po.order_id)
    assert order is not None
    return order


async def transition(
    session: AsyncSession, po: PurchaseOrder, status: str, message: str, **data: Any
) -> None:
    """Move the purchase order, or refuse (``Conflict``) if the move is illegal."""
    if status not in POStatus.TRANSITIONS.get(po.status, frozenset()):
        raise Conflict(f"purchase order {po.number} is {po.status}: cannot become {status}")
    previous = po.status
    po.status = status
    now = utcnow()
    po.updated_at = now
    if status == POStatus.PLACED:
        po.placed_at = po.placed_at or now
    elif status == POStatus.ACCEPTED:
        po.accepted_at = now
        po.placed_at = po.placed_at or now
    elif status == POStatus.SHIPPED:
        po.shipped_at = now
    elif status == POStatus.DELIVERED:
        po.delivered_at = now
    elif status in (POStatus.REJECTED, POStatus.CANCELLED, POStatus.FAILED):
        po.closed_at = now
    order = await order_of(session, po)
    record(
        session,
        order,
        f"purchase_order.{status}",
        f"purchase order {po.number}: {previous} -> {status}" + (f": {message}" if message else ""),
        purchase_order_id=str(po.id),
        previous=previous,
        **data,
    )
    if previous == POStatus.PENDING and status in (POStatus.PLACED, POStatus.ACCEPTED):
        await publish(
            session,
            order,
            EventType.PURCHASE_ORDER_PLACED,
            key=f"purchase_order.placed:{po.id}",
            purchase_order_id=str(po.id),
            number=po.number,
            supplier_id=str(po.supplier_id),
        )
    await session.flush()
    if status in (POStatus.SHIPPED, POStatus.DELIVERED):
        await _advance_order(session, order)


#: Purchase orders that no longer owe the customer anything.
_CLOSED = (POStatus.DELIVERED, POStatus.REJECTED, POStatus.CANCELLED, POStatus.FAILED)
#: ... and those whose parcels are at least on their way.
_SENT = (POStatus.SHIPPED, *_CLOSED)


async def _advance_order(session: AsyncSession, order: Order) -> None:
    """A routed order whose every purchase order shipped is ``shipped``; once every parcel
    arrived it is ``delivered`` (on the timeline, and published once)."""
    if order.status not in (OrderStatus.ROUTED, OrderStatus.SHIPPED):
        return
    statuses = set(
        (
            await session.scalars(
                select(PurchaseOrder.status).where(PurchaseOrder.order_id == order.id)
            )
        ).all()
    )
    if not statuses or not statuses <= set(_SENT):
        return
    if statuses <= set(_CLOSED):
        set_status(session, order, OrderStatus.DELIVERED, "every parcel delivered")
        await publish(session, order, EventType.ORDER_DELIVERED, key=f"order.delivered:{order.id}")
    elif order.status != OrderStatus.SHIPPED:
        set_status(session, order, OrderStatus.SHIPPED, "every line shipped")


def to_dto(po: PurchaseOrder) -> PurchaseOrderDTO:
    a = po.ship_to or {}
    return PurchaseOrderDTO(
        id=str(po.id),
        number=po.number,
        idempotency_key=po.idempotency_key,
        currency=po.currency,
        ship_to=AddressDTO(
            name=a.get("name"),
            company=a.get("company"),
            address1=a.get("address1"),
            address2=a.get("address2"),
            city=a.get("city"),
            province_code=a.get("province_code"),
            zip=a.get("zip"),
            country_code=a.get("country_code"),
            phone=a.get("phone"),
        ),
        shipping_method=po.shipping_method,
        lines=tuple(
            PurchaseOrderLineDTO(
                sku=ln.sku,
                supplier_sku=ln.supplier_sku,
                quantity=ln.quantity,
                unit_cost=wire_amount(ln.unit_cost, po.currency),
            )
            for ln in po.lines
            if ln.status == "open"
        ),
        supplier_reference=po.supplier_reference,
    )


async def release_lines(
    session: AsyncSession, po: PurchaseOrder, lines: Sequence[PurchaseOrderLine]
) -> None:
    """Take lines back from their supplier: they are no longer owed, and the stock reserved
    for them (what was not shipped) goes back. Where they go next is routing's decision."""
    for ln in lines:
        if ln.status != "open":
            continue
        ln.status = "rejected"
        await session.execute(
            update(SupplierProduct)
            .where(SupplierProduct.supplier_id == po.supplier_id, SupplierProduct.sku == ln.sku)
            .values(stock=SupplierProduct.stock + (ln.quantity - ln.quantity_shipped))
        )
    await session.flush()


async def reject(
    session: AsyncSession, po: PurchaseOrder, reason: str, skus: Sequence[str] | None = None
) -> list[PurchaseOrderLine]:
    """The supplier cannot supply these lines (all when ``skus`` is empty): returns them, still
    open, for routing to take back (``app.routing.service.supplier_rejected``)."""
    open_lines = [ln for ln in po.lines if ln.status == "open"]
    if skus:
        unknown = [
            s for s in skus if s not in {x for ln in open_lines for x in (ln.sku, ln.supplier_sku)}
        ]
        if unknown:
            raise InvalidInput(f"not open on {po.number}: {', '.join(unknown)}", field="lines")
        chosen = [ln for ln in open_lines if ln.sku in skus or ln.supplier_sku in skus]
    else:
        chosen = open_lines
    if any(ln.quantity_shipped for ln in chosen):
        raise Conflict("lines already (partly) shipped cannot be rejected")
    if po.status not in REVOCABLE:
        raise Conflict(f"purchase order {po.number} is {po.status}: cannot reject")
    if len(chosen) == len(open_lines):
        await transition(session, po, POStatus.REJECTED, reason)
    else:
        record(
            session,
            await order_of(session, po),
            "purchase_order.lines_rejected",
            f"{po.number}: supplier rejected {', '.join(ln.sku for ln in chosen)}: {reason}",
            purchase_order_id=str(po.id),
        )
    return chosen


def _utc(moment: datetime) -> datetime:
    """Answers (built from these objects, not reloaded) show UTC like every other timestamp."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment


@dataclass
class ShipmentLineInput:
    sku: str
    quantity: int


async def add_shipment(
    session: AsyncSession,
    po: PurchaseOrder,
    *,
    carrier: str | None,
    tracking_number: str | None,
    tracking_url: str | None,
    lines: Sequence[ShipmentLineInput],
    shipped_at: datetime | None = None,
) -> tuple[Shipment, bool]:
    """Record a (partial) shipment; the same tracking number twice is the same shipment."""
    if tracking_number:
        # "1Z 999 AA1..." and "1Z999AA1..." are one parcel: spaces and case are presentation.
        tracking_number = normalise(tracking_number) or tracking_number.strip()
    if tracking_number:
        existing = await session.scalar(
            select(Shipment).where(
                Shipment.purchase_order_id == po.id, Shipment.tracking_number == tracking_number
            )
        )
        if existing is not None:
            await _correct_tracking(session, po, existing, carrier, tracking_url)
            return existing, False
    if po.status not in (POStatus.PLACED, POStatus.ACCEPTED, POStatus.PARTIALLY_SHIPPED):
        raise Conflict(f"purchase order {po.number} is {po.status}: cannot ship")
    open_lines = [ln for ln in po.lines if ln.status == "open"]
    if not lines:
        # No lines given: everything still owed ships.
        lines = [
            ShipmentLineInput(ln.supplier_sku, ln.quantity - ln.quantity_shipped)
            for ln in open_lines
            if ln.quantity > ln.quantity_shipped
        ]
    wanted: dict[uuid.UUID, int] = {}
    for i, item in enumerate(lines):
        match = next((ln for ln in open_lines if item.sku in (ln.supplier_sku, ln.sku)), None)
        if match is None:
            raise InvalidInput(f"{item.sku!r} is not on {po.number}", field=f"lines[{i}].sku")
        if item.quantity <= 0:
            raise InvalidInput("must be positive", field=f"lines[{i}].quantity")
        wanted[match.id] = wanted.get(match.id, 0) + item.quantity
        owed = match.quantity - match.quantity_shipped
        if wanted[match.id] > owed:
            raise InvalidInput(
                f"{wanted[match.id]} > {owed} still to ship for {item.sku}",
                field=f"lines[{i}].quantity",
            )
    if tracking_number:
        # A supplier that names no carrier or no link: the number itself tells (app.carriers).
        tracking_url = tracking_url or tracking_url_for(carrier, tracking_number)
        if not carrier:
            detected = best_match(tracking_number)
            carrier = (detected.shopify_company or detected.courier_name) if detected else None
    shipment = Shipment(
        purchase_order_id=po.id,
        merchant_id=po.merchant_id,
        carrier=carrier,
        tracking_number=tracking_number,
        tracking_url=tracking_url,
        status="shipped",
        shipped_at=_utc(shipped_at) if shipped_at else utcnow(),
    )
    session.add(shipment)
    await session.flush()
    for ln in open_lines:
        qty = wanted.get(ln.id)
        if qty:
            ln.quantity_shipped += qty
            session.add(
                ShipmentLine(shipment_id=shipment.id, purchase_order_line_id=ln.id, quantity=qty)
            )
    complete = all(ln.quantity_shipped >= ln.quantity for ln in open_lines)
    await transition(
        session,
        po,
        POStatus.SHIPPED if complete else POStatus.PARTIALLY_SHIPPED,
        f"{carrier or 'carrier unknown'} {tracking_number or ''}".strip(),
        shipment_id=str(shipment.id),
        tracking_number=tracking_number,
        tracking_url=tracking_url,
    )
    await publish(
        session,
        await order_of(session, po),
        EventType.SHIPMENT_SHIPPED,
        key=f"shipment.shipped:{shipment.id}",
        purchase_order_id=str(po.id),
        shipment_id=str(shipment.id),
        carrier=carrier,
        tracking_number=tracking_number,
        tracking_url=tracking_url,
        lines=sum(wanted.values()),
    )
    return shipment, True


async def _correct_tracking(
    session: AsyncSession,
    po: PurchaseOrder,
    shipment: Shipment,
    carrier: str | None,
    tracking_url: str | None,
) -> None:
    """The same parcel reported again with another carrier or link (the supplier corrects
    itself): keep the new words, say so, and publish it for the store's fulfillment."""
    changes = {
        name: value
        for name, value in (("carrier", carrier), ("tracking_url", tracking_url))
        if value and value != getattr(shipment, name)
    }
    if not changes:
        return
    for name, value in changes.items():
        setattr(shipment, name, value)
    await session.flush()
    order = await order_of(session, po)
    record(
        session,
        order,
        "shipment.tracking_updated",
        f"{po.number} {shipment.tracking_number}: "
        + ", ".join(f"{name} now {value}" for name, value in changes.items()),
        shipment_id=str(shipment.id),
        **changes,
    )
    version = hashlib.sha256(f"{shipment.carrier}|{shipment.tracking_url}".encode()).hexdigest()
    await publish(
        session,
        order,
        EventType.SHIPMENT_TRACKING_UPDATED,
        key=f"shipment.tracking_updated:{shipment.id}:{version[:32]}",
        purchase_order_id=str(po.id),
        shipment_id=str(shipment.id),
        carrier=shipment.carrier,
        tracking_number=shipment.tracking_number,
        tracking_url=shipment.tracking_url,
    )


async def add_tracking_event(
    session: AsyncSession,
    shipment: Shipment,
    status: str,
    occurred_at: datetime,
    description: str | None,
    *,
    location: str | None = None,
    estimated_delivery_at: datetime | None = None,
) -> bool:
    """Record a carrier event once (same shipment, status and time); ``delivered`` closes the
    shipment (and the purchase order when every shipment of a fully shipped order is delivered).

    An event older than the shipment's latest one is kept for the history but does not move
    the shipment's status back. The first event of each status is published
    (``shipment.<status>``) for the reactions: emails, Shopify, webhooks.
    """
    if status not in TRACKING_STATUSES:
        raise InvalidInput(f"one of {', '.join(TRACKING_STATUSES)}", field="status")
    occurred_at = _utc(occurred_at)
    inserted = await session.execute(
        insert_for(session)(TrackingEvent)
        .values(
            id=uuid7(),
            shipment_id=shipment.id,
            status=status,
            occurred_at=occurred_at,
            description=description,
            location=location,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["shipment_id", "status", "occurred_at"])
        .returning(TrackingEvent.id)
    )
    if inserted.scalar_one_or_none() is None:
        return False
    if estimated_delivery_at is not None:
        shipment.estimated_delivery_at = _utc(estimated_delivery_at)
    latest = shipment.last_event_at
    if latest is None or occurred_at >= _utc(latest) or status == "delivered":
        shipment.status = status
    shipment.last_event_at = occurred_at if latest is None else max(_utc(latest), occurred_at)
    if status == "delivered" and shipment.delivered_at is None:
        shipment.delivered_at = occurred_at
    await session.flush()
    po = await load(session, shipment.purchase_order_id, lock=True)
    assert po is not None
    order = await order_of(session, po)
    record(
        session,
        order,
        f"shipment.{status}",
        f"{po.number} {shipment.tracking_number or ''}: {status}"
        + (f" ({description})" if description else ""),
        shipment_id=str(shipment.id),
        occurred_at=occurred_at.isoformat(),
    )
    # The first event of its status is published (its key holds it once; an earlier event of
    # the status still on record also says so after old lifecycle events were purged).
    earlier = await session.scalar(
        select(TrackingEvent.id)
        .where(
            TrackingEvent.shipment_id == shipment.id,
            TrackingEvent.status == status,
            TrackingEvent.occurred_at != occurred_at,
        )
        .limit(1)
    )
    if earlier is None:
        await publish(
            session,
            order,
            f"shipment.{status}",
            key=f"shipment.{status}:{shipment.id}",
            purchase_order_id=str(po.id),
            shipment_id=str(shipment.id),
            status=status,
            occurred_at=occurred_at.isoformat(),
            description=description,
            location=location,
        )
    if status == "delivered" and po.status == POStatus.SHIPPED:
        undelivered = await session.scalar(
            select(Shipment.id).where(
                Shipment.purchase_order_id == po.id, Shipment.delivered_at.is_(None)
            )
        )
        if undelivered is None:
            await transition(session, po, POStatus.DELIVERED, "every shipment delivered")
    await session.flush()
    return True


async def supplier_of(session: AsyncSession, po: PurchaseOrder) -> Supplier:
    supplier = await session.get(Supplier, po.supplier_id)
    assert supplier is not None
    return supplier


async def unplaced(session: AsyncSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Purchase orders still to place (the ``purchase_order.place`` task's stale work): one
    whose worker died mid-call is placed again safely (idempotency key), unless it is backing
    off (its retry, or the supplier's Retry-After, is not due yet). Also the safety net for a
    purchase order whose caller did not enqueue its placement."""
    return await window.ids(
        session,
        select(PurchaseOrder.id).where(
            PurchaseOrder.status == POStatus.PENDING,
            PurchaseOrder.updated_at < window.cutoff,
            window.due(PurchaseOrder.next_attempt_at),
        ),
    )
