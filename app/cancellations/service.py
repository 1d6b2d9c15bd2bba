"""Cancelling an order: the rules and every query of the cancellations domain.

Before routing, an order is cancelled at once. Once routed, each of its purchase orders is
resolved on its own (``PurchaseOrderCancellation``):

- not handed to its supplier yet (``pending``, never attempted): cancelled here, stock back;
- shipped in our records: refused (``purchase_order.cancel_refused``: the returns domain turns
  its lines into a return);
- otherwise the ``purchase_order.cancel`` job asks the supplier through the connector, which
  answers cancelled, already shipped, or pending (a portal supplier answers later through the
  supplier API); a channel that cannot cancel, or a supplier that keeps failing, asks the
  merchant (exceptions queue), who answers in the supplier's stead.

A partially shipped purchase order has its unshipped remainder cancelled (what shipped is
refused). When every purchase order is resolved the order is ``cancelled`` and
``order.cancelled`` is published once, with the quantities cancelled before shipping.

Every resolution runs under the purchase order's row lock and checks the cancellation is still
open, so a job run twice, or a supplier answering while the job runs, resolves it once: stock
is released once, the credit and the events exist once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.cancellations.models import (
    CancellationStatus,
    CancelOrigin,
    OrderCancellation,
    POCancelStatus,
    PurchaseOrderCancellation,
)
from app.credits.models import CreditKind
from app.credits.service import add_credit
from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.events.models import EventType
from app.events.service import publish
from app.exceptions.service import open_exception, resolve_exceptions
from app.jobs.task import StaleWindow
from app.merchants.models import Merchant
from app.merchants.settings import settings_of
from app.orders.models import Order, OrderLine, OrderStatus
from app.purchasing import service as purchasing
from app.purchasing.models import POStatus, PurchaseOrder, PurchaseOrderLine
from app.security import SecretBox
from app.suppliers.models import Supplier, SupplierProduct
from app.suppliers.service import decrypt_config
from app.timeline.service import record, set_status
from app.tracking_page import service as tracking_page
from connectors.base import CancelResult, PurchaseOrderDTO

#: Purchase orders that no longer owe anything: nothing to cancel.
_GONE = (POStatus.REJECTED, POStatus.CANCELLED, POStatus.FAILED)
_SENT = (POStatus.SHIPPED, POStatus.DELIVERED)
#: Exceptions-queue kinds this flow opens (resolved when the order is cancelled).
REQUESTED_KIND = "cancel_after_routing"
UNCONFIRMED_KIND = "cancellation_unconfirmed"
#: A placement in flight is waited for this long between looks.
PLACEMENT_WAIT = timedelta(seconds=30)


# --------------------------------------------------------------------------- starting


@dataclass
class CancellationView:
    cancellation: OrderCancellation
    order: Order
    purchase_orders: list[tuple[PurchaseOrderCancellation, PurchaseOrder]]
    #: True when this call started it (the merchant API answers 202 or 200 by its state).
    started: bool = False


async def _cancellation_of(session: AsyncSession, order_id: uuid.UUID) -> OrderCancellation | None:
    row: OrderCancellation | None = await session.scalar(
        select(OrderCancellation).where(OrderCancellation.order_id == order_id)
    )
    return row


async def _po_rows(
    session: AsyncSession, order_id: uuid.UUID
) -> list[tuple[PurchaseOrderCancellation, PurchaseOrder]]:
    rows = await session.execute(
        select(PurchaseOrderCancellation, PurchaseOrder)
        .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderCancellation.purchase_order_id)
        .where(PurchaseOrderCancellation.order_id == order_id)
        .order_by(PurchaseOrder.created_at, PurchaseOrder.id)
    )
    return [(c, p) for c, p in rows.all()]


async def view(session: AsyncSession, order: Order, *, started: bool = False) -> CancellationView:
    cancellation = await _cancellation_of(session, order.id)
    if cancellation is None:
        raise NotFound(f"order {order.id} has no cancellation")
    return CancellationView(cancellation, order, await _po_rows(session, order.id), started)


async def _locked_order(
    session: AsyncSession, merchant_id: uuid.UUID, order_id: uuid.UUID
) -> Order:
    order: Order | None = await session.scalar(
        select(Order)
        .where(Order.id == order_id, Order.merchant_id == merchant_id)
        .with_for_update()
    )
    if order is None:
        raise NotFound(f"order {order_id} not found")
    return order


async def cancel_for_merchant(
    session: AsyncSession, merchant_id: uuid.UUID, order_id: uuid.UUID, reason: str
) -> CancellationView:
    """The merchant cancels (``POST /api/v1/orders/{id}/cancel``); ``Conflict`` when nothing
    can be cancelled any more."""
    order = await _locked_order(session, merchant_id, order_id)
    started = await start(session, order, reason=reason, origin=CancelOrigin.MERCHANT)
    return await view(session, order, started=started)


async def merchant_cancellation(
    session: AsyncSession, merchant_id: uuid.UUID, order_id: uuid.UUID
) -> CancellationView:
    order: Order | None = await session.scalar(
        select(Order).where(Order.id == order_id, Order.merchant_id == merchant_id)
    )
    if order is None:
        raise NotFound(f"order {order_id} not found")
    return await view(session, order)


async def _shipped_anything(session: AsyncSession, order_id: uuid.UUID) -> bool:
    found = await session.scalar(
        select(PurchaseOrderLine.id)
        .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.purchase_order_id)
        .where(
            PurchaseOrder.order_id == order_id,
            or_(PurchaseOrderLine.quantity_shipped > 0, PurchaseOrder.status.in_(_SENT)),
        )
        .limit(1)
    )
    return found is not None


async def cancel_for_customer(session: AsyncSession, order: Order, reason: str) -> CancellationView:
    """The customer cancels from the tracking page: only if the merchant lets them and nothing
    of the order has shipped (else ``Conflict``)."""
    order = await _locked_order(session, order.merchant_id, order.id)
    merchant = await session.get(Merchant, order.merchant_id)
    if not settings_of(merchant).cancellation.customer_can_cancel:
        raise Conflict("this store does not take cancellations here: please contact it")
    existing = await _cancellation_of(session, order.id)
    if order.status == OrderStatus.CANCELLED or existing is not None:
        raise Conflict("this order is already cancelled or being cancelled")
    if await _shipped_anything(session, order.id):
        raise Conflict("part of this order has shipped: it can no longer be cancelled")
    started = await start(session, order, reason=reason, origin=CancelOrigin.CUSTOMER)
    return await view(session, order, started=started)


async def cancel_by_token(session: AsyncSession, token: str, reason: str) -> CancellationView:
    """``POST /track/{token}/cancel``: the order of the tracking page (``NotFound`` like the
    page for a token it would not show) cancelled by its customer."""
    order = await tracking_page.order_of_token(session, token)
    if order is None:
        raise NotFound("no tracking page at this address")
    return await cancel_for_customer(session, order, reason.strip() or "cancelled by the customer")


async def start(session: AsyncSession, order: Order, *, reason: str, origin: str) -> bool:
    """Cancel ``order`` (row-locked by the caller): at once before routing, else supplier by
    supplier. False when a cancellation is already under way (nothing changes); ``Conflict``
    when the order is cancelled already or nothing of it can be cancelled any more."""
    if origin not in CancelOrigin.ALL:
        raise InvalidInput(f"one of {', '.join(CancelOrigin.ALL)}", field="origin")
    if order.status == OrderStatus.CANCELLED:
        raise Conflict(f"order {order.name} is already cancelled")
    if await _cancellation_of(session, order.id) is not None:
        return False
    now = utcnow()
    if order.status in OrderStatus.UNROUTED:
        session.add(
            OrderCancellation(
                merchant_id=order.merchant_id,
                order_id=order.id,
                origin=origin,
                reason=reason,
                status=CancellationStatus.CANCELLED,
                completed_at=now,
            )
        )
        order.cancelled_at = now
        set_status(session, order, OrderStatus.CANCELLED, reason, origin=origin)
        lines = (
            await session.scalars(
                select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.position)
            )
        ).all()
        await publish(
            session,
            order,
            EventType.ORDER_CANCELLED,
            key=f"order.cancelled:{order.id}",
            reason=reason,
            origin=origin,
            lines=[{"line_id": str(ln.id), "quantity": ln.quantity} for ln in lines if ln.quantity],
            shipping=True,
        )
        # Whatever was waiting for a person about this order (an address to fix...) is moot.
        await resolve_exceptions(session, order)
        await session.flush()
        return True

    pos = list(
        (
            await session.scalars(
                select(PurchaseOrder)
                .where(PurchaseOrder.order_id == order.id)
                .options(selectinload(PurchaseOrder.lines))
                .order_by(PurchaseOrder.created_at, PurchaseOrder.id)
                .with_for_update(of=PurchaseOrder)
            )
        ).all()
    )
    open_pos = [po for po in pos if po.status in POStatus.OPEN]
    uncovered = order.status in (OrderStatus.PARTIALLY_ROUTED, OrderStatus.NEEDS_ATTENTION)
    if not open_pos and not uncovered:
        raise Conflict(
            f"nothing of order {order.name} can be cancelled any more: every purchase order "
            "has shipped (ask for a return instead)"
        )
    order.cancel_requested_at = now
    session.add(
        OrderCancellation(
            merchant_id=order.merchant_id, order_id=order.id, origin=origin, reason=reason
        )
    )
    record(
        session,
        order,
        "order.cancel_requested",
        f"cancellation requested ({origin}): {reason}",
        origin=origin,
    )
    open_exception(session, order, REQUESTED_KIND, f"cancellation requested: {reason}")
    await session.flush()
    from app.cancellations.tasks import cancel_at_supplier  # a cycle: tasks use this module
    from app.jobs.outbox import enqueue

    for po in pos:
        if po.status in _GONE:
            continue
        row = PurchaseOrderCancellation(
            merchant_id=order.merchant_id,
            order_id=order.id,
            purchase_order_id=po.id,
            idempotency_key=f"dropship-cancel-{po.id}",
        )
        session.add(row)
        po.cancellation_requested_at = now
        await session.flush()
        if po.status in _SENT:
            await _refuse(session, row, po, order, "already shipped", shipped_only=True)
        elif po.status == POStatus.PENDING and not _placement_in_flight(po):
            # Never handed over (its placement, under this lock, will find it cancelled).
            await _cancelled(session, row, po, order, "cancelled before it was placed")
        else:
            await enqueue(session, cancel_at_supplier, row.id)
    await maybe_complete(session, order)
    return True


# --------------------------------------------------------------------------- resolving


def _placement_in_flight(po: PurchaseOrder) -> bool:
    """Pending but possibly at its supplier already: a placement call was made (or is under
    way) whose answer we do not have, or it is backing off before the next one."""
    return po.status == POStatus.PENDING and (po.attempts > 0 or po.next_attempt_at is not None)


def _line_ref(ln: PurchaseOrderLine, quantity: int) -> dict[str, Any]:
    return {
        "order_line_id": str(ln.order_line_id),
        "purchase_order_line_id": str(ln.id),
        "quantity": quantity,
    }


async def _supplier_name(session: AsyncSession, po: PurchaseOrder) -> str:
    supplier = await session.get(Supplier, po.supplier_id)
    return supplier.name if supplier is not None else "the supplier"


async def _cancelled(
    session: AsyncSession,
    row: PurchaseOrderCancellation,
    po: PurchaseOrder,
    order: Order,
    detail: str,
) -> None:
    """The supplier will not ship what is unshipped: give that stock back, close the purchase
    order (a partly shipped one is complete with what shipped: that part is refused), note the
    credit the supplier owes for a purchase order it had been given."""
    open_lines = [ln for ln in po.lines if ln.status == "open"]
    cancelled: list[dict[str, Any]] = []
    shipped: list[dict[str, Any]] = []
    cost = Decimal("0")
    name = await _supplier_name(session, po)
    for ln in open_lines:
        remainder = ln.quantity - ln.quantity_shipped
        if ln.quantity_shipped:
            shipped.append(_line_ref(ln, ln.quantity_shipped))
        if remainder <= 0:
            continue
        await session.execute(
            update(SupplierProduct)
            .where(SupplierProduct.supplier_id == po.supplier_id, SupplierProduct.sku == ln.sku)
            .values(stock=SupplierProduct.stock + remainder)
        )
        if not ln.quantity_shipped:
            ln.status = "cancelled"
        cancelled.append(_line_ref(ln, remainder))
        cost += ln.unit_cost * remainder
        record(
            session,
            order,
            "cancellation.line_cancelled",
            f"{po.number}: {remainder} x {ln.sku} cancelled at {name}, stock released",
            purchase_order_id=str(po.id),
            order_line_id=str(ln.order_line_id),
            quantity=remainder,
        )
    row.status = POCancelStatus.CANCELLED
    row.lines = cancelled
    row.detail = detail
    row.resolved_at = utcnow()
    row.next_attempt_at = None
    if shipped:
        await purchasing.transition(
            session, po, POStatus.SHIPPED, f"unshipped remainder cancelled: {detail}"
        )
        await _publish_refused(session, row, po, order, shipped, "shipped before the cancellation")
    else:
        await purchasing.transition(session, po, POStatus.CANCELLED, detail)
    # Decided: a credit for every purchase order its supplier had been given (placed), of the
    # cost of what it will not ship: whether it already charged is the merchant's to settle.
    if po.placed_at is not None and cost > 0:
        await add_credit(
            session,
            merchant_id=po.merchant_id,
            supplier_id=po.supplier_id,
            purchase_order_id=po.id,
            kind=CreditKind.CANCELLATION,
            source_key=f"cancellation:{po.id}",
            amount=cost,
            currency=po.currency,
            note=f"{po.number} cancelled: {detail}",
        )
    await session.flush()


async def _publish_refused(
    session: AsyncSession,
    row: PurchaseOrderCancellation,
    po: PurchaseOrder,
    order: Order,
    lines: list[dict[str, Any]],
    reason: str,
) -> None:
    row.refused_lines = lines
    await publish(
        session,
        order,
        EventType.PURCHASE_ORDER_CANCEL_REFUSED,
        key=f"purchase_order.cancel_refused:{po.id}",
        purchase_order_id=str(po.id),
        supplier_id=str(po.supplier_id),
        reason=reason,
        lines=lines,
    )


async def _refuse(
    session: AsyncSession,
    row: PurchaseOrderCancellation,
    po: PurchaseOrder,
    order: Order,
    reason: str,
    *,
    shipped_only: bool = False,
) -> None:
    """Too late: the purchase order shipped (or will: the supplier says so). Its lines become
    a return (``purchase_order.cancel_refused``)."""
    by_line = {ln.id: ln for ln in po.lines}
    lines = [
        _line_ref(ln, ln.quantity_shipped if shipped_only and ln.quantity_shipped else ln.quantity)
        for ln in po.lines
        if ln.status == "open"
    ]
    name = await _supplier_name(session, po)
    for ref in lines:
        ln = by_line[uuid.UUID(ref["purchase_order_line_id"])]
        record(
            session,
            order,
            "cancellation.line_refused",
            f"{po.number}: {ref['quantity']} x {ln.sku} not cancelled at {name}: {reason}",
            purchase_order_id=str(po.id),
            order_line_id=str(ln.order_line_id),
            quantity=ref["quantity"],
        )
    row.status = POCancelStatus.REFUSED
    row.detail = reason
    row.resolved_at = utcnow()
    row.next_attempt_at = None
    await _publish_refused(session, row, po, order, lines, reason)
    await session.flush()


async def maybe_complete(session: AsyncSession, order: Order) -> bool:
    """Once every purchase order is resolved: the order is cancelled, and ``order.cancelled``
    carries what was cancelled before shipping."""
    cancellation = await _cancellation_of(session, order.id)
    if cancellation is None or cancellation.status != CancellationStatus.IN_PROGRESS:
        return False
    rows = [c for c, _ in await _po_rows(session, order.id)]
    if any(r.status not in POCancelStatus.RESOLVED for r in rows):
        return False
    refused: Counter[str] = Counter()
    for r in rows:
        for ref in r.refused_lines or []:
            refused[ref["order_line_id"]] += int(ref["quantity"])
    lines = (
        await session.scalars(
            select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.position)
        )
    ).all()
    cancelled = [
        {"line_id": str(ln.id), "quantity": ln.quantity - refused[str(ln.id)]}
        for ln in lines
        if ln.quantity - refused[str(ln.id)] > 0
    ]
    now = utcnow()
    cancellation.status = CancellationStatus.CANCELLED
    cancellation.completed_at = now
    order.cancelled_at = now
    set_status(
        session,
        order,
        OrderStatus.CANCELLED,
        cancellation.reason
        + ("" if not refused else f" ({sum(refused.values())} item(s) had shipped: a return)"),
        origin=cancellation.origin,
    )
    await resolve_exceptions(session, order, (REQUESTED_KIND, UNCONFIRMED_KIND, "unroutable_line"))
    await publish(
        session,
        order,
        EventType.ORDER_CANCELLED,
        key=f"order.cancelled:{order.id}",
        reason=cancellation.reason,
        origin=cancellation.origin,
        lines=cancelled,
        shipping=not refused,
    )
    await session.flush()
    return True


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class Claim:
    """What the job needs for its call with no transaction open; ``wait_ms``: come back
    later instead (a placement is in flight)."""

    row_id: uuid.UUID
    attempt: int = 0
    dto: PurchaseOrderDTO | None = None
    idempotency_key: str = ""
    connector: str = ""
    config: dict[str, Any] | None = None
    supplier: Supplier | None = None
    wait_ms: int = 0


async def _load_row(
    session: AsyncSession, row_id: uuid.UUID
) -> tuple[PurchaseOrderCancellation, PurchaseOrder, Order] | None:
    row = await session.get(PurchaseOrderCancellation, row_id)
    if row is None:
        return None
    po = await purchasing.load(session, row.purchase_order_id, lock=True)
    if po is None:
        return None
    await session.refresh(row)  # read after the lock: a concurrent resolution is seen
    order = await purchasing.order_of(session, po)
    return row, po, order


def _remainder_dto(po: PurchaseOrder) -> PurchaseOrderDTO:
    """The purchase order as the supplier knows it, with the quantities still unshipped."""
    dto = purchasing.to_dto(po)
    owed = {ln.supplier_sku: ln.quantity - ln.quantity_shipped for ln in po.lines}
    lines = tuple(
        type(ln)(
            sku=ln.sku,
            supplier_sku=ln.supplier_sku,
            quantity=owed.get(ln.supplier_sku, ln.quantity),
            unit_cost=ln.unit_cost,
        )
        for ln in dto.lines
        if owed.get(ln.supplier_sku, ln.quantity) > 0
    )
    return PurchaseOrderDTO(**{**dto.__dict__, "lines": lines})


async def _settle_moved(
    session: AsyncSession, row: PurchaseOrderCancellation, po: PurchaseOrder, order: Order
) -> bool:
    """The purchase order moved on by other means (rejected, failed, shipped in full): resolve
    the cancellation from that. True when resolved."""
    if po.status in _GONE:
        row.status = POCancelStatus.CANCELLED
        row.detail = f"purchase order {po.status} meanwhile: nothing left to cancel"
        row.resolved_at = utcnow()
        row.next_attempt_at = None
        record(
            session,
            order,
            "cancellation.nothing_to_cancel",
            f"{po.number}: {po.status}, nothing left to cancel",
            purchase_order_id=str(po.id),
        )
        await session.flush()
        await maybe_complete(session, order)
        return True
    if po.status in _SENT:
        await _refuse(session, row, po, order, "already shipped", shipped_only=True)
        await maybe_complete(session, order)
        return True
    return False


async def claim(session: AsyncSession, box: SecretBox, row_id: uuid.UUID) -> Claim | None:
    """Step 1 of ``purchase_order.cancel``, under the purchase order's lock: None when there
    is nothing to ask (resolved, backing off, waiting for the supplier's own answer)."""
    loaded = await _load_row(session, row_id)
    if loaded is None:
        return None
    row, po, order = loaded
    if row.status in POCancelStatus.RESOLVED:
        return None
    if await _settle_moved(session, row, po, order):
        return None
    if row.status != POCancelStatus.REQUESTED:
        return None  # the supplier (or the merchant) answers
    now = utcnow()
    if row.next_attempt_at is not None and row.next_attempt_at > now + timedelta(seconds=1):
        return None
    if po.status == POStatus.PENDING:
        if not _placement_in_flight(po):
            await _cancelled(session, row, po, order, "cancelled before it was placed")
            await maybe_complete(session, order)
            return None
        # A placement is in flight: the supplier may be taking it now. Ask once it is settled.
        row.next_attempt_at = now + PLACEMENT_WAIT
        return Claim(row_id, wait_ms=int(PLACEMENT_WAIT.total_seconds() * 1000))
    supplier = await purchasing.supplier_of(session, po)
    row.attempts += 1
    return Claim(
        row_id,
        attempt=row.attempts,
        dto=_remainder_dto(po),
        idempotency_key=row.idempotency_key,
        connector=supplier.connector,
        config=decrypt_config(box, supplier),
        supplier=supplier,
    )


async def apply_result(session: AsyncSession, row_id: uuid.UUID, result: CancelResult) -> None:
    """Step 3: record the supplier's answer, once."""
    loaded = await _load_row(session, row_id)
    if loaded is None:
        return
    row, po, order = loaded
    if row.status in POCancelStatus.RESOLVED:
        return
    if result.outcome == "cancelled":
        if po.status in _SENT:
            # It shipped while we asked: the supplier's "yes" is too late to matter.
            await _refuse(session, row, po, order, "already shipped", shipped_only=True)
        else:
            name = await _supplier_name(session, po)
            await _cancelled(session, row, po, order, result.detail or f"cancelled by {name}")
    elif result.outcome == "already_shipped":
        await _refuse(session, row, po, order, result.detail or "already shipped")
    else:
        row.status = POCancelStatus.AWAITING_SUPPLIER
        row.detail = result.detail
        row.next_attempt_at = None
        record(
            session,
            order,
            "cancellation.awaiting_supplier",
            f"{po.number}: cancellation asked, awaiting the supplier's answer",
            purchase_order_id=str(po.id),
        )
        await session.flush()
        return
    await maybe_complete(session, order)


async def needs_merchant(session: AsyncSession, row_id: uuid.UUID, message: str) -> None:
    """The channel cannot cancel (or refused the request, or kept failing): the merchant asks
    the supplier and answers for it (``POST /api/v1/purchase-orders/{id}/cancellation``)."""
    loaded = await _load_row(session, row_id)
    if loaded is None:
        return
    row, po, order = loaded
    if row.status not in (POCancelStatus.REQUESTED, POCancelStatus.AWAITING_SUPPLIER):
        return
    row.status = POCancelStatus.NEEDS_MERCHANT
    row.detail = message
    row.next_attempt_at = None
    record(
        session,
        order,
        "cancellation.needs_merchant",
        f"{po.number}: the supplier could not be asked to cancel ({message}); ask it yourself",
        purchase_order_id=str(po.id),
    )
    open_exception(
        session,
        order,
        UNCONFIRMED_KIND,
        f"purchase order {po.number}: ask the supplier to cancel it ({message}), then record "
        "its answer",
        purchase_order_id=str(po.id),
    )
    await session.flush()


async def retry_later(
    session: AsyncSession, row_id: uuid.UUID, message: str, delay_ms: int, *, failed: bool = True
) -> None:
    """A transient failure (``failed``; else a wait for a rate-limit slot, which is no failed
    attempt): the next attempt not before ``delay_ms`` (the sweeper respects it)."""
    loaded = await _load_row(session, row_id)
    if loaded is None:
        return
    row, po, order = loaded
    if row.status != POCancelStatus.REQUESTED:
        return
    row.next_attempt_at = utcnow() + timedelta(milliseconds=delay_ms)
    if not failed:
        row.attempts -= 1
        return
    row.detail = message
    record(
        session,
        order,
        "cancellation.retry",
        f"{po.number}: cancellation attempt {row.attempts} failed ({message}); "
        f"retrying in {delay_ms / 1000:.1f}s",
        purchase_order_id=str(po.id),
        attempt=row.attempts,
    )


async def stale(session: AsyncSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Cancellations whose job was lost or died mid-call (asked again: same idempotency key),
    and those waiting for an answer whose purchase order moved on by other means."""
    return await window.ids(
        session,
        select(PurchaseOrderCancellation.id)
        .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderCancellation.purchase_order_id)
        .where(
            PurchaseOrderCancellation.status.in_(POCancelStatus.OPEN),
            PurchaseOrderCancellation.updated_at < window.cutoff,
            window.due(PurchaseOrderCancellation.next_attempt_at),
            or_(
                PurchaseOrderCancellation.status == POCancelStatus.REQUESTED,
                PurchaseOrder.status.in_([*_GONE, *_SENT]),
            ),
        ),
    )


# --------------------------------------------------------------------------- answers


async def _answer(
    session: AsyncSession, po: PurchaseOrder, accepted: bool, reason: str | None, who: str
) -> PurchaseOrderCancellation:
    row: PurchaseOrderCancellation | None = await session.scalar(
        select(PurchaseOrderCancellation).where(
            PurchaseOrderCancellation.purchase_order_id == po.id
        )
    )
    if row is None:
        raise Conflict(f"no cancellation was asked for purchase order {po.number}")
    await session.refresh(row)
    wanted = POCancelStatus.CANCELLED if accepted else POCancelStatus.REFUSED
    if row.status in POCancelStatus.RESOLVED:
        if row.status == wanted:
            return row  # the same answer again
        raise Conflict(f"the cancellation of {po.number} is {row.status} already")
    if _placement_in_flight(po):
        # The supplier may be taking the order right now: a "cancelled" recorded here would
        # be dropped by the placement's answer, leaving a live order at the supplier (and a
        # "refused" has nothing placed to refuse). The job asks once the placement settles.
        raise Conflict(f"purchase order {po.number}: placement in flight: answer once it is placed")
    order = await purchasing.order_of(session, po)
    if accepted:
        if po.status in _SENT:
            raise Conflict(f"purchase order {po.number} has shipped: answer accepted=false")
        await _cancelled(session, row, po, order, f"cancellation confirmed by the {who}")
    else:
        await _refuse(session, row, po, order, reason or "already shipped")
    await maybe_complete(session, order)
    return row


async def answer_for_supplier(
    session: AsyncSession,
    supplier_id: uuid.UUID,
    po_id: uuid.UUID,
    accepted: bool,
    reason: str | None,
) -> PurchaseOrder:
    """``POST /supplier/v1/orders/{id}/cancellation``: the supplier confirms or refuses."""
    po = await purchasing.load_for_supplier(session, supplier_id, po_id, lock=True)
    await _answer(session, po, accepted, reason, "supplier")
    return po


async def answer_for_merchant(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    po_id: uuid.UUID,
    accepted: bool,
    reason: str | None,
) -> tuple[PurchaseOrderCancellation, PurchaseOrder]:
    """The merchant records the supplier's answer it got by other means."""
    po = await purchasing.load(session, po_id, lock=True)
    if po is None or po.merchant_id != merchant_id:
        raise NotFound(f"purchase order {po_id} not found")
    row = await _answer(session, po, accepted, reason, "merchant")
    return row, po
