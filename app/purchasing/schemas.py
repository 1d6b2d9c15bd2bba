from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from app import limits
from app.codes import wire_amount
from app.inputs import (
    Amount,
    Input,
    LongText,
    OptionalText,
    ShortText,
    Timestamp,
    Url,
    check_amount,
    check_datetime,
)
from app.purchasing.models import PurchaseOrder, PurchaseOrderLine, Shipment


def _in_currency(total: Decimal, lines: list[SupplierLineOut], currency: str) -> Decimal:
    """A purchase order's amounts in its currency's minor units (see ``wire_amount``): the
    lines' unit costs in place, the total returned."""
    for ln in lines:
        ln.unit_cost = wire_amount(ln.unit_cost, currency)
    return wire_amount(total, currency)


class SupplierLineOut(msgspec.Struct):
    supplier_sku: str
    sku: str
    quantity: int
    quantity_shipped: int
    unit_cost: Decimal

    @classmethod
    def of(cls, ln: PurchaseOrderLine) -> SupplierLineOut:
        return cls(
            supplier_sku=ln.supplier_sku,
            sku=ln.sku,
            quantity=ln.quantity,
            quantity_shipped=ln.quantity_shipped,
            unit_cost=ln.unit_cost,
        )


class SupplierOrderOut(msgspec.Struct):
    """A purchase order as its supplier sees it: what to ship where, and what we pay.
    No customer email, no retail prices."""

    id: uuid.UUID
    number: str
    status: str
    currency: str
    total_cost: Decimal
    ship_to: dict[str, Any]
    shipping_method: str | None
    supplier_reference: str | None
    lines: list[SupplierLineOut]
    created_at: datetime
    #: Set when the merchant asked you not to ship: answer ``POST …/{id}/cancellation``.
    cancellation_requested_at: datetime | None = None

    def __post_init__(self) -> None:
        self.total_cost = _in_currency(self.total_cost, self.lines, self.currency)


class CancellationAnswerIn(Input):
    """Your answer to a cancellation: ``accepted`` (you will not ship what is unshipped), or
    not, with the reason (``already shipped``)."""

    accepted: bool
    reason: Annotated[str, Meta(min_length=1, max_length=1000)] | None = None


class AcceptIn(Input):
    supplier_reference: OptionalText = None


class RejectIn(Input):
    reason: Annotated[str, Meta(min_length=1, max_length=1000)]
    #: SKUs (yours or ours) of the lines rejected; none: the whole purchase order.
    lines: Annotated[list[ShortText], Meta(max_length=limits.MAX_LINES)] = []


class ShipmentLineIn(Input):
    sku: ShortText
    quantity: Annotated[int, Meta(ge=1, le=limits.MAX_LINE_QUANTITY)]


class ShipmentIn(Input):
    tracking_number: ShortText
    carrier: Annotated[str, Meta(max_length=100)] | None = None
    tracking_url: Url | None = None
    lines: Annotated[list[ShipmentLineIn], Meta(max_length=limits.MAX_LINES)] = []
    shipped_at: Timestamp | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_datetime("shipped_at", self.shipped_at)
        if self.tracking_url is not None:
            # Shown to customers as a link: nothing but a web address (no javascript:, data:).
            url = urlsplit(self.tracking_url)
            if url.scheme.lower() not in ("http", "https") or not url.netloc:
                raise ValueError("tracking_url: must be an http(s) URL")


class ShipmentOut(msgspec.Struct):
    id: uuid.UUID
    purchase_order_id: uuid.UUID
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None
    status: str
    shipped_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, s: Shipment) -> ShipmentOut:
        return cls(
            id=s.id,
            purchase_order_id=s.purchase_order_id,
            carrier=s.carrier,
            tracking_number=s.tracking_number,
            tracking_url=s.tracking_url,
            status=s.status,
            shipped_at=s.shipped_at,
            delivered_at=s.delivered_at,
        )


class TrackingEventIn(Input):
    status: Annotated[str, Meta(min_length=1, max_length=32)]
    occurred_at: Timestamp
    description: LongText | None = None
    #: Where it happened: a city, a country (never a street address).
    location: OptionalText = None
    #: When the carrier now expects the parcel, if it says.
    estimated_delivery_at: Timestamp | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_datetime("occurred_at", self.occurred_at)
        check_datetime("estimated_delivery_at", self.estimated_delivery_at)


class InventoryRow(Input):
    sku: ShortText
    quantity: Annotated[int, Meta(ge=0, le=limits.MAX_STOCK)]
    unit_cost: Amount | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.unit_cost is not None:
            check_amount("unit_cost", self.unit_cost)


class InventoryReport(msgspec.Struct):
    updated: int
    unknown: list[str]


class PurchaseOrderOut(msgspec.Struct):
    """A purchase order as the merchant sees it."""

    id: uuid.UUID
    order_id: uuid.UUID
    supplier_id: uuid.UUID
    number: str
    status: str
    currency: str
    total_cost: Decimal
    supplier_reference: str | None
    attempts: int
    last_error: str | None
    placed_at: datetime | None
    accepted_at: datetime | None
    dead_lettered_at: datetime | None
    lines: list[SupplierLineOut]
    created_at: datetime
    #: When a cancellation was asked of its supplier.
    cancellation_requested_at: datetime | None = None

    def __post_init__(self) -> None:
        self.total_cost = _in_currency(self.total_cost, self.lines, self.currency)

    @classmethod
    def of(cls, po: PurchaseOrder) -> PurchaseOrderOut:
        return cls(
            id=po.id,
            order_id=po.order_id,
            supplier_id=po.supplier_id,
            number=po.number,
            status=po.status,
            currency=po.currency,
            total_cost=po.total_cost,
            supplier_reference=po.supplier_reference,
            attempts=po.attempts,
            last_error=po.last_error,
            placed_at=po.placed_at,
            accepted_at=po.accepted_at,
            dead_lettered_at=po.dead_lettered_at,
            lines=[SupplierLineOut.of(ln) for ln in po.lines],
            created_at=po.created_at,
            cancellation_requested_at=po.cancellation_requested_at,
        )


class OrderPurchaseOrder(msgspec.Struct):
    """A purchase order inside the merchant's order view, with its shipments."""

    id: uuid.UUID
    supplier_id: uuid.UUID
    number: str
    status: str
    currency: str
    total_cost: Decimal
    supplier_reference: str | None
    last_error: str | None
    lines: list[SupplierLineOut]
    shipments: list[ShipmentOut]

    def __post_init__(self) -> None:
        self.total_cost = _in_currency(self.total_cost, self.lines, self.currency)

    @classmethod
    def of(cls, po: PurchaseOrder, shipments: list[Shipment]) -> OrderPurchaseOrder:
        return cls(
            id=po.id,
            supplier_id=po.supplier_id,
            number=po.number,
            status=po.status,
            currency=po.currency,
            total_cost=po.total_cost,
            supplier_reference=po.supplier_reference,
            last_error=po.last_error,
            lines=[SupplierLineOut.of(ln) for ln in po.lines],
            shipments=[ShipmentOut.of(sh) for sh in shipments],
        )
