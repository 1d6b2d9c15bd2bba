"""Order rules and the orders domain's queries: creating orders from drafts, applying updates
and cancellations, loading orders for the API and the workers.

Every state change writes its timeline entry (:mod:`app.timeline.service`) in the same
transaction, so the timeline is never behind the order. Services flush; the caller's
transaction commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, exists, func, literal, null, select, union_all, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from app.api.pagination import Page, rows_page
from app.db import insert_for, utcnow, uuid7
from app.errors import Conflict
from app.events.models import EventType
from app.events.service import publish
from app.exceptions.service import open_exception
from app.jobs.outbox import enqueue
from app.jobs.task import StaleWindow
from app.orders.drafts import CustomerDraft, LineDraft, OrderDraft
from app.orders.models import (
    Customer,
    Order,
    OrderLine,
    OrderSource,
    OrderStatus,
)
from app.purchasing.models import PurchaseOrder, Shipment
from app.refunds.models import Refund
from app.security import new_public_token
from app.timeline.service import record, set_status

_CUSTOMER_FIELDS = ("email", "first_name", "last_name", "phone")


async def upsert_customer(
    session: AsyncSession, merchant_id: uuid.UUID, draft: CustomerDraft | None, email: str | None
) -> uuid.UUID | None:
    """The id of the merchant's customer the draft names, created or brought up to date (a
    redacted customer keeps its blanks). A Shopify customer is one ``INSERT ... ON CONFLICT DO
    UPDATE`` (its unique key decides under concurrency, no savepoint); a customer known by
    email only has no unique key: looked up, else inserted."""
    if draft is None and not email:
        return None
    draft = draft or CustomerDraft(email=email)
    values = {a: getattr(draft, a) for a in _CUSTOMER_FIELDS if getattr(draft, a) is not None}
    if draft.shopify_customer_id is not None:
        if session.get_bind().dialect.name == "postgresql":
            return await _upsert_shopify_customer_pg(
                session, merchant_id, draft.shopify_customer_id, values
            )
        return await _upsert_shopify_customer(
            session, merchant_id, draft.shopify_customer_id, values
        )
    if not draft.email:
        return None
    customer = await session.scalar(
        select(Customer)
        .where(
            Customer.merchant_id == merchant_id,
            Customer.email == draft.email,
            Customer.shopify_customer_id.is_(None),
        )
        .limit(1)
    )
    if customer is None:
        # With its details: one INSERT, not an INSERT and then an UPDATE.
        customer = Customer(merchant_id=merchant_id, shopify_customer_id=None, **values)
        session.add(customer)
        await session.flush()
    elif customer.redacted_at is None:
        for attr, value in values.items():
            setattr(customer, attr, value)
    return customer.id


async def _upsert_shopify_customer(
    session: AsyncSession, merchant_id: uuid.UUID, shopify_id: int, values: dict[str, Any]
) -> uuid.UUID:
    """One ``INSERT ... ON CONFLICT DO UPDATE``: its unique key decides under concurrency."""
    now = utcnow()
    insert = insert_for(session)(Customer).values(
        id=uuid7(),
        merchant_id=merchant_id,
        shopify_customer_id=shopify_id,
        created_at=now,
        updated_at=now,
        **values,
    )
    table = Customer.__table__.c
    kept = {
        a: case(
            (table.redacted_at.is_(None), func.coalesce(insert.excluded[a], table[a])),
            else_=table[a],
        )
        for a in _CUSTOMER_FIELDS
    }
    customer_id: uuid.UUID = (
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=["merchant_id", "shopify_customer_id"],
                set_={**kept, "updated_at": now},
            ).returning(Customer.id)
        )
    ).scalar_one()
    return customer_id


async def _upsert_shopify_customer_pg(
    session: AsyncSession, merchant_id: uuid.UUID, shopify_id: int, values: dict[str, Any]
) -> uuid.UUID:
    """The upsert without the row lock where nothing changes: a returning customer's row is
    locked (until the order's transaction commits) only when the order brings new details.

    ``ON CONFLICT DO UPDATE`` always locks the existing row, so every order of one customer (a
    wholesale buyer, a POS register, a load test) queued behind the one before it for the whole
    of its transaction. Instead one statement inserts the customer if new (``DO NOTHING``) and
    otherwise reads the stored details; only if they differ does an UPDATE follow."""
    now = utcnow()
    inserted = (
        postgresql_insert(Customer)
        .values(
            id=uuid7(),
            merchant_id=merchant_id,
            shopify_customer_id=shopify_id,
            created_at=now,
            updated_at=now,
            **values,
        )
        .on_conflict_do_nothing(index_elements=["merchant_id", "shopify_customer_id"])
        .returning(Customer.id)
        .cte("inserted")
    )
    fields = [getattr(Customer, a) for a in _CUSTOMER_FIELDS]
    stmt = union_all(
        select(inserted.c.id, literal(True), null(), *[null() for _ in fields]),
        select(Customer.id, literal(False), Customer.redacted_at, *fields).where(
            Customer.merchant_id == merchant_id,
            Customer.shopify_customer_id == shopify_id,
            ~exists(select(inserted.c.id)),
        ),
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        # The row was committed by another order after this statement's snapshot began (its
        # insert conflicted, its read could not see it): the plain upsert waits for it.
        return await _upsert_shopify_customer(session, merchant_id, shopify_id, values)
    customer_id: uuid.UUID = row[0]
    if row[1] or row[2] is not None:  # new, or redacted (its blanks are kept)
        return customer_id
    stored = dict(zip(_CUSTOMER_FIELDS, row[3:], strict=True))
    changed = {a: v for a, v in values.items() if stored[a] != v}
    if changed:
        await session.execute(
            update(Customer)
            .where(Customer.id == customer_id, Customer.redacted_at.is_(None))
            .values(**changed, updated_at=now)
        )
    return customer_id


def _line(order: Order, position: int, d: LineDraft) -> OrderLine:
    return OrderLine(
        id=uuid7(),  # known before the flush: routing names lines by id
        order_id=order.id,
        merchant_id=order.merchant_id,
        position=position,
        shopify_line_id=d.shopify_line_id,
        sku=d.sku,
        variant_id=d.variant_id,
        product_id=d.product_id,
        title=d.title,
        variant_title=d.variant_title,
        quantity=d.quantity,
        price=d.price,
        total_discount=d.total_discount,
        requires_shipping=d.requires_shipping,
    )


async def find_existing(
    session: AsyncSession, merchant_id: uuid.UUID, draft: OrderDraft, *, lock: bool = False
) -> Order | None:
    """The order this draft is about, with its lines. ``lock`` (before changing it) takes the
    row lock on PostgreSQL, so an update or a cancellation and a validation of the same order
    run one after the other instead of overwriting each other's decision. (SQLite transactions
    begin IMMEDIATE: writers are already serialised.)"""
    query = select(Order).where(Order.merchant_id == merchant_id)
    if draft.shopify_order_id is not None:
        query = query.where(Order.shopify_order_id == draft.shopify_order_id)
    elif draft.external_ref is not None:
        query = query.where(Order.external_ref == draft.external_ref)
    else:
        return None
    return await _with_lines(session, query, lock=lock)


async def load_for_change(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    """The order with its lines, row-locked like ``find_existing(lock=True)``: for a worker
    about to decide on it."""
    return await _with_lines(session, select(Order).where(Order.id == order_id), lock=True)


async def _with_lines(session: AsyncSession, query: Select[Order], *, lock: bool) -> Order | None:
    if lock:
        query = query.with_for_update(of=Order)
    order: Order | None = await session.scalar(query.options(selectinload(Order.lines)))
    return order


async def order_by_id(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    """The order, as this session holds it or from the database."""
    return await session.get(Order, order_id)


@dataclass
class Intake:
    order: Order
    created: bool


async def create_order(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    draft: OrderDraft,
    *,
    enqueue_validation: bool = True,
) -> Intake:
    """Create the order unless it exists (same Shopify id or merchant reference).

    Safe under concurrency: the unique constraints decide, inside a savepoint, and the loser
    gets the winner's order back with ``created=False``. A new order in ``received`` gets its
    ``order.validate`` job, unless ``enqueue_validation=False``: then the caller validates it
    in this transaction (``app.orders.tasks.validate_and_route``).
    """
    status = OrderStatus.CANCELLED if draft.cancelled_at else OrderStatus.RECEIVED
    now = utcnow()
    values: dict[str, Any] = {
        "id": uuid7(),
        "merchant_id": merchant_id,
        "source": draft.source,
        "shopify_order_id": draft.shopify_order_id,
        "shopify_gid": draft.shopify_gid,
        "external_ref": draft.external_ref,
        "name": draft.name,
        "order_number": draft.order_number,
        "customer_id": None,
        "email": draft.email,
        "currency": draft.currency,
        "subtotal_price": draft.subtotal_price,
        "total_tax": draft.total_tax,
        "total_shipping": draft.total_shipping,
        "total_discounts": draft.total_discounts,
        "total_price": draft.total_price,
        "financial_status": draft.financial_status,
        "status": status,
        "status_reason": None,
        "shipping_address": draft.shipping_address,
        "billing_address": draft.billing_address,
        "shipping_method": draft.shipping_method,
        "stripe_payment_reference": draft.stripe_payment_reference,
        "note": draft.note,
        "customer_locale": draft.customer_locale,
        "source_updated_at": draft.source_updated_at,
        "placed_at": draft.placed_at or now,
        "cancelled_at": draft.cancelled_at,
        "cancel_requested_at": None,
        "tracking_token": new_public_token(),
        "created_at": now,
        "updated_at": now,
    }
    # The order's row claims it: its unique keys (Shopify id, merchant reference) decide under
    # concurrency in the INSERT itself (no lookup before, no savepoint); the loser gets the
    # winner's order back.
    claimed = (
        await session.execute(
            insert_for(session)(Order).values(**values).on_conflict_do_nothing().returning(Order.id)
        )
    ).scalar_one_or_none()
    if claimed is None:
        existing = await find_existing(session, merchant_id, draft, lock=True)
        if existing is None:
            raise Conflict("order exists under another key")
        return Intake(existing, False)
    # The row as inserted, held by the session as persistent: what changes next (its customer,
    # the statuses validation and routing give it) goes in one UPDATE at the flush.
    order = Order(**values)
    make_transient_to_detached(order)
    lines = [_line(order, position, line) for position, line in enumerate(draft.lines)]
    # Loaded for whoever validates the order in this transaction; inserted at the next flush,
    # all in one statement.
    set_committed_value(order, "lines", lines)
    session.add(order)
    session.add_all(lines)
    customer_id = await upsert_customer(session, merchant_id, draft.customer, draft.email)
    if customer_id is not None:
        order.customer_id = customer_id
    record(
        session,
        order,
        "order.received",
        f"order {order.name} received from {draft.source}",
        source=draft.source,
        shopify_order_id=draft.shopify_order_id,
        total_price=str(draft.total_price),
        currency=draft.currency,
        lines=len(draft.lines),
    )
    for note in draft.extra.get("dropped", ()):  # unusable values that did not cost the order
        record(session, order, "order.value_dropped", note)
    if status == OrderStatus.CANCELLED:
        record(
            session,
            order,
            "status.cancelled",
            f"{OrderStatus.RECEIVED} -> {OrderStatus.CANCELLED}: order arrived already cancelled",
            previous=None,
        )
    else:
        # Imported here: app.orders.tasks -> app.orders.validation -> this module (a cycle).
        from app.orders.tasks import validate_order

        if enqueue_validation:
            await enqueue(session, validate_order, order.id)
        with session.no_autoflush:  # the lines and entries go with the caller's next flush
            await publish(
                session,
                order,
                EventType.ORDER_CREATED,
                key=f"order.created:{order.id}",
                name=order.name,
                source=draft.source,
            )
    if enqueue_validation:
        await session.flush()
    # Else the caller validates (and routes) in this transaction, and flushes once at its end.
    return Intake(order, True)


def _changed_fields(order: Order, draft: OrderDraft) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for attr in (
        "email",
        "financial_status",
        "shipping_address",
        "billing_address",
        "shipping_method",
        "note",
        "subtotal_price",
        "total_tax",
        "total_shipping",
        "total_discounts",
        "total_price",
    ):
        new = getattr(draft, attr)
        if getattr(order, attr) != new:
            changes[attr] = new
    old_lines = [
        (ln.shopify_line_id, ln.sku, ln.variant_id, ln.quantity, ln.price) for ln in order.lines
    ]
    if old_lines != [d.signature() for d in draft.lines]:
        changes["lines"] = draft.lines
    return changes


async def apply_update(session: AsyncSession, order: Order, draft: OrderDraft) -> str:
    """Apply a newer version of the order (``orders/updated``). Returns what happened.

    A replay older than what we hold never overwrites it. Changes to an order not yet handed to
    suppliers are applied and the order is validated again; later, they are recorded for a person.
    """
    if is_stale(order, draft):
        return "stale"
    order.source_updated_at = draft.source_updated_at or order.source_updated_at
    if order.status == OrderStatus.CANCELLED:
        # Cancelled is final (Shopify cannot un-cancel); later edits concern nobody.
        return "ignored: order cancelled"
    if draft.cancelled_at is not None:
        return await cancel_order(session, order, reason="cancelled in Shopify")
    changes = _changed_fields(order, draft)
    if not changes:
        return "unchanged"
    names = sorted(changes)
    if order.status not in OrderStatus.UNROUTED:
        record(
            session,
            order,
            "order.update_ignored",
            f"changes to {', '.join(names)} arrived after the order left intake",
            fields=names,
        )
        open_exception(
            session,
            order,
            "update_after_routing",
            f"order changed in Shopify after routing ({', '.join(names)}): check with suppliers",
            fields=names,
        )
        return "recorded"
    for attr, value in changes.items():
        if attr != "lines":
            setattr(order, attr, value)
    if "lines" in changes:
        for line in list(order.lines):
            await session.delete(line)
        await session.flush()
        order.lines.clear()
        for position, d in enumerate(draft.lines):
            line = _line(order, position, d)
            session.add(line)
    order.updated_at = utcnow()
    record(session, order, "order.updated", f"updated: {', '.join(names)}", fields=names)
    if order.status != OrderStatus.RECEIVED:
        set_status(session, order, OrderStatus.RECEIVED, "changed; validating again")
    from app.orders.tasks import validate_order  # here: a cycle, see create_order

    await enqueue(session, validate_order, order.id)
    await session.flush()
    return "updated"


def is_stale(order: Order, draft: OrderDraft) -> bool:
    """The draft is not newer than what the order already holds (a retry replaying an old
    payload, or webhooks arriving out of order): it must not overwrite anything."""
    return (
        draft.source_updated_at is not None
        and order.source_updated_at is not None
        and draft.source_updated_at <= order.source_updated_at
    )


async def cancel_order(
    session: AsyncSession, order: Order, *, reason: str, origin: str = "shopify"
) -> str:
    """Cancel the order (``app.cancellations``: at once before routing, else supplier by
    supplier). What happened, in a word, for the caller's log."""
    # Imported here: the cancellations domain builds on purchasing, which builds on orders.
    from app.cancellations.service import start
    from app.errors import Conflict

    if order.status == OrderStatus.CANCELLED:
        return "already_cancelled"
    try:
        started = await start(session, order, reason=reason, origin=origin)
    except Conflict as exc:
        # Shopify cancelled an order whose every parcel is on its way: nothing to cancel.
        record(session, order, "order.cancel_refused", f"{reason}: {exc.detail}")
        await session.flush()
        return "nothing_to_cancel"
    if not started:
        return "already_requested"
    return "cancelled" if order.status == OrderStatus.CANCELLED else "cancel_requested"


