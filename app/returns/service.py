"""Returns (RMA): requests by the merchant, the customer or a refused cancellation; approval,
rejection, the supplier's authorization (address, label), receipt with the item's condition
(restock or disposal), exchanges, stalls. Every query of the domain is here.

Quantities: a purchase-order line may give back at most what it shipped minus what its other
returns (not rejected) take; that is checked with the order's row locked (PostgreSQL; SQLite's
IMMEDIATE transactions serialise writers already), so two concurrent requests for the last unit
cannot both win. Every step is on the order's timeline and published once
(``return.<step>:<return id>``) for the customer emails, the refund and the supplier credit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.api.pagination import Page, rows_page
from app.db import utcnow, uuid7
from app.errors import Conflict, InvalidInput, NotFound
from app.events.models import EventType
from app.events.service import publish
from app.exceptions.models import ExceptionCase
from app.exceptions.service import open_exception
from app.jobs.outbox import enqueue
from app.jobs.task import StaleWindow
from app.merchants.models import Merchant, MerchantStatus
from app.merchants.settings import ReturnSettings, settings_of
from app.orders.drafts import CustomerDraft, LineDraft, OrderDraft
from app.orders.models import Customer, Order, OrderLine
from app.orders.service import create_order, load_for_change
from app.purchasing import service as purchasing
from app.purchasing.models import (
    POStatus,
    PurchaseOrder,
    PurchaseOrderLine,
    Shipment,
    ShipmentLine,
)
from app.returns.models import Return, ReturnCondition, ReturnLine, ReturnOrigin, ReturnStatus
from app.suppliers.models import Supplier, SupplierProduct
from app.timeline.models import OrderEvent
from app.timeline.service import record
from connectors.base import PurchaseOrderDTO, ReturnAuthorization, ReturnLineDTO

#: The exceptions-queue kinds of this domain.
STALLED = "return_stalled"
AUTHORIZATION_FAILED = "return_authorization_failed"
#: Replacement orders of exchanges carry this source.
EXCHANGE_SOURCE = "exchange"
#: How long a claimed supplier call keeps the sweeper and duplicate runs away.
CLAIM_LEASE = timedelta(minutes=5)
#: Stalled returns opened per run (the next run takes the rest).
STALL_BATCH = 500


@dataclass(frozen=True)
class ExchangeChoice:
    sku: str | None = None
    variant_id: int | None = None


# ------------------------------------------------------------------------------- loading


async def load(session: AsyncSession, return_id: uuid.UUID, *, lock: bool = False) -> Return | None:
    query = select(Return).where(Return.id == return_id).options(selectinload(Return.lines))
    if lock:
        query = query.with_for_update(of=Return)
    found: Return | None = await session.scalar(query)
    return found


async def get_for_merchant(
    session: AsyncSession, merchant_id: uuid.UUID, return_id: uuid.UUID, *, lock: bool = False
) -> Return:
    ret = await load(session, return_id, lock=lock)
    if ret is None or ret.merchant_id != merchant_id:
        raise NotFound(f"return {return_id} not found")
    return ret


async def page_for_merchant(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    *,
    status: str | None,
    order_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> Page[Return]:
    """The merchant's returns, newest first, by status and order."""
    query = (
        select(Return).where(Return.merchant_id == merchant_id).options(selectinload(Return.lines))
    )
    if status:
        if status not in ReturnStatus.ALL:
            raise InvalidInput(f"one of {', '.join(ReturnStatus.ALL)}", field="status")
        query = query.where(Return.status == status)
    if order_id is not None:
        query = query.where(Return.order_id == order_id)
    return await rows_page(session, query, Return.created_at, Return.id, cursor=cursor, limit=limit)


#: What a supplier sees: returns coming to it (approved) and those it received.
SUPPLIER_VISIBLE = (ReturnStatus.APPROVED, ReturnStatus.RECEIVED)


