from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app.purchasing.models import PurchaseOrderLine


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


class AcceptIn(msgspec.Struct, forbid_unknown_fields=True):
    supplier_reference: Annotated[str, Meta(max_length=255)] | None = None


class RejectIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(min_length=1, max_length=1000)]
    lines: list[str] = []


class ShipmentLineIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Annotated[str, Meta(min_length=1)]
    quantity: Annotated[int, Meta(gt=0)]


class ShipmentIn(msgspec.Struct, forbid_unknown_fields=True):
    tracking_number: Annotated[str, Meta(min_length=1, max_length=255)]
    carrier: Annotated[str, Meta(max_length=100)] | None = None
    tracking_url: Annotated[str, Meta(max_length=1024)] | None = None
    lines: list[ShipmentLineIn] = []
    shipped_at: datetime | None = None


class ShipmentOut(msgspec.Struct):
    id: uuid.UUID
    purchase_order_id: uuid.UUID
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None
    status: str
    shipped_at: datetime
    delivered_at: datetime | None


class TrackingEventIn(msgspec.Struct, forbid_unknown_fields=True):
    status: str
    occurred_at: datetime
    description: str | None = None


class InventoryRow(msgspec.Struct, forbid_unknown_fields=True):
    sku: Annotated[str, Meta(min_length=1)]
    quantity: Annotated[int, Meta(ge=0)]
    unit_cost: Decimal | None = None


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