async def enter_order(session: AsyncSession, merchant_id: uuid.UUID, draft: OrderDraft) -> Intake:
    """An order entered by hand: ``create_order``, and once created, the order as stored (money
    at its stored scale, as GET shows it, not the objects as built) with lines and timeline."""
    intake = await create_order(session, merchant_id, draft)
    if not intake.created:
        return intake
    await session.flush()
    session.expunge_all()
    order = await get_order(session, merchant_id, intake.order.id)
    assert order is not None
    return Intake(order, True)


async def get_order(
    session: AsyncSession, merchant_id: uuid.UUID, order_id: uuid.UUID, *, timeline: bool = True
) -> Order | None:
    """The merchant's order with its lines, and its timeline unless ``timeline=False``."""
    loads = (
        (selectinload(Order.lines), selectinload(Order.events))
        if timeline
        else (selectinload(Order.lines),)
    )
    order: Order | None = await session.scalar(
        select(Order).where(Order.id == order_id, Order.merchant_id == merchant_id).options(*loads)
    )
    return order


async def list_orders(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    *,
    statuses: Sequence[str],
    created_from: datetime | None,
    created_to: datetime | None,
    cursor: str | None,
    limit: int,
) -> Page[Order]:
    """The merchant's orders, newest first: in one of ``statuses`` (any, if none), created in
    ``[created_from, created_to)``."""
    query = select(Order).where(Order.merchant_id == merchant_id)
    if statuses:
        query = query.where(Order.status.in_(statuses))
    if created_from is not None:
        query = query.where(Order.created_at >= created_from)
    if created_to is not None:
        query = query.where(Order.created_at < created_to)
    return await rows_page(session, query, Order.created_at, Order.id, cursor=cursor, limit=limit)