async def page_for_supplier(
    session: AsyncSession,
    supplier_id: uuid.UUID,
    status: str | None,
    *,
    cursor: str | None,
    limit: int,
) -> Page[Return]:
    """The returns coming to a supplier (``approved``) or received by it, oldest first."""
    if status and status not in SUPPLIER_VISIBLE:
        raise InvalidInput(f"one of {', '.join(SUPPLIER_VISIBLE)}", field="status")
    query = (
        select(Return)
        .where(
            Return.supplier_id == supplier_id,
            Return.status.in_([status] if status else SUPPLIER_VISIBLE),
        )
        .options(selectinload(Return.lines))
    )
    return await rows_page(
        session, query, Return.created_at, Return.id, cursor=cursor, limit=limit, oldest_first=True
    )


async def receive_for_supplier(
    session: AsyncSession, supplier_id: uuid.UUID, return_id: uuid.UUID, condition: str
) -> Return:
    """The supplier marks one of its returns received; another supplier's is a 404."""
    ret = await load(session, return_id, lock=True)
    if ret is None or ret.supplier_id != supplier_id or ret.status not in SUPPLIER_VISIBLE:
        raise NotFound(f"return {return_id} not found")
    await receive(session, ret, condition, by="supplier")
    return ret


# ------------------------------------------------------------------------------- requests


async def request_return(
    session: AsyncSession,
    merchant: Merchant,
    order_id: uuid.UUID,
    lines: Sequence[tuple[uuid.UUID, int]],
    reason: str,
    exchange: ExchangeChoice | None,
) -> list[Return]:
    """The merchant asks for a return of these order lines (any time: the window binds
    customers). One return per purchase order; approved at once under ``auto_approve``."""
    order = await load_for_change(session, order_id)
    if order is None or order.merchant_id != merchant.id:
        raise NotFound(f"order {order_id} not found")
    known = {ln.id: ln for ln in order.lines}
    wanted: dict[uuid.UUID, int] = {}
    fields: dict[uuid.UUID, str] = {}
    for i, (line_id, quantity) in enumerate(lines):
        if line_id not in known:
            raise InvalidInput("no such line on this order", field=f"lines[{i}].line_id")
        wanted[line_id] = wanted.get(line_id, 0) + quantity
        fields[line_id] = f"lines[{i}].quantity"
    exchange_sku = await _exchange_sku(session, order, exchange, wanted) if exchange else None
    settings = settings_of(merchant).returns
    return await _create(
        session,
        order,
        settings,
        wanted,
        fields,
        reason=reason,
        origin=ReturnOrigin.MERCHANT,
        exchange=(exchange_sku, exchange.variant_id) if exchange and exchange_sku else None,
    )


async def customer_request(
    session: AsyncSession, token: str, items: Sequence[tuple[int, int]], reason: str
) -> list[Return] | None:
    """The customer asks from the tracking page for a return of items (numbered as the page
    lists them, 1 first) within the store's return window. None: no such page (404)."""
    # Imported here: the tracking page's module reads orders (no cycle, but kept local to the
    # one use: the page's token rules).
    from app.tracking_page.service import REDACTED_EVENT, TOKEN

    if not TOKEN.fullmatch(token):
        return None
    row = (
        await session.execute(
            select(Order.id, Merchant)
            .join(Merchant, Merchant.id == Order.merchant_id)
            .outerjoin(Customer, Customer.id == Order.customer_id)
            .where(
                Order.tracking_token == token,
                Merchant.status == MerchantStatus.ACTIVE,
                Customer.redacted_at.is_(None),
                ~exists().where(OrderEvent.order_id == Order.id, OrderEvent.type == REDACTED_EVENT),
            )
        )
    ).first()
    if row is None:
        return None
    order_id, merchant = row
    order = await load_for_change(session, order_id)
    if order is None:
        return None
    by_item = {ln.position + 1: ln for ln in order.lines}
    wanted: dict[uuid.UUID, int] = {}
    fields: dict[uuid.UUID, str] = {}
    for i, (item, quantity) in enumerate(items):
        line = by_item.get(item)
        if line is None:
            raise InvalidInput("no such item on this order", field=f"lines[{i}].item")
        wanted[line.id] = wanted.get(line.id, 0) + quantity
        fields[line.id] = f"lines[{i}].quantity"
    settings = settings_of(merchant).returns
    sent = await _sent_at(session, list(wanted))
    now = utcnow()
    for line_id in wanted:
        when = sent.get(line_id)
        if when is None:
            raise Conflict("this item has not shipped yet", field=fields[line_id])
        if now > when + timedelta(days=settings.window_days):
            ended = (when + timedelta(days=settings.window_days)).date().isoformat()
            raise Conflict(
                f"the return window of {settings.window_days} days ended on {ended}",
                field=fields[line_id],
            )
    return await _create(
        session,
        order,
        settings,
        wanted,
        fields,
        reason=reason,
        origin=ReturnOrigin.CUSTOMER,
        exchange=None,
    )


