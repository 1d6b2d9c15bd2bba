"""Purchase order rules: the state machine, rejection and reroute, shipments and tracking."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.codes import wire_amount
from app.db import utcnow
from app.merchants.models import Merchant
from app.orders.models import Order, OrderLine
from app.purchasing.models import (
    POStatus,
    PurchaseOrder,
    PurchaseOrderLine,
    Shipment,
    ShipmentLine,
    TrackingEvent,
)
from app.routing import service as routing
from app.suppliers.models import Supplier, SupplierProduct
from app.timeline.service import record
from connectors.base import AddressDTO, PurchaseOrderDTO, PurchaseOrderLineDTO

TRACKING_STATUSES = ("in_transit", "out_for_delivery", "delivered", "exception", "returned")


class PurchaseOrderConflict(Exception):
    """The purchase order's state forbids this (HTTP 409)."""


class PurchaseOrderInputError(ValueError):
    """Bad input naming the field (HTTP 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


async def load(
    session: AsyncSession, po_id: uuid.UUID, *, lock: bool = False, dialect: str = ""
) -> PurchaseOrder | None:
    query = (
        select(PurchaseOrder)
        .where(PurchaseOrder.id == po_id)
        .options(selectinload(PurchaseOrder.lines))
    )
    if lock and dialect == "postgresql":
        query = query.with_for_update(of=PurchaseOrder)
    po: PurchaseOrder | None = await session.scalar(query)
    return po


async def _order(session: AsyncSession, po: PurchaseOrder) -> Order:
    order = await session.get(Order, po.order_id)
    assert order is not None
    return order


async def transition(
    session: AsyncSession, po: PurchaseOrder, status: str, message: str, **data: Any
) -> None:
    """Move the purchase order, or refuse (``PurchaseOrderConflict``) if the move is illegal."""
    if status not in POStatus.TRANSITIONS.get(po.status, frozenset()):
        raise PurchaseOrderConflict(
            f"purchase order {po.number} is {po.status}: cannot become {status}"
        )
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
    record(
        session,
        await _order(session, po),
        f"purchase_order.{status}",
        f"purchase order {po.number}: {previous} -> {status}" + (f": {message}" if message else ""),
        purchase_order_id=str(po.id),
        previous=previous,
        **data,
    )
    await session.flush()


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
    session: AsyncSession,
    po: PurchaseOrder,
    lines: Sequence[PurchaseOrderLine],
    reason: str,
    *,
    exclude_supplier: bool = True,
) -> None:
    """Take lines back from a supplier: give back reserved stock, remember not to send them
    there again, and route them to the next candidate."""
    for ln in lines:
        if ln.status != "open":
            continue
        ln.status = "rejected"
        await session.execute(
            update(SupplierProduct)
            .where(SupplierProduct.supplier_id == po.supplier_id, SupplierProduct.sku == ln.sku)
            .values(stock=SupplierProduct.stock + (ln.quantity - ln.quantity_shipped))
        )
    if exclude_supplier:
        await routing.exclude(session, [ln.order_line_id for ln in lines], po.supplier_id, reason)
    await session.flush()
    order = await _order(session, po)
    merchant = await session.get(Merchant, order.merchant_id)
    assert merchant is not None
    order_lines = list(
        (
            await session.scalars(
                select(OrderLine).where(OrderLine.id.in_([ln.order_line_id for ln in lines]))
            )
        ).all()
    )
    record(
        session,
        order,
        "routing.reroute",
        f"rerouting {', '.join(f'{ln.quantity} x {ln.sku}' for ln in lines)} "
        f"away from purchase order {po.number}: {reason}",
        purchase_order_id=str(po.id),
    )
    await routing.route_lines(session, merchant, order, order_lines)


async def reject(
    session: AsyncSession, po: PurchaseOrder, reason: str, skus: Sequence[str] | None = None
) -> list[PurchaseOrderLine]:
    """The supplier cannot supply these lines (all when ``skus`` is empty): reroute them."""
    open_lines = [ln for ln in po.lines if ln.status == "open"]
    if skus:
        unknown = [
            s for s in skus if s not in {x for ln in open_lines for x in (ln.sku, ln.supplier_sku)}
        ]
        if unknown:
            raise PurchaseOrderInputError("lines", f"not open on {po.number}: {', '.join(unknown)}")
        chosen = [ln for ln in open_lines if ln.sku in skus or ln.supplier_sku in skus]
    else:
        chosen = open_lines
    if any(ln.quantity_shipped for ln in chosen):
        raise PurchaseOrderConflict("lines already (partly) shipped cannot be rejected")
    if po.status not in (POStatus.PENDING, POStatus.PLACED, POStatus.ACCEPTED):
        raise PurchaseOrderConflict(f"purchase order {po.number} is {po.status}: cannot reject")
    if len(chosen) == len(open_lines):
        await transition(session, po, POStatus.REJECTED, reason)
    else:
        record(
            session,
            await _order(session, po),
            "purchase_order.lines_rejected",
            f"{po.number}: supplier rejected {', '.join(ln.sku for ln in chosen)}: {reason}",
            purchase_order_id=str(po.id),
        )
    await release_lines(session, po, chosen, f"rejected by supplier: {reason}")
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
        existing = await session.scalar(
            select(Shipment).where(
                Shipment.purchase_order_id == po.id, Shipment.tracking_number == tracking_number
            )
        )
        if existing is not None:
            return existing, False
    if po.status not in (POStatus.PLACED, POStatus.ACCEPTED, POStatus.PARTIALLY_SHIPPED):
        raise PurchaseOrderConflict(f"purchase order {po.number} is {po.status}: cannot ship")
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
            raise PurchaseOrderInputError(f"lines[{i}].sku", f"{item.sku!r} is not on {po.number}")
        if item.quantity <= 0:
            raise PurchaseOrderInputError(f"lines[{i}].quantity", "must be positive")
        wanted[match.id] = wanted.get(match.id, 0) + item.quantity
        owed = match.quantity - match.quantity_shipped
        if wanted[match.id] > owed:
            raise PurchaseOrderInputError(
                f"lines[{i}].quantity", f"{wanted[match.id]} > {owed} still to ship for {item.sku}"
            )
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
    return shipment, True


async def add_tracking_event(
    session: AsyncSession,
    shipment: Shipment,
    status: str,
    occurred_at: datetime,
    description: str | None,
) -> bool:
    """Record a carrier event once; ``delivered`` closes the shipment (and the purchase order
    when every shipment of a fully shipped order is delivered)."""
    if status not in TRACKING_STATUSES:
        raise PurchaseOrderInputError("status", f"one of {', '.join(TRACKING_STATUSES)}")
    occurred_at = _utc(occurred_at)
    exists = await session.scalar(
        select(TrackingEvent.id).where(
            TrackingEvent.shipment_id == shipment.id,
            TrackingEvent.status == status,
            TrackingEvent.occurred_at == occurred_at,
        )
    )
    if exists is not None:
        return False
    session.add(
        TrackingEvent(
            shipment_id=shipment.id, status=status, occurred_at=occurred_at, description=description
        )
    )
    shipment.status = status
    if status == "delivered":
        shipment.delivered_at = occurred_at
    await session.flush()
    po = await load(session, shipment.purchase_order_id)
    assert po is not None
    record(
        session,
        await _order(session, po),
        f"shipment.{status}",
        f"{po.number} {shipment.tracking_number or ''}: {status}"
        + (f" ({description})" if description else ""),
        shipment_id=str(shipment.id),
        occurred_at=occurred_at.isoformat(),
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