@dataclass
class OrderView:
    """An order as the API shows it: lines, timeline, the purchase orders sent to suppliers
    (with their lines, oldest first) and each one's shipments."""

    order: Order
    purchase_orders: list[PurchaseOrder]
    shipments: dict[uuid.UUID, list[Shipment]]
    refunds: list[Refund] = field(default_factory=list)


async def order_view(
    session: AsyncSession, merchant_id: uuid.UUID, order_id: uuid.UUID
) -> OrderView | None:
    order = await get_order(session, merchant_id, order_id)
    if order is None:
        return None
    pos = list(
        await session.scalars(
            select(PurchaseOrder)
            .where(PurchaseOrder.order_id == order.id)
            .options(selectinload(PurchaseOrder.lines))
            .order_by(PurchaseOrder.created_at, PurchaseOrder.id)
        )
    )
    shipments: dict[uuid.UUID, list[Shipment]] = {}
    if pos:
        for sh in await session.scalars(
            select(Shipment)
            .where(Shipment.purchase_order_id.in_([po.id for po in pos]))
            .order_by(Shipment.shipped_at, Shipment.id)
        ):
            shipments.setdefault(sh.purchase_order_id, []).append(sh)
    refunds = list(
        await session.scalars(
            select(Refund).where(Refund.order_id == order.id).order_by(Refund.created_at, Refund.id)
        )
    )
    return OrderView(order, pos, shipments, refunds)


async def unvalidated(session: AsyncSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Orders still waiting for validation (the ``order.validate`` task's stale work)."""
    return await window.ids(
        session,
        select(Order.id).where(
            Order.status == OrderStatus.RECEIVED, Order.updated_at < window.cutoff
        ),
    )


__all__ = [
    "OrderSource",
    "apply_update",
    "cancel_order",
    "create_order",
    "enter_order",
    "find_existing",
    "get_order",
    "is_stale",
    "list_orders",
    "load_for_change",
    "order_by_id",
    "order_view",
]