async def open_for_cancellation(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    order_id: uuid.UUID,
    po_id: uuid.UUID,
    reason: str,
    lines: Sequence[Mapping[str, Any]],
) -> Return | None:
    """A cancellation the supplier refused (it had shipped): those lines come back, approved at
    once, one return per purchase order however often the event is delivered."""
    order = await load_for_change(session, order_id)
    if order is None or order.merchant_id != merchant_id:
        return None
    key = f"cancel_refused:{po_id}"
    if await session.scalar(
        select(Return.id).where(Return.merchant_id == merchant_id, Return.source_key == key)
    ):
        return None
    wanted: dict[uuid.UUID, int] = {}
    # The supplier says these shipped: they count as shipped even before the shipment is
    # reported (else the customer would get them, and neither a refund nor a return).
    claimed: dict[uuid.UUID, int] = {}
    for ln in lines:
        line_id = uuid.UUID(str(ln["order_line_id"]))
        wanted[line_id] = wanted.get(line_id, 0) + int(ln["quantity"])
        if ln.get("purchase_order_line_id"):
            pl_id = uuid.UUID(str(ln["purchase_order_line_id"]))
            claimed[pl_id] = claimed.get(pl_id, 0) + int(ln["quantity"])
    merchant = await session.get(Merchant, merchant_id)
    settings = settings_of(merchant).returns
    created = await _create(
        session,
        order,
        settings,
        wanted,
        {},
        reason=reason,
        origin=ReturnOrigin.CANCELLATION,
        exchange=None,
        source_key=key,
        only_po=po_id,
        only_po_lines=set(claimed) or None,
        approve=True,
        clamp=True,
        claimed=claimed,
    )
    return created[0] if created else None


async def _sent_at(session: AsyncSession, line_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """When each order line last reached the customer: its latest delivery, else its latest
    shipping (the window runs from there)."""
    rows = (
        await session.execute(
            select(PurchaseOrderLine.order_line_id, Shipment.shipped_at, Shipment.delivered_at)
            .join(ShipmentLine, ShipmentLine.purchase_order_line_id == PurchaseOrderLine.id)
            .join(Shipment, Shipment.id == ShipmentLine.shipment_id)
            .where(PurchaseOrderLine.order_line_id.in_(line_ids))
        )
    ).all()
    out: dict[uuid.UUID, datetime] = {}
    for line_id, shipped_at, delivered_at in rows:
        moment = delivered_at or shipped_at
        if line_id not in out or moment > out[line_id]:
            out[line_id] = moment
    return out


async def _exchange_sku(
    session: AsyncSession,
    order: Order,
    exchange: ExchangeChoice,
    wanted: Mapping[uuid.UUID, int],
) -> str:
    """The SKU the replacement order ships: given, or that of the variant on the merchant's
    orders; it must be in an active supplier's catalog."""
    if len(wanted) != 1:
        raise InvalidInput("an exchange replaces one line: name exactly one", field="exchange")
    sku = exchange.sku
    if sku is None:
        sku = await session.scalar(
            select(OrderLine.sku)
            .where(
                OrderLine.merchant_id == order.merchant_id,
                OrderLine.variant_id == exchange.variant_id,
                OrderLine.sku.is_not(None),
            )
            .limit(1)
        )
        if sku is None:
            raise InvalidInput("no known SKU for this variant: give the sku", field="exchange")
    offered = await session.scalar(
        select(SupplierProduct.id)
        .join(Supplier, Supplier.id == SupplierProduct.supplier_id)
        .where(
            SupplierProduct.merchant_id == order.merchant_id,
            SupplierProduct.sku == sku,
            Supplier.status == "active",
        )
        .limit(1)
    )
    if offered is None:
        raise InvalidInput(
            f"{sku} is not in any active supplier's catalog",
            field="exchange.sku" if exchange.sku else "exchange.variant_id",
        )
    return sku


async def _returnable(
    session: AsyncSession, order: Order, claimed: Mapping[uuid.UUID, int] | None = None
) -> list[tuple[PurchaseOrderLine, PurchaseOrder, int]]:
    """Each purchase-order line of the order that shipped, with how many may still come back
    (shipped minus the quantities of its returns that are not rejected). ``claimed``: what the
    supplier says it shipped of these lines (refusing a cancellation) though no shipment is
    recorded yet; that counts as shipped."""
    claimed = claimed or {}
    shipped: Any = PurchaseOrderLine.quantity_shipped > 0
    if claimed:
        shipped = or_(shipped, PurchaseOrderLine.id.in_(list(claimed)))
    rows = (
        await session.execute(
            select(PurchaseOrderLine, PurchaseOrder)
            .join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.purchase_order_id)
            .where(
                PurchaseOrder.order_id == order.id,
                shipped,
            )
            .order_by(PurchaseOrder.created_at, PurchaseOrder.id, PurchaseOrderLine.position)
        )
    ).all()
    taken = dict(
        (
            await session.execute(
                select(ReturnLine.purchase_order_line_id, func.sum(ReturnLine.quantity))
                .join(Return, Return.id == ReturnLine.return_id)
                .where(Return.order_id == order.id, Return.status.in_(ReturnStatus.COUNTED))
                .group_by(ReturnLine.purchase_order_line_id)
            )
        ).all()
    )
    return [
        (
            pl,
            po,
            max(pl.quantity_shipped, min(claimed.get(pl.id, 0), pl.quantity))
            - int(taken.get(pl.id) or 0),
        )
        for pl, po in rows
    ]


