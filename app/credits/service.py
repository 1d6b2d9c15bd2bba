"""Supplier credits: created once per source (a cancelled purchase order, a received return),
listed with what each supplier owes, settled by the merchant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.pagination import Page, rows_page
from app.credits.models import CreditKind, CreditStatus, SupplierCredit
from app.db import insert_for, utcnow, uuid7
from app.errors import Conflict, InvalidInput, NotFound
from app.purchasing.models import PurchaseOrder, PurchaseOrderLine
from app.suppliers.models import Supplier


async def add_credit(
    session: AsyncSession,
    *,
    merchant_id: uuid.UUID,
    supplier_id: uuid.UUID,
    purchase_order_id: uuid.UUID | None,
    kind: str,
    source_key: str,
    amount: Decimal,
    currency: str,
    note: str | None = None,
) -> uuid.UUID | None:
    """The credit of ``source_key``, once (a repeated key is a no-op); its id, or None."""
    now = utcnow()
    result = await session.execute(
        insert_for(session)(SupplierCredit)
        .values(
            id=uuid7(),
            merchant_id=merchant_id,
            supplier_id=supplier_id,
            purchase_order_id=purchase_order_id,
            kind=kind,
            source_key=source_key,
            amount=amount,
            currency=currency,
            status=CreditStatus.EXPECTED,
            note=note,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["merchant_id", "source_key"])
        .returning(SupplierCredit.id)
    )
    credit_id: uuid.UUID | None = result.scalar_one_or_none()
    return credit_id


async def credit_for_return(
    session: AsyncSession, merchant_id: uuid.UUID, data: dict[str, Any]
) -> uuid.UUID | None:
    """``return.received``: the supplier owes the cost of the returned lines (their purchase
    order lines' unit cost), in the purchase order's currency."""
    return_id = data.get("return_id")
    lines = data.get("lines") or []
    if not return_id or not isinstance(lines, list):
        return None
    wanted: dict[uuid.UUID, int] = {}
    for ref in lines:
        try:
            pol = uuid.UUID(str(ref.get("purchase_order_line_id")))
            qty = int(ref.get("quantity") or 0)
        except (AttributeError, TypeError, ValueError):
            continue
        if qty > 0:
            wanted[pol] = wanted.get(pol, 0) + qty
    if not wanted:
        return None
    rows = (
        await session.execute(
            select(PurchaseOrderLine, PurchaseOrder)
            .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.purchase_order_id)
            .where(PurchaseOrderLine.id.in_(wanted), PurchaseOrder.merchant_id == merchant_id)
        )
    ).all()
    if not rows:
        return None
    po = rows[0][1]
    amount = sum((ln.unit_cost * wanted[ln.id] for ln, _ in rows), Decimal("0"))
    return await add_credit(
        session,
        merchant_id=merchant_id,
        supplier_id=po.supplier_id,
        purchase_order_id=po.id,
        kind=CreditKind.RETURN,
        source_key=f"return:{return_id}",
        amount=amount,
        currency=po.currency,
        note=f"return {data.get('number') or return_id} of {po.number} received"
        + (f" ({data['condition']})" if data.get("condition") else ""),
    )


@dataclass(frozen=True)
class SupplierTotal:
    supplier_id: uuid.UUID
    supplier_name: str
    currency: str
    expected: Decimal
    settled: Decimal


@dataclass
class CreditsView:
    totals: list[SupplierTotal]
    page: Page[SupplierCredit]


async def list_credits(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    *,
    status: str | None,
    supplier_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> CreditsView:
    """The merchant's credits (newest first, filtered) and, per supplier and currency, what is
    expected (owed) and what was settled."""
    if status is not None and status not in CreditStatus.ALL:
        raise InvalidInput(f"one of {', '.join(CreditStatus.ALL)}", field="status")
    query = select(SupplierCredit).where(SupplierCredit.merchant_id == merchant_id)
    totals_q = (
        select(
            SupplierCredit.supplier_id,
            Supplier.name,
            SupplierCredit.currency,
            SupplierCredit.status,
            func.sum(SupplierCredit.amount),
        )
        .join(Supplier, Supplier.id == SupplierCredit.supplier_id)
        .where(SupplierCredit.merchant_id == merchant_id)
        .group_by(
            SupplierCredit.supplier_id,
            Supplier.name,
            SupplierCredit.currency,
            SupplierCredit.status,
        )
    )
    if status is not None:
        query = query.where(SupplierCredit.status == status)
    if supplier_id is not None:
        query = query.where(SupplierCredit.supplier_id == supplier_id)
        totals_q = totals_q.where(SupplierCredit.supplier_id == supplier_id)
    page = await rows_page(
        session, query, SupplierCredit.created_at, SupplierCredit.id, cursor=cursor, limit=limit
    )
    sums: dict[tuple[uuid.UUID, str, str], dict[str, Decimal]] = {}
    for sid, name, currency, state, total in (await session.execute(totals_q)).all():
        entry = sums.setdefault((sid, name, currency), {})
        entry[state] = Decimal(total or 0)
    totals = [
        SupplierTotal(
            sid,
            name,
            currency,
            v.get(CreditStatus.EXPECTED, Decimal("0")),
            v.get(CreditStatus.SETTLED, Decimal("0")),
        )
        for (sid, name, currency), v in sorted(sums.items(), key=lambda kv: (kv[0][1], kv[0][2]))
    ]
    return CreditsView(totals, page)


async def settle(
    session: AsyncSession, merchant_id: uuid.UUID, credit_id: uuid.UUID, note: str | None
) -> SupplierCredit:
    """The supplier paid (or credited) it; 409 if it was settled already."""
    credit: SupplierCredit | None = await session.scalar(
        select(SupplierCredit)
        .where(SupplierCredit.id == credit_id, SupplierCredit.merchant_id == merchant_id)
        .with_for_update()
    )
    if credit is None:
        raise NotFound(f"supplier credit {credit_id} not found")
    if credit.status == CreditStatus.SETTLED:
        raise Conflict(f"supplier credit {credit_id} is settled already")
    credit.status = CreditStatus.SETTLED
    credit.settled_at = utcnow()
    if note:
        credit.note = f"{credit.note}; {note}" if credit.note else note
    await session.flush()
    return credit


async def credits_of_po(session: AsyncSession, po_id: uuid.UUID) -> Sequence[SupplierCredit]:
    return (
        await session.scalars(
            select(SupplierCredit).where(SupplierCredit.purchase_order_id == po_id)
        )
    ).all()
