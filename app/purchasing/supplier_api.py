"""The supplier API (``/supplier/v1``): suppliers who pull their purchase orders and report back.

A supplier authenticates with its own key and sees only purchase orders routed to it, and only
what it needs to ship them.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any, cast

from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
)
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app import limits
from app.api.deps import bearer_token
from app.api.openapi import SUPPLIER_SECURITY, operation
from app.api.pagination import DEFAULT_LIMIT, Page, keyset_page
from app.db import utcnow
from app.purchasing import service
from app.purchasing.models import POStatus, PurchaseOrder, Shipment
from app.purchasing.schemas import (
    AcceptIn,
    InventoryReport,
    InventoryRow,
    RejectIn,
    ShipmentIn,
    ShipmentOut,
    SupplierLineOut,
    SupplierOrderOut,
    TrackingEventIn,
)
from app.suppliers.models import Supplier, SupplierProduct
from app.suppliers.service import authenticate_supplier

#: Rows per call; each row's values are checked by ``InventoryRow``.
MAX_INVENTORY_ROWS = limits.MAX_ROWS
#: What "pending" means to a supplier: waiting for its answer.
STATUS_ALIASES = {"pending": (POStatus.PLACED,), "open": POStatus.OPEN}
#: Our ``pending`` (decided, not yet handed over) is never the supplier's to see or act on.
VISIBLE = tuple(s for s in POStatus.ALL if s != POStatus.PENDING)
_INVALID_KEY = {"WWW-Authenticate": 'Bearer realm="dropship", error="invalid_token"'}


async def provide_supplier(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> Supplier:
    try:
        supplier = await authenticate_supplier(db_session, bearer_token(request))
        if supplier is None:
            raise NotAuthorizedException("invalid or revoked supplier key", headers=_INVALID_KEY)
    except Exception:
        # A failed dependency's already-resolved session is never cleaned up by Litestar:
        # release its transaction (on SQLite, the write lock) now.
        await db_session.close()
        raise
    return supplier


def supplier_view(po: PurchaseOrder) -> SupplierOrderOut:
    return SupplierOrderOut(
        id=po.id,
        number=po.number,
        status=po.status,
        currency=po.currency,
        total_cost=po.total_cost,
        ship_to=po.ship_to,
        shipping_method=po.shipping_method,
        supplier_reference=po.supplier_reference,
        lines=[SupplierLineOut.of(ln) for ln in po.lines if ln.status == "open"],
        created_at=po.created_at,
    )


def shipment_out(s: Shipment) -> ShipmentOut:
    return ShipmentOut(
        id=s.id,
        purchase_order_id=s.purchase_order_id,
        carrier=s.carrier,
        tracking_number=s.tracking_number,
        tracking_url=s.tracking_url,
        status=s.status,
        shipped_at=s.shipped_at,
        delivered_at=s.delivered_at,
    )


async def _own_po(
    session: AsyncSession, supplier: Supplier, po_id: uuid.UUID, dialect: str
) -> PurchaseOrder:
    po = await service.load(session, po_id, lock=True, dialect=dialect)
    # Pending is not handed over yet: acting on it would race its placement.
    if po is None or po.supplier_id != supplier.id or po.status == POStatus.PENDING:
        raise NotFoundException(f"purchase order {po_id} not found")
    return po


@contextlib.contextmanager
def _as_http_errors() -> Iterator[None]:
    """Purchase-order rule violations as HTTP answers: bad input 400 (naming the field), a
    state that forbids the operation 409."""
    try:
        yield
    except service.PurchaseOrderInputError as exc:
        raise ClientException(str(exc), extra={"field": exc.field}) from exc
    except service.PurchaseOrderConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc


_PO_NOT_FOUND = "No purchase order with this id routed to you."
_PO_CONFLICT = "the purchase order's state does not allow this (e.g. already shipped or cancelled)"


class SupplierApiController(Controller):
    path = "/supplier/v1"
    tags = ["supplier API"]
    security = SUPPLIER_SECURITY
    dependencies = {"supplier": Provide(provide_supplier)}

    @get(
        "/orders",
        summary="Purchase orders routed to you (status=pending: awaiting your answer)",
        **operation(
            "supplierListOrders",
            "The purchase orders routed to you, oldest first. `status=pending`: those waiting "
            "for your answer (accept or reject); `status=open`: those not finished yet.",
            api="supplier",
        ),
    )
    async def list_orders(
        self,
        db_session: NamedDependency[AsyncSession],
        supplier: NamedDependency[Supplier],
        status: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[SupplierOrderOut]:
        query = (
            select(PurchaseOrder)
            .where(PurchaseOrder.supplier_id == supplier.id)
            .options(selectinload(PurchaseOrder.lines))
        )
        statuses = STATUS_ALIASES.get(status, (status,)) if status else VISIBLE
        if not set(statuses) <= set(POStatus.ALL):
            raise ClientException(
                f"status: one of pending, open, {', '.join(VISIBLE)}", extra={"field": "status"}
            )
        query = query.where(PurchaseOrder.status.in_([s for s in statuses if s in VISIBLE]))
        return await keyset_page(
            db_session,
            query,
            PurchaseOrder.created_at,
            PurchaseOrder.id,
            cursor=cursor,
            limit=limit,
            shape=supplier_view,
            oldest_first=True,
        )

    @get(
        "/orders/{po_id:uuid}",
        summary="One purchase order routed to you",
        **operation(
            "supplierGetOrder",
            "One purchase order routed to you: what to ship, where, by which method.",
            api="supplier",
            invalid=None,  # a path id only: a malformed one is a 404
            not_found=_PO_NOT_FOUND,
        ),
    )
    async def get_order(
        self,
        db_session: NamedDependency[AsyncSession],
        supplier: NamedDependency[Supplier],
        po_id: FromPath[uuid.UUID],
    ) -> SupplierOrderOut:
        po = await service.load(db_session, po_id)
        # Not yet handed over (pending) is not yet theirs to see, as in the list.
        if po is None or po.supplier_id != supplier.id or po.status == POStatus.PENDING:
            raise NotFoundException(f"purchase order {po_id} not found")
        return supplier_view(po)

    @post(
        "/orders/{po_id:uuid}/accept",
        status_code=200,
        summary="Accept a purchase order",
        **operation(
            "supplierAcceptOrder",
            "Accept a purchase order, optionally with your own reference for it. Accepting "
            "twice is harmless.",
            api="supplier",
            method="POST",
            not_found=_PO_NOT_FOUND,
            conflict=_PO_CONFLICT,
        ),
    )
    async def accept(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        supplier: NamedDependency[Supplier],
        po_id: FromPath[uuid.UUID],
        data: JSONBody[AcceptIn | None] = None,
    ) -> SupplierOrderOut:
        dialect = request.app.state.services.db.dialect
        po = await _own_po(db_session, supplier, po_id, dialect)
        reference = data.supplier_reference if data else None
        if po.status == POStatus.ACCEPTED and reference in (None, po.supplier_reference):
            return supplier_view(po)  # accepting twice is harmless
        with _as_http_errors():
            po.supplier_reference = reference or po.supplier_reference
            await service.transition(
                db_session,
                po,
                POStatus.ACCEPTED,
                "accepted by supplier" + (f" (reference {reference})" if reference else ""),
            )
        return supplier_view(po)

    @post(
        "/orders/{po_id:uuid}/reject",
        status_code=200,
        summary="Reject a purchase order or some of its lines: they go to the next supplier",
        **operation(
            "supplierRejectOrder",
            "Reject a purchase order, or only some of its lines (`lines`), with the reason: "
            "those lines go to the next supplier.",
            api="supplier",
            method="POST",
            not_found=_PO_NOT_FOUND,
            conflict=_PO_CONFLICT,
        ),
    )
    async def reject(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        supplier: NamedDependency[Supplier],
        po_id: FromPath[uuid.UUID],
        data: JSONBody[RejectIn],
    ) -> SupplierOrderOut:
        dialect = request.app.state.services.db.dialect
        po = await _own_po(db_session, supplier, po_id, dialect)
        with _as_http_errors():
            await service.reject(db_session, po, data.reason, data.lines or None)
        return supplier_view(po)

    @post(
        "/orders/{po_id:uuid}/shipments",
        status_code=201,
        summary="Report a shipment (partial allowed; no lines = everything still owed)",
        **operation(
            "supplierCreateShipment",
            "Report a shipment with its carrier and tracking number: some lines (SKU and "
            "quantity, never more than owed) or, without `lines`, everything still owed.",
            api="supplier",
            method="POST",
            not_found=_PO_NOT_FOUND,
            conflict=_PO_CONFLICT,
        ),
    )
    async def ship(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        supplier: NamedDependency[Supplier],
        po_id: FromPath[uuid.UUID],
        data: JSONBody[ShipmentIn],
    ) -> ShipmentOut:
        dialect = request.app.state.services.db.dialect
        po = await _own_po(db_session, supplier, po_id, dialect)
        with _as_http_errors():
            shipment, _ = await service.add_shipment(
                db_session,
                po,
                carrier=data.carrier,
                tracking_number=data.tracking_number,
                tracking_url=data.tracking_url,
                lines=[service.ShipmentLineInput(x.sku, x.quantity) for x in data.lines],
                shipped_at=data.shipped_at,
            )
        return shipment_out(shipment)

    @post(
        "/shipments/{shipment_id:uuid}/events",
        status_code=201,
        summary="Tracking events",
        **operation(
            "supplierAddTrackingEvent",
            "Report what happened to one of your shipments (in transit, delivered...), with "
            "when it happened (with a UTC offset).",
            api="supplier",
            method="POST",
            not_found="No shipment with this id among yours.",
            conflict="the shipment's state does not allow this event",
        ),
    )
    async def tracking_event(
        self,
        db_session: NamedDependency[AsyncSession],
        supplier: NamedDependency[Supplier],
        shipment_id: FromPath[uuid.UUID],
        data: JSONBody[TrackingEventIn],
    ) -> ShipmentOut:
        shipment = await db_session.scalar(
            select(Shipment)
            .join(PurchaseOrder, PurchaseOrder.id == Shipment.purchase_order_id)
            .where(Shipment.id == shipment_id, PurchaseOrder.supplier_id == supplier.id)
        )
        if shipment is None:
            raise NotFoundException(f"shipment {shipment_id} not found")
        with _as_http_errors():
            await service.add_tracking_event(
                db_session, shipment, data.status, data.occurred_at, data.description
            )
        return shipment_out(shipment)

    @put(
        "/inventory",
        status_code=200,
        summary="Stock and cost by SKU, up to 10,000 rows",
        **operation(
            "supplierUpdateInventory",
            "Set your stock (and optionally unit cost) by SKU, yours or the merchant's, up to "
            "10,000 rows a call; unknown SKUs are listed in the answer, not an error.",
            api="supplier",
            method="PUT",
        ),
    )
    async def inventory(
        self,
        db_session: NamedDependency[AsyncSession],
        supplier: NamedDependency[Supplier],
        data: JSONBody[list[InventoryRow]],
    ) -> InventoryReport:
        if len(data) > MAX_INVENTORY_ROWS:
            raise ClientException(
                f"body: at most {MAX_INVENTORY_ROWS} rows per call, got {len(data)}",
                extra={"field": "body"},
            )
        products = {
            key: pid
            for pid, sku, supplier_sku in (
                await db_session.execute(
                    select(
                        SupplierProduct.id, SupplierProduct.sku, SupplierProduct.supplier_sku
                    ).where(SupplierProduct.supplier_id == supplier.id)
                )
            ).all()
            for key in (supplier_sku, sku)
        }
        unknown: list[str] = []
        updates: list[dict[str, Any]] = []
        for row in data:
            pid = products.get(row.sku)
            if pid is None:
                unknown.append(row.sku)
                continue
            values: dict[str, Any] = {"b_id": pid, "stock": row.quantity}
            updates.append(
                values | ({"unit_cost": row.unit_cost} if row.unit_cost is not None else {})
            )
        # Several rows for one product (by either SKU): the last stock and the last cost given
        # win, whatever the order of the two statements below.
        merged: dict[uuid.UUID, dict[str, Any]] = {}
        for u in updates:
            merged.setdefault(u["b_id"], {}).update(u)
        updates = list(merged.values())
        with_cost = [u for u in updates if "unit_cost" in u]
        stock_only = [u for u in updates if "unit_cost" not in u]
        table = cast(Table, SupplierProduct.__table__)
        now = utcnow()
        if with_cost:
            await db_session.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(stock=bindparam("stock"), unit_cost=bindparam("unit_cost"), updated_at=now),
                with_cost,
            )
        if stock_only:
            await db_session.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(stock=bindparam("stock"), updated_at=now),
                stock_only,
            )
        return InventoryReport(updated=len(updates), unknown=unknown)