async def _free_number(session: AsyncSession, order: Order, n: int) -> str:
    """The order's ``n``-th RMA number, or the next free one: numbers are unique per merchant
    and two order names can still meet ("#1001" and "1001"; a digest collision)."""
    while True:
        number = purchasing.bounded_number("R-", order.name, n)
        taken = await session.scalar(
            select(Return.id).where(
                Return.merchant_id == order.merchant_id, Return.number == number
            )
        )
        if taken is None:
            return number
        n += 1


async def _create(
    session: AsyncSession,
    order: Order,
    settings: ReturnSettings,
    wanted: Mapping[uuid.UUID, int],
    fields: Mapping[uuid.UUID, str],
    *,
    reason: str,
    origin: str,
    exchange: tuple[str, int | None] | None,
    source_key: str | None = None,
    only_po: uuid.UUID | None = None,
    only_po_lines: set[uuid.UUID] | None = None,
    approve: bool | None = None,
    clamp: bool = False,
    claimed: Mapping[uuid.UUID, int] | None = None,
) -> list[Return]:
    """Allocate the wanted quantities over the shipped purchase-order lines (the order is
    locked by the caller), one return per purchase order. ``clamp``: take what is left instead
    of refusing more than that (a cancellation's lines, some already returned)."""
    available = [
        x
        for x in await _returnable(session, order, claimed)
        if (only_po is None or x[1].id == only_po)
        and (only_po_lines is None or x[0].id in only_po_lines)
    ]
    titles = {ln.id: ln.title for ln in order.lines}
    by_po: dict[uuid.UUID, list[tuple[PurchaseOrderLine, int]]] = {}
    pos: dict[uuid.UUID, PurchaseOrder] = {}
    for line_id, quantity in wanted.items():
        left = quantity
        candidates = [(pl, po, n) for pl, po, n in available if pl.order_line_id == line_id]
        total = sum(max(n, 0) for *_, n in candidates)
        if total < quantity and not clamp:
            if not candidates:
                raise Conflict("nothing of this line has shipped", field=fields.get(line_id))
            raise Conflict(
                f"{quantity} > {total} returnable (shipped, not already being returned)",
                field=fields.get(line_id),
            )
        for pl, po, n in candidates:
            take = min(left, n)
            if take <= 0:
                continue
            by_po.setdefault(po.id, []).append((pl, take))
            pos[po.id] = po
            left -= take
    if not by_po:
        return []
    if exchange is not None and len(by_po) > 1:
        raise InvalidInput(
            "an exchange replaces a line shipped by one supplier: this one came from several",
            field="exchange",
        )
    existing = int(
        await session.scalar(
            select(func.count()).select_from(Return).where(Return.order_id == order.id)
        )
        or 0
    )
    now = utcnow()
    created = []
    for n, (po_id, taken) in enumerate(by_po.items(), start=1):
        po = pos[po_id]
        ret = Return(
            id=uuid7(),
            merchant_id=order.merchant_id,
            order_id=order.id,
            purchase_order_id=po.id,
            supplier_id=po.supplier_id,
            number=await _free_number(session, order, existing + n),
            status=ReturnStatus.REQUESTED,
            origin=origin,
            reason=reason,
            source_key=source_key,
            exchange=exchange is not None,
            exchange_sku=exchange[0] if exchange else None,
            exchange_variant_id=str(exchange[1]) if exchange and exchange[1] else None,
            requested_at=now,
        )
        session.add(ret)
        await session.flush()
        for position, (pl, quantity) in enumerate(taken):
            session.add(
                ReturnLine(
                    return_id=ret.id,
                    merchant_id=order.merchant_id,
                    order_line_id=pl.order_line_id,
                    purchase_order_line_id=pl.id,
                    position=position,
                    sku=pl.sku,
                    supplier_sku=pl.supplier_sku,
                    title=titles.get(pl.order_line_id, pl.sku),
                    quantity=quantity,
                )
            )
        await session.flush()
        await session.refresh(ret, ["lines"])
        record(
            session,
            order,
            "return.requested",
            f"return {ret.number} requested by the {origin} ({po.number}): "
            + ", ".join(f"{ln.quantity} x {ln.sku}" for ln in ret.lines)
            + f": {reason}"
            + (f"; exchange for {ret.exchange_sku}" if ret.exchange else ""),
            return_id=str(ret.id),
            purchase_order_id=str(po.id),
            origin=origin,
        )
        await _publish(session, order, ret, EventType.RETURN_REQUESTED)
        if approve if approve is not None else settings.auto_approve:
            await _approve(session, order, ret, "approved automatically (store policy)")
        created.append(ret)
    return created


