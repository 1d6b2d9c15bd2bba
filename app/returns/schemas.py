"""Request and answer shapes of returns: the merchant API, the supplier API, the tracking page."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from app import limits
from app.inputs import Input, ShortText
from app.returns.models import Return, ReturnLine

#: A return's reason, a rejection's reason.
Reason = Annotated[str, Meta(min_length=1, max_length=1_000)]
Quantity = Annotated[int, Meta(ge=1, le=limits.MAX_LINE_QUANTITY)]
Condition = Literal["resellable", "damaged"]


class ReturnLineIn(Input):
    line_id: uuid.UUID
    quantity: Quantity


class ExchangeIn(Input):
    """The replacement: a SKU of the catalog, or a Shopify variant id (as a string or a
    number) whose SKU is known from the store's orders."""

    sku: ShortText | None = None
    variant_id: Annotated[str, Meta(pattern=r"^[0-9]{1,20}$")] | int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.sku is None) == (self.variant_id is None):
            raise ValueError("sku: give sku or variant_id (one of them)")
        if self.variant_id is not None and not 0 < int(self.variant_id) <= limits.MAX_SHOPIFY_ID:
            raise ValueError("variant_id: a Shopify variant id")


class ReturnRequestIn(Input):
    lines: Annotated[list[ReturnLineIn], Meta(min_length=1, max_length=limits.MAX_LINES)]
    reason: Reason
    exchange: ExchangeIn | None = None


class RejectReturnIn(Input):
    reason: Reason


class ReceiveReturnIn(Input):
    condition: Condition


class CustomerReturnLineIn(Input):
    item: Annotated[
        int, Meta(ge=1, le=limits.MAX_LINES, description="the item's number on the page, 1 first")
    ]
    quantity: Quantity


class CustomerReturnIn(Input):
    lines: Annotated[list[CustomerReturnLineIn], Meta(min_length=1, max_length=limits.MAX_LINES)]
    reason: Reason


class ReturnLineOut(msgspec.Struct):
    id: uuid.UUID
    order_line_id: uuid.UUID
    purchase_order_line_id: uuid.UUID
    sku: str
    supplier_sku: str
    title: str
    quantity: int

    @classmethod
    def of(cls, ln: ReturnLine) -> ReturnLineOut:
        return cls(
            ln.id,
            ln.order_line_id,
            ln.purchase_order_line_id,
            ln.sku,
            ln.supplier_sku,
            ln.title,
            ln.quantity,
        )


class ReturnOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    number: str
    status: Annotated[str, Meta(description="requested | approved | rejected | received")]
    origin: Annotated[str, Meta(description="merchant | customer | cancellation")]
    order_id: uuid.UUID
    purchase_order_id: uuid.UUID
    supplier_id: uuid.UUID
    reason: str
    rejection_reason: str | None
    exchange: bool
    exchange_sku: str | None
    exchange_variant_id: str | None
    replacement_order_id: uuid.UUID | None
    return_address: dict[str, Any] | None
    label_url: str | None
    supplier_reference: str | None
    instructions: str | None
    condition: str | None
    received_by: str | None
    requested_at: datetime
    approved_at: datetime | None
    authorized_at: datetime | None
    rejected_at: datetime | None
    received_at: datetime | None
    lines: list[ReturnLineOut]

    @classmethod
    def of(cls, r: Return) -> ReturnOut:
        return cls(
            id=r.id,
            number=r.number,
            status=r.status,
            origin=r.origin,
            order_id=r.order_id,
            purchase_order_id=r.purchase_order_id,
            supplier_id=r.supplier_id,
            reason=r.reason,
            rejection_reason=r.rejection_reason,
            exchange=r.exchange,
            exchange_sku=r.exchange_sku,
            exchange_variant_id=r.exchange_variant_id,
            replacement_order_id=r.replacement_order_id,
            return_address=r.return_address,
            label_url=r.label_url,
            supplier_reference=r.supplier_reference,
            instructions=r.instructions,
            condition=r.condition,
            received_by=r.received_by,
            requested_at=r.requested_at,
            approved_at=r.approved_at,
            authorized_at=r.authorized_at,
            rejected_at=r.rejected_at,
            received_at=r.received_at,
            lines=[ReturnLineOut.of(ln) for ln in r.lines],
        )


class ReturnsCreated(msgspec.Struct):
    """The returns a request created: one per purchase order (supplier)."""

    returns: list[ReturnOut]


class SupplierReturnLineOut(msgspec.Struct):
    sku: str
    supplier_sku: str
    quantity: int


class SupplierReturnOut(msgspec.Struct, kw_only=True):
    """A return coming to the supplier: what comes back for which of its purchase orders (no
    customer contact details, no prices)."""

    id: uuid.UUID
    number: str
    status: str
    purchase_order_id: uuid.UUID
    reason: str
    supplier_reference: str | None
    condition: str | None
    approved_at: datetime | None
    received_at: datetime | None
    lines: list[SupplierReturnLineOut]

    @classmethod
    def of(cls, r: Return) -> SupplierReturnOut:
        return cls(
            id=r.id,
            number=r.number,
            status=r.status,
            purchase_order_id=r.purchase_order_id,
            reason=r.reason,
            supplier_reference=r.supplier_reference,
            condition=r.condition,
            approved_at=r.approved_at,
            received_at=r.received_at,
            lines=[SupplierReturnLineOut(ln.sku, ln.supplier_sku, ln.quantity) for ln in r.lines],
        )


class CustomerReturnItemOut(msgspec.Struct):
    title: str
    quantity: int


class CustomerReturnOut(msgspec.Struct):
    """A return as the customer sees it: its number, where it stands, what comes back."""

    number: str
    status: str
    items: list[CustomerReturnItemOut]

    @classmethod
    def of(cls, r: Return) -> CustomerReturnOut:
        return cls(
            r.number, r.status, [CustomerReturnItemOut(ln.title, ln.quantity) for ln in r.lines]
        )


class CustomerReturnsCreated(msgspec.Struct):
    returns: list[CustomerReturnOut]
