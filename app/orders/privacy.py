"""Shopify's mandatory privacy webhooks.

Redaction wipes personal data in place (names, emails, phones, addresses) and keeps the order
rows, amounts and timelines that bookkeeping needs.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.db import utcnow
from app.orders.models import Customer, ExceptionCase, Order, OrderEvent

_REDACTED_ORDER = {"email": None, "shipping_address": None, "billing_address": None}


def _customer_keys(payload: Any) -> tuple[int | None, str | None]:
    customer = payload.get("customer") if isinstance(payload, dict) else None
    customer = customer if isinstance(customer, dict) else {}
    cid = customer.get("id")
    return (int(cid) if isinstance(cid, int | str) and str(cid).isdigit() else None), (
        customer.get("email") or None
    )


async def _customer_orders(
    session: AsyncSession, merchant_id: uuid.UUID, payload: Any, key: str
) -> list[Order]:
    customer_id, email = _customer_keys(payload)
    shopify_ids = [int(i) for i in (payload.get(key) or []) if str(i).isdigit()]
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
                select(Order).where(Order.merchant_id == merchant_id, or_(*conditions))
            )
        ).all()
    )


async def data_request(session: AsyncSession, merchant_id: uuid.UUID, payload: Any) -> str:
    """The merchant must send the customer their data: open an exceptions-queue entry listing
    what we hold."""
    orders = await _customer_orders(session, merchant_id, payload, "orders_requested")
    customer_id, email = _customer_keys(payload)
    session.add(
        ExceptionCase(
            merchant_id=merchant_id,
            kind="customer_data_request",
            reason=f"customer {email or customer_id} asked for their data: "
            f"{len(orders)} order(s) hold it",
            data={"order_ids": [str(o.id) for o in orders], "shopify_customer_id": customer_id},
        )
    )
    return f"data request recorded ({len(orders)} orders)"


async def redact_customer(session: AsyncSession, merchant_id: uuid.UUID, payload: Any) -> str:
    orders = await _customer_orders(session, merchant_id, payload, "orders_to_redact")
    customer_id, email = _customer_keys(payload)
    for order in orders:
        for attr, value in _REDACTED_ORDER.items():
            setattr(order, attr, value)
        session.add(
            OrderEvent(
                order_id=order.id,
                merchant_id=merchant_id,
                type="privacy.redacted",
                message="customer data redacted on the customer's request",
            )
        )
    conditions = []
    if customer_id is not None:
        conditions.append(Customer.shopify_customer_id == customer_id)
    if email:
        conditions.append(Customer.email == email)
    if conditions:
        await session.execute(
            update(Customer)
            .where(Customer.merchant_id == merchant_id, or_(*conditions))
            .values(email=None, first_name=None, last_name=None, phone=None, redacted_at=utcnow())
        )
    return f"redacted {len(orders)} orders"


async def redact_shop(session: AsyncSession, merchant_id: uuid.UUID) -> str:
    """48 hours after uninstall: wipe every customer's personal data for the shop."""
    result = await session.execute(
        update(Order).where(Order.merchant_id == merchant_id).values(**_REDACTED_ORDER)
    )
    await session.execute(
        update(Customer)
        .where(Customer.merchant_id == merchant_id)
        .values(email=None, first_name=None, last_name=None, phone=None, redacted_at=utcnow())
    )
    return f"shop redacted ({getattr(result, 'rowcount', 0)} orders)"