# ------------------------------------------------------------------------------- steps


def _event_data(ret: Return) -> dict[str, Any]:
    return {
        "return_id": str(ret.id),
        "number": ret.number,
        "purchase_order_id": str(ret.purchase_order_id),
        "supplier_id": str(ret.supplier_id),
        "reason": ret.reason,
        "exchange": ret.exchange,
        #: ``cancellation``: opened because a cancelled order's parcel had already shipped.
        "origin": ret.origin,
        "lines": [
            {
                "order_line_id": str(ln.order_line_id),
                "purchase_order_line_id": str(ln.purchase_order_line_id),
                "quantity": ln.quantity,
                "title": ln.title,
            }
            for ln in ret.lines
        ],
    }


async def _publish(
    session: AsyncSession, order: Order, ret: Return, type_: str, **extra: Any
) -> None:
    step = type_.split(".", 1)[1]
    await publish(session, order, type_, key=f"return.{step}:{ret.id}", **_event_data(ret), **extra)


def _move(ret: Return, status: str) -> str:
    if status not in ReturnStatus.TRANSITIONS.get(ret.status, frozenset()):
        raise Conflict(f"return {ret.number} is {ret.status}: cannot become {status}")
    previous = ret.status
    ret.status = status
    ret.updated_at = utcnow()
    return previous


async def _order(session: AsyncSession, ret: Return) -> Order:
    order = await session.get(Order, ret.order_id)
    assert order is not None
    return order


async def _approve(session: AsyncSession, order: Order, ret: Return, message: str) -> None:
    """Approved: the supplier is told by ``returns.authorize``, which publishes
    ``return.approved`` once the customer's instructions are known."""
    _move(ret, ReturnStatus.APPROVED)
    ret.approved_at = utcnow()
    record(
        session,
        order,
        "return.approved",
        f"return {ret.number}: {message}",
        return_id=str(ret.id),
    )
    # Imported here: app.returns.tasks imports this module.
    from app.returns.tasks import authorize

    await enqueue(session, authorize, ret.id)


