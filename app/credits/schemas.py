from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

import msgspec
from msgspec import Meta

from app.codes import wire_amount
from app.credits.models import SupplierCredit
from app.credits.service import CreditsView, SupplierTotal
from app.inputs import Input


class SupplierCreditOut(msgspec.Struct):
    id: uuid.UUID
    supplier_id: uuid.UUID
    purchase_order_id: uuid.UUID | None
    kind: str
    source_key: str
    amount: Decimal
    currency: str
    status: str
    settled_at: datetime | None
    note: str | None
    created_at: datetime

    @classmethod
    def of(cls, c: SupplierCredit) -> SupplierCreditOut:
        return cls(
            id=c.id,
            supplier_id=c.supplier_id,
            purchase_order_id=c.purchase_order_id,
            kind=c.kind,
            source_key=c.source_key,
            amount=wire_amount(c.amount, c.currency),
            currency=c.currency,
            status=c.status,
            settled_at=c.settled_at,
            note=c.note,
            created_at=c.created_at,
        )


class SupplierTotalOut(msgspec.Struct):
    """What one supplier owes in one currency (``expected``), and what it settled."""

    supplier_id: uuid.UUID
    supplier_name: str
    currency: str
    expected: Decimal
    settled: Decimal

    @classmethod
    def of(cls, t: SupplierTotal) -> SupplierTotalOut:
        return cls(
            supplier_id=t.supplier_id,
            supplier_name=t.supplier_name,
            currency=t.currency,
            expected=wire_amount(t.expected, t.currency),
            settled=wire_amount(t.settled, t.currency),
        )


class SupplierCreditsOut(msgspec.Struct):
    totals: list[SupplierTotalOut]
    items: list[SupplierCreditOut]
    next_cursor: str | None

    @classmethod
    def of(cls, v: CreditsView) -> SupplierCreditsOut:
        return cls(
            totals=[SupplierTotalOut.of(t) for t in v.totals],
            items=[SupplierCreditOut.of(c) for c in v.page.items],
            next_cursor=v.page.next_cursor,
        )


class SettleIn(Input):
    note: Annotated[str, Meta(max_length=1000)] | None = None
