"""The supplier API (``/supplier/v1``): suppliers who pull their purchase orders and report back.

A supplier authenticates with its own key and sees only purchase orders routed to it, and only
what it needs to ship them.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath, FromQuery, JSONBody

from app import limits
from app.api.deps import bearer_token
from app.api.openapi import SUPPLIER_SECURITY, operation
from app.api.pagination import DEFAULT_LIMIT, Page
from app.cancellations import service as cancellations
from app.db import DbSession
from app.errors import InvalidInput
from app.purchasing import service
from app.purchasing.models import PurchaseOrder
from app.purchasing.schemas import (
    AcceptIn,
    CancellationAnswerIn,
    InventoryReport,
    InventoryRow,
    RejectIn,
    ShipmentIn,
    ShipmentOut,
    SupplierLineOut,
    SupplierOrderOut,
    TrackingEventIn,
)
from app.purchasing.tasks import place_all
from app.routing import service as routing
from app.suppliers import service as suppliers
from app.suppliers.models import Supplier

#: Rows per call; each row's values are checked by ``InventoryRow``.
MAX_INVENTORY_ROWS = limits.MAX_ROWS
_INVALID_KEY = {"WWW-Authenticate": 'Bearer realm="dropship", error="invalid_token"'}


async def provide_supplier(
    request: Request[Any, Any, Any], db_session: NamedDependency[DbSession]
) -> Supplier:
    try:
        supplier = await suppliers.authenticate_supplier(db_session, bearer_token(request))
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
        cancellation_requested_at=po.cancellation_requested_at,
    )


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
        db_session: NamedDependency[DbSession],
        supplier: NamedDependency[Supplier],
        status: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[SupplierOrderOut]:
        page = await service.page_for_supplier(
            db_session, supplier.id, status, cursor=cursor, limit=limit
        )
        return page.map(supplier_view)

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
        db_session: NamedDependency[DbSession],
        supplier: NamedDependency[Supplier],
        po_id: FromPath[uuid.UUID],
    ) -> SupplierOrderOut:
        return supplier_view(await service.load_for_supplier(db_session, supplier.id, po_id))

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
        db_session: NamedDependency[DbSession],
        supplier: NamedDependency[Supplier],
        po_id: FromPath[uuid.UUID],
        data: JSONBody[AcceptIn | None] = None,
    ) -> SupplierOrderOut:
        po = await service.load_for_supplier(db_session, supplier.id, po_id, lock=True)
        await service.accept(db_session, po, data.supplier_reference if data else None)
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
        db_session: NamedDependency[DbSession],
        supplier: NamedDependency[Supplier],
        po_id: FromPath[uuid.UUID],
        data: JSONBody[RejectIn],
    ) -> SupplierOrderOut:
        po = await service.load_for_supplier(db_session, supplier.id, po_id, lock=True)
        created = await routing.supplier_rejected(db_session, po, data.reason, data.lines or None)
        await place_all(db_session, created)
        return supplier_view(po)

    @post(
        "/orders/{po_id:uuid}/cancellation",
        status_code=200,
        summary="Answer a cancellation: accepted, or not (already shipped)",
        **operation(
            "supplierAnswerCancellation",
            "The merchant asked you not to ship a purchase order (its "
            '`cancellation_requested_at` is set): `{"accepted": true}` if you will not ship '
            'what is still unshipped, `{"accepted": false, "reason": "already shipped"}` '
            "otherwise. The same answer twice is harmless.",
            api="supplier",
            method="POST",
            not_found=_PO_NOT_FOUND,
            conflict="no cancellation was asked, it was answered otherwise already, or the "
            "purchase order has shipped (answer accepted=false)",
        ),
    )
    async def answer_cancellation(
        self,
        db_session: NamedDependency[DbSession],
        supplier: NamedDependency[Supplier],
        po_id: FromPath[uuid.UUID],
        data: JSONBody[CancellationAnswerIn],
    ) -> SupplierOrderOut:
        po = await cancellations.answer_for_supplier(
            db_session, supplier.id, po_id, data.accepted, data.reason
        )
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
        db_session: NamedDependency[DbSession],
        supplier: NamedDependency[Supplier],
        po_id: FromPath[uuid.UUID],
        data: JSONBody[ShipmentIn],
    ) -> ShipmentOut:
        po = await service.load_for_supplier(db_session, supplier.id, po_id, lock=True)
        shipment, _ = await service.add_shipment(
            db_session,
            po,
            carrier=data.carrier,
            tracking_number=data.tracking_number,
            tracking_url=data.tracking_url,
            lines=[service.ShipmentLineInput(x.sku, x.quantity) for x in data.lines],
            shipped_at=data.shipped_at,
        )
        return ShipmentOut.of(shipment)

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
        db_session: NamedDependency[DbSession],
        supplier: NamedDependency[Supplier],
        shipment_id: FromPath[uuid.UUID],
        data: JSONBody[TrackingEventIn],
    ) -> ShipmentOut:
        shipment = await service.shipment_for_supplier(db_session, supplier.id, shipment_id)
        await service.add_tracking_event(
            db_session,
            shipment,
            data.status,
            data.occurred_at,
            data.description,
            location=data.location,
            estimated_delivery_at=data.estimated_delivery_at,
        )
        return ShipmentOut.of(shipment)

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
        db_session: NamedDependency[DbSession],
        supplier: NamedDependency[Supplier],
        data: JSONBody[list[InventoryRow]],
    ) -> InventoryReport:
        if len(data) > MAX_INVENTORY_ROWS:
            raise InvalidInput(
                f"at most {MAX_INVENTORY_ROWS} rows per call, got {len(data)}", field="body"
            )
        updated, unknown = await suppliers.report_inventory(
            db_session, supplier.id, [(row.sku, row.quantity, row.unit_cost) for row in data]
        )
        return InventoryReport(updated=updated, unknown=unknown)