async def approve(session: AsyncSession, merchant_id: uuid.UUID, return_id: uuid.UUID) -> Return:
    ret = await get_for_merchant(session, merchant_id, return_id, lock=True)
    await _approve(session, await _order(session, ret), ret, "approved by the merchant")
    await session.flush()
    return ret


async def reject(
    session: AsyncSession, merchant_id: uuid.UUID, return_id: uuid.UUID, reason: str
) -> Return:
    ret = await get_for_merchant(session, merchant_id, return_id, lock=True)
    _move(ret, ReturnStatus.REJECTED)
    ret.rejected_at = utcnow()
    ret.rejection_reason = reason
    order = await _order(session, ret)
    record(
        session,
        order,
        "return.rejected",
        f"return {ret.number} rejected: {reason}",
        return_id=str(ret.id),
    )
    await _publish(session, order, ret, EventType.RETURN_REJECTED, rejection_reason=reason)
    await session.flush()
    return ret


async def receive_for_merchant(
    session: AsyncSession, merchant_id: uuid.UUID, return_id: uuid.UUID, condition: str
) -> Return:
    ret = await get_for_merchant(session, merchant_id, return_id, lock=True)
    await receive(session, ret, condition, by="merchant")
    return ret


async def receive(session: AsyncSession, ret: Return, condition: str, *, by: str) -> None:
    """Back at the supplier (or the merchant): resellable items go back into the supplier's
    stock, damaged ones are disposed of; an exchange's replacement order is created now (the
    merchant ships the new item once the old one is back, as a refund would wait too)."""
    if condition not in ReturnCondition.ALL:
        raise InvalidInput(f"one of {', '.join(ReturnCondition.ALL)}", field="condition")
    _move(ret, ReturnStatus.RECEIVED)
    now = utcnow()
    ret.received_at = now
    ret.condition = condition
    ret.received_by = by
    order = await _order(session, ret)
    if ret.authorized_at is None:
        # Back before the supplier call finished: the instructions are moot, but the step
        # still happened once, in order.
        await _authorized(session, order, ret, None, "received before the supplier answered")
    items = ", ".join(f"{ln.quantity} x {ln.sku}" for ln in ret.lines)
    if condition == ReturnCondition.RESELLABLE:
        for ln in ret.lines:
            await session.execute(
                update(SupplierProduct)
                .where(
                    SupplierProduct.supplier_id == ret.supplier_id,
                    SupplierProduct.sku == ln.sku,
                )
                .values(stock=SupplierProduct.stock + ln.quantity)
            )
        outcome = f"resellable, back in the supplier's stock: {items}"
    else:
        outcome = f"damaged, disposed of (no restock): {items}"
    record(
        session,
        order,
        "return.received",
        f"return {ret.number} received by the {by}: {outcome}",
        return_id=str(ret.id),
        condition=condition,
    )
    if ret.stall_case_id is not None:
        await session.execute(
            update(ExceptionCase)
            .where(ExceptionCase.id == ret.stall_case_id, ExceptionCase.resolved_at.is_(None))
            .values(resolved_at=now),
            execution_options={"synchronize_session": False},
        )
    if ret.exchange:
        await _replacement(session, order, ret)
    await _publish(session, order, ret, EventType.RETURN_RECEIVED, condition=condition)
    await session.flush()


