"""Shopify's mandatory privacy webhooks.

Redaction wipes personal data in place (names, emails, phones, addresses, the free-text note)
and keeps the order rows, amounts, lines and timelines that bookkeeping needs. Copies count too:
the raw webhook bodies kept in ``webhook_deliveries`` and the reasons of data-request entries in
the exceptions queue are scrubbed with the rows they describe.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.db import utcnow
from app.exceptions.service import cases_of_kind, open_case
from app.orders.drafts import PayloadError, shopify_id
from app.orders.models import Customer, Order
from app.timeline.service import record
from app.webhooks.models import WebhookDelivery

_REDACTED_ORDER: dict[str, Any] = {
    "email": None,
    "shipping_address": None,
    "billing_address": None,
    "note": None,
}
_REDACTED_CUSTOMER: dict[str, Any] = {
    "email": None,
    "first_name": None,
    "last_name": None,
    "phone": None,
}
#: What a scrubbed webhook body becomes (valid JSON; the column is NOT NULL).
REDACTED_BODY = '{"redacted": true}'
DATA_REQUEST = "customer_data_request"
_ORDER_TOPICS = ("orders/create", "orders/updated", "orders/cancelled")


def _id(value: Any) -> int | None:
    try:
        return shopify_id(value, "id")
    except PayloadError:
        return None


def _customer_keys(payload: Any) -> tuple[int | None, str | None]:
    customer = payload.get("customer") if isinstance(payload, dict) else None
    customer = customer if isinstance(customer, dict) else {}
    email = customer.get("email")
    return _id(customer.get("id")), (email.strip() or None) if isinstance(email, str) else None


def _order_ids(payload: Any, key: str) -> list[int]:
    raw = payload.get(key) if isinstance(payload, dict) else None
    ids = [_id(i) for i in raw] if isinstance(raw, list) else []
    return [i for i in ids if i is not None]


async def _customer_orders(
    session: AsyncSession, merchant_id: uuid.UUID, payload: Any, key: str
) -> list[Order]:
    customer_id, email = _customer_keys(payload)
    shopify_ids = _order_ids(payload, key)
    conditions: list[ColumnElement[bool]] = []
    if shopify_ids:
        conditions.append(Order.shopify_order_id.in_(shopify_ids))
    if customer_id is not None:
        conditions.append(
            Order.customer_id.in_(
                select(Customer.id).where(
                    Customer.merchant_id == merchant_id,
                    Customer.shopify_customer_id == customer_id,
                )
            )
        )
    if email:
        conditions.append(Order.email == email)
    if not conditions:
        return []
    return list(
        (
            await session.scalars(
                select(Order)
                .where(Order.merchant_id == merchant_id, or_(*conditions))
                .order_by(Order.placed_at, Order.id)
            )
        ).all()
    )


async def data_request(session: AsyncSession, merchant_id: uuid.UUID, payload: Any) -> str:
    """The merchant must send the customer their data: open an exceptions-queue entry listing
    what we hold."""
    orders = await _customer_orders(session, merchant_id, payload, "orders_requested")
    customer_id, email = _customer_keys(payload)
    open_case(
        session,
        merchant_id,
        DATA_REQUEST,
        f"customer {email or customer_id} asked for their data: "
        f"{len(orders)} order(s) hold it ({', '.join(o.name for o in orders) or 'none'})",
        order_ids=[str(o.id) for o in orders],
        shopify_order_ids=[str(o.shopify_order_id) for o in orders],
        shopify_customer_id=customer_id,
    )
    return f"data request recorded ({len(orders)} orders)"


async def redact_customer(session: AsyncSession, merchant_id: uuid.UUID, payload: Any) -> str:
    orders = await _customer_orders(session, merchant_id, payload, "orders_to_redact")
    customer_id, email = _customer_keys(payload)
    for order in orders:
        for attr, value in _REDACTED_ORDER.items():
            setattr(order, attr, value)
        record(
            session, order, "privacy.redacted", "customer data redacted on the customer's request"
        )
    conditions: list[ColumnElement[bool]] = []
    if customer_id is not None:
        conditions.append(Customer.shopify_customer_id == customer_id)
    if email:
        conditions.append(Customer.email == email)
    linked = {o.customer_id for o in orders if o.customer_id is not None}
    if linked:
        conditions.append(Customer.id.in_(linked))
    if conditions:
        await session.execute(
            update(Customer)
            .where(Customer.merchant_id == merchant_id, or_(*conditions))
            .values(**_REDACTED_CUSTOMER, redacted_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
    shopify_ids = {o.shopify_order_id for o in orders if o.shopify_order_id is not None}
    shopify_ids.update(_order_ids(payload, "orders_to_redact"))
    copies = await _scrub_deliveries(session, merchant_id, shopify_ids, customer_id, email)
    await _scrub_data_requests(session, merchant_id, customer_id, email)
    return f"redacted {len(orders)} orders ({copies} stored webhook bodies)"


async def redact_shop(session: AsyncSession, merchant_id: uuid.UUID) -> str:
    """48 hours after uninstall: wipe every customer's personal data for the shop."""
    result = await session.execute(
        update(Order).where(Order.merchant_id == merchant_id).values(**_REDACTED_ORDER),
        execution_options={"synchronize_session": False},
    )
    await session.execute(
        update(Customer)
        .where(Customer.merchant_id == merchant_id)
        .values(**_REDACTED_CUSTOMER, redacted_at=utcnow()),
        execution_options={"synchronize_session": False},
    )
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.merchant_id == merchant_id, WebhookDelivery.processed_at.is_not(None)
        )
        .values(payload=REDACTED_BODY),
        execution_options={"synchronize_session": False},
    )
    await _scrub_data_requests(session, merchant_id, None, None, everyone=True)
    return f"shop redacted ({getattr(result, 'rowcount', 0)} orders)"


