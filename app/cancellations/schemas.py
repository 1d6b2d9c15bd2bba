from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app.cancellations.models import PurchaseOrderCancellation
from app.cancellations.service import CancellationView
from app.inputs import Input
from app.purchasing.models import PurchaseOrder

Reason = Annotated[str, Meta(min_length=1, max_length=1000)]


class CancelIn(Input):
    reason: Reason = "cancelled by the merchant"


class CustomerCancelIn(Input):
    reason: Annotated[str, Meta(max_length=1000)] = ""


class POCancellationOut(msgspec.Struct):
    purchase_order_id: uuid.UUID
    number: str
    supplier_id: uuid.UUID
    #: ``requested``, ``awaiting_supplier``, ``needs_merchant``, ``cancelled``, ``refused``.
    status: str
    detail: str | None
    attempts: int
    #: What it cancelled, and what shipped (or will: a return).
    cancelled_lines: list[dict[str, Any]]
    refused_lines: list[dict[str, Any]]
    resolved_at: datetime | None

    @classmethod
    def of(cls, c: PurchaseOrderCancellation, po: PurchaseOrder) -> POCancellationOut:
        return cls(
            purchase_order_id=po.id,
            number=po.number,
            supplier_id=po.supplier_id,
            status=c.status,
            detail=c.detail,
            attempts=c.attempts,
            cancelled_lines=list(c.lines or []),
            refused_lines=list(c.refused_lines or []),
            resolved_at=c.resolved_at,
        )


class CancellationOut(msgspec.Struct):
    order_id: uuid.UUID
    #: ``in_progress`` (waiting for suppliers) or ``cancelled``.
    status: str
    origin: str
    reason: str
    order_status: str
    requested_at: datetime
    completed_at: datetime | None
    purchase_orders: list[POCancellationOut]

    @classmethod
    def of(cls, v: CancellationView) -> CancellationOut:
        c = v.cancellation
        return cls(
            order_id=v.order.id,
            status=c.status,
            origin=c.origin,
            reason=c.reason,
            order_status=v.order.status,
            requested_at=c.created_at,
            completed_at=c.completed_at,
            purchase_orders=[POCancellationOut.of(pc, po) for pc, po in v.purchase_orders],
        )