async def _replacement(session: AsyncSession, order: Order, ret: Return) -> None:
    """The exchange's new order: the new variant at no charge (the customer paid for the
    original), to the same address, validated and routed like any order."""
    assert ret.exchange_sku is not None
    quantity = sum(ln.quantity for ln in ret.lines)
    title = ret.lines[0].title if ret.lines else ret.exchange_sku
    customer = None
    if order.customer_id is not None:
        c = await session.get(Customer, order.customer_id)
        if c is not None and c.redacted_at is None:
            customer = CustomerDraft(
                shopify_customer_id=c.shopify_customer_id,
                email=c.email,
                first_name=c.first_name,
                last_name=c.last_name,
                phone=c.phone,
            )
    zero = Decimal("0")
    draft = OrderDraft(
        source=EXCHANGE_SOURCE,
        name=ret.number.replace("R-", "X-", 1),
        currency=order.currency,
        subtotal_price=zero,
        total_tax=zero,
        total_shipping=zero,
        total_discounts=zero,
        total_price=zero,
        lines=[
            LineDraft(
                title=f"{title} (exchange)",
                quantity=quantity,
                price=zero,
                sku=ret.exchange_sku,
                variant_id=int(ret.exchange_variant_id) if ret.exchange_variant_id else None,
            )
        ],
        # Nothing to pay: it is settled by the original order.
        financial_status="paid",
        email=order.email,
        customer=customer,
        shipping_address=order.shipping_address,
        shipping_method=order.shipping_method,
        note=f"exchange for return {ret.number} of order {order.name}",
        customer_locale=order.customer_locale,
        external_ref=f"exchange:{ret.id}",
    )
    intake = await create_order(session, order.merchant_id, draft)
    replacement = intake.order
    ret.replacement_order_id = replacement.id
    if not intake.created:
        return
    record(
        session,
        order,
        "return.exchange_created",
        f"return {ret.number}: replacement order {replacement.name} created "
        f"({quantity} x {ret.exchange_sku})",
        return_id=str(ret.id),
        replacement_order_id=str(replacement.id),
    )
    record(
        session,
        replacement,
        "return.exchange_for",
        f"replacement for return {ret.number} of order {order.name}",
        return_id=str(ret.id),
        original_order_id=str(order.id),
    )


# ------------------------------------------------------------------------------- the supplier


@dataclass
class AuthorizationCall:
    """What ``returns.authorize`` needs to call the supplier with no transaction open."""

    kind: str
    supplier: Supplier
    po: PurchaseOrderDTO
    lines: tuple[ReturnLineDTO, ...]
    number: str
    reason: str
    attempt: int


async def claim_authorization(
    session: AsyncSession, return_id: uuid.UUID
) -> AuthorizationCall | None:
    """Lock the return; unless it still awaits the supplier (and is due), None. Count the
    attempt and lease it, so the sweeper and duplicate runs stay away during the call."""
    ret = await load(session, return_id, lock=True)
    now = utcnow()
    if ret is None or ret.status != ReturnStatus.APPROVED or ret.authorized_at is not None:
        return None
    if ret.next_attempt_at is not None and ret.next_attempt_at > now:
        return None
    po = await purchasing.load(session, ret.purchase_order_id)
    assert po is not None
    supplier = await purchasing.supplier_of(session, po)
    ret.attempts += 1
    ret.next_attempt_at = now + CLAIM_LEASE
    return AuthorizationCall(
        kind=supplier.connector,
        supplier=supplier,
        po=purchasing.to_dto(po),
        lines=tuple(ReturnLineDTO(ln.sku, ln.supplier_sku, ln.quantity) for ln in ret.lines),
        number=ret.number,
        reason=ret.reason,
        attempt=ret.attempts,
    )


async def authorization_done(
    session: AsyncSession, return_id: uuid.UUID, result: ReturnAuthorization | None
) -> bool:
    """Record the supplier's answer (None: it offers nothing, the merchant's address and
    instructions apply) and publish ``return.approved``. False if another run did already."""
    ret = await load(session, return_id, lock=True)
    if ret is None or ret.status != ReturnStatus.APPROVED or ret.authorized_at is not None:
        return False
    order = await _order(session, ret)
    await _authorized(session, order, ret, result, None)
    await session.flush()
    return True


async def authorization_retry(
    session: AsyncSession, return_id: uuid.UUID, error: str, delay: timedelta
) -> None:
    ret = await load(session, return_id, lock=True)
    if ret is None or ret.authorized_at is not None:
        return
    ret.last_error = error
    ret.next_attempt_at = utcnow() + delay
    record(
        session,
        await _order(session, ret),
        "return.supplier_retry",
        f"return {ret.number}: attempt {ret.attempts} to tell the supplier failed ({error}); "
        f"retrying in {delay.total_seconds():.1f}s",
        return_id=str(ret.id),
    )