async def _scrub_deliveries(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    shopify_order_ids: set[int],
    customer_id: int | None,
    email: str | None,
) -> int:
    """Blank the stored bodies of processed webhooks about these orders or this customer.

    Unprocessed ones are left for their worker (it still needs them; what it writes is redacted
    by the next request or by ``shop/redact``)."""
    needles = [str(i) for i in shopify_order_ids]
    if customer_id is not None:
        needles.append(str(customer_id))
    if email:
        needles.append(email)
    if not needles:
        return 0
    rows = (
        await session.execute(
            select(WebhookDelivery.id, WebhookDelivery.topic, WebhookDelivery.payload).where(
                WebhookDelivery.merchant_id == merchant_id,
                WebhookDelivery.processed_at.is_not(None),
                WebhookDelivery.payload != REDACTED_BODY,
                or_(*(WebhookDelivery.payload.contains(n, autoescape=True) for n in needles)),
            )
        )
    ).all()
    hits = [
        delivery_id
        for delivery_id, topic, body in rows
        if _concerns(topic, body, shopify_order_ids, customer_id, email)
    ]
    if hits:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(hits))
            .values(payload=REDACTED_BODY),
            execution_options={"synchronize_session": False},
        )
    return len(hits)


def _concerns(
    topic: str, body: str, order_ids: set[int], customer_id: int | None, email: str | None
) -> bool:
    """Whether a stored webhook body is about one of these orders or this customer (the SQL
    substring match is only a pre-filter: ``123`` is also in ``91234``)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    if not isinstance(payload, dict):
        return False
    their_customer, their_email = _customer_keys(payload)
    if customer_id is not None and their_customer == customer_id:
        return True
    if email and email in (their_email, payload.get("email"), payload.get("contact_email")):
        return True
    if topic in _ORDER_TOPICS:
        return _id(payload.get("id")) in order_ids
    return bool(order_ids & set(_order_ids(payload, "orders_requested")))


async def _scrub_data_requests(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    customer_id: int | None,
    email: str | None,
    *,
    everyone: bool = False,
) -> None:
    """Data-request entries name the customer in their reason: take the name out."""
    for case in await cases_of_kind(session, merchant_id, DATA_REQUEST):
        mine = everyone or (
            (customer_id is not None and case.data.get("shopify_customer_id") == customer_id)
            or (email is not None and email in case.reason)
        )
        if mine and not case.data.get("redacted"):
            case.reason = "customer data request (the customer's data has since been redacted)"
            case.data = {**case.data, "redacted": True}