async def authorization_failed(session: AsyncSession, return_id: uuid.UUID, error: str) -> None:
    """The supplier refused the return (or kept failing): the customer gets the merchant's
    address and instructions, and the merchant an exceptions-queue entry to sort it out."""
    ret = await load(session, return_id, lock=True)
    if ret is None or ret.status != ReturnStatus.APPROVED or ret.authorized_at is not None:
        return
    ret.last_error = error
    order = await _order(session, ret)
    open_exception(
        session,
        order,
        AUTHORIZATION_FAILED,
        f"return {ret.number}: the supplier could not be told ({error}); the customer was "
        "given your return address and instructions",
        return_id=str(ret.id),
    )
    await _authorized(session, order, ret, None, f"the supplier could not be told: {error}")
    await session.flush()


async def _authorized(
    session: AsyncSession,
    order: Order,
    ret: Return,
    result: ReturnAuthorization | None,
    note: str | None,
) -> None:
    merchant = await session.get(Merchant, ret.merchant_id)
    policy = settings_of(merchant).returns
    offered = result is not None and (result.return_address or result.label_url)
    if result is not None and offered:
        ret.return_address = dict(result.return_address) if result.return_address else None
        ret.label_url = result.label_url
        ret.instructions = result.instructions or policy.instructions
        where = "the supplier's " + (
            "label" if result.label_url and not result.return_address else "return address"
        )
    else:
        ret.return_address = (
            {k: v for k, v in _builtins(policy.return_address).items() if v is not None}
            if policy.return_address
            else None
        )
        ret.label_url = None
        ret.instructions = (result.instructions if result else None) or policy.instructions
        where = "your return address and instructions"
    if result is not None:
        ret.supplier_reference = result.supplier_reference
    ret.authorized_at = utcnow()
    ret.next_attempt_at = None
    record(
        session,
        order,
        "return.authorized",
        f"return {ret.number}: the customer gets {where}"
        + (f" (supplier reference {ret.supplier_reference})" if ret.supplier_reference else "")
        + (f"; {note}" if note else ""),
        return_id=str(ret.id),
        label_url=ret.label_url,
    )
    await _publish(
        session,
        order,
        ret,
        EventType.RETURN_APPROVED,
        instructions=ret.instructions,
        return_address=ret.return_address,
        label_url=ret.label_url,
    )


def _builtins(address: Any) -> dict[str, Any]:
    import msgspec

    out: dict[str, Any] = msgspec.to_builtins(address)
    return out


async def unauthorized(session: AsyncSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Approved returns the supplier has not been told about (the ``returns.authorize`` task's
    stale work), unless backing off or leased to a running call."""
    return await window.ids(
        session,
        select(Return.id).where(
            Return.status == ReturnStatus.APPROVED,
            Return.authorized_at.is_(None),
            Return.updated_at < window.cutoff,
            window.due(Return.next_attempt_at),
        ),
    )


# ------------------------------------------------------------------------------- stalls


async def open_stalled(session: AsyncSession, now: datetime) -> int:
    """One exceptions-queue entry per return approved but not received after the merchant's
    ``returns.stall_after_days``; returns how many were opened."""
    rows = (
        await session.execute(
            select(Return, Merchant)
            .join(Merchant, Merchant.id == Return.merchant_id)
            .where(
                Return.status == ReturnStatus.APPROVED,
                Return.stall_case_id.is_(None),
                Return.approved_at < now - timedelta(days=1),
            )
            .order_by(Return.approved_at)
            .limit(STALL_BATCH)
            .with_for_update(of=Return, skip_locked=True)
        )
    ).all()
    opened = 0
    for ret, merchant in rows:
        days = settings_of(merchant).returns.stall_after_days
        approved_at = ret.approved_at
        assert approved_at is not None
        if approved_at > now - timedelta(days=days):
            continue
        order = await _order(session, ret)
        case = open_exception(
            session,
            order,
            STALLED,
            f"return {ret.number} was approved {(now - approved_at).days} days ago and has not "
            f"been received (more than {days} days)",
            return_id=str(ret.id),
        )
        await session.flush()
        ret.stall_case_id = case.id
        record(
            session,
            order,
            "return.stalled",
            f"return {ret.number} not received after {days} days: in the exceptions queue",
            return_id=str(ret.id),
        )
        opened += 1
    await session.flush()
    return opened


__all__ = [
    "POStatus",
    "approve",
    "customer_request",
    "get_for_merchant",
    "open_for_cancellation",
    "page_for_merchant",
    "page_for_supplier",
    "receive",
    "reject",
    "request_return",
]
