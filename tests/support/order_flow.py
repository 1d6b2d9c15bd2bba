"""Helpers for tests that drive orders through webhooks and the workers."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.db import Database
from app.orders.models import Order
from app.suppliers.models import Supplier, SupplierProduct
from app.webhooks.models import WebhookDelivery
from tests.conftest import SHOPIFY_SECRET, MerchantHandle
from tests.support.shopify import webhook_headers
from tests.support.wait import eventually

Client = AsyncTestClient[Litestar]
FIXTURE_SKUS = ("IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK")


async def send(
    client: Client,
    topic: str,
    payload: dict[str, Any],
    *,
    shop: str = "acme-store.myshopify.com",
    webhook_id: str | None = None,
) -> Any:
    """POST a signed Shopify webhook."""
    body = json.dumps(payload).encode()
    headers = webhook_headers(
        body, secret=SHOPIFY_SECRET, topic=topic, shop=shop, webhook_id=webhook_id
    )
    return await client.post("/webhooks/shopify", content=body, headers=headers)


async def accepted(client: Client, topic: str, payload: dict[str, Any], **kw: Any) -> None:
    r = await send(client, topic, payload, **kw)
    assert (r.status_code, r.json()) == (200, {"status": "accepted"}), r.text


async def add_catalog(
    db: Database,
    merchant: MerchantHandle,
    skus: tuple[str, ...] | list[str] = FIXTURE_SKUS,
    *,
    supplier: str = "Acme Supply",
    status: str = "active",
) -> None:
    """A supplier of the merchant offering these SKUs."""
    async with db.transaction() as session:
        row = Supplier(merchant_id=merchant.id, name=supplier, connector="portal", status=status)
        session.add(row)
        await session.flush()
        for sku in skus:
            session.add(
                SupplierProduct(
                    merchant_id=merchant.id,
                    supplier_id=row.id,
                    sku=sku,
                    supplier_sku=f"S-{sku}",
                    unit_cost=Decimal("120.00"),
                    currency="USD",
                    stock=10,
                )
            )


async def all_processed(db: Database, n: int | None = None) -> None:
    """Wait until every stored webhook (at least ``n`` of them) has been processed."""

    async def probe() -> bool:
        async with db.sessionmaker() as session:
            total = await session.scalar(select(func.count()).select_from(WebhookDelivery))
            pending = await session.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.processed_at.is_(None))
            )
        return pending == 0 and (n is None or (total or 0) >= n)

    await eventually(probe)


async def outcomes(db: Database) -> list[str | None]:
    async with db.sessionmaker() as session:
        return list(
            (
                await session.scalars(
                    select(WebhookDelivery.outcome).order_by(WebhookDelivery.received_at)
                )
            ).all()
        )


async def order_id_of(db: Database, shopify_order_id: int = 450789469) -> Any:
    async def probe() -> Any:
        async with db.sessionmaker() as session:
            return await session.scalar(
                select(Order.id).where(Order.shopify_order_id == shopify_order_id)
            )

    return await eventually(probe)


async def detail(client: Client, merchant: MerchantHandle, order_id: Any) -> dict[str, Any]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=merchant.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def wait_status(
    client: Client,
    merchant: MerchantHandle,
    status: str,
    shopify_order_id: int = 450789469,
    *,
    db: Database,
) -> dict[str, Any]:
    """The order's detail once it reached ``status``."""
    order_id = await order_id_of(db, shopify_order_id)

    async def probe() -> dict[str, Any] | None:
        d = await detail(client, merchant, order_id)
        return d if d["status"] == status else None

    return await eventually(probe)


def events(order: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["type"], e["message"]) for e in order["timeline"]]


def types(order: dict[str, Any]) -> list[str]:
    return [e["type"] for e in order["timeline"]]


async def open_exceptions(client: Client, merchant: MerchantHandle) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/exceptions", headers=merchant.headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def later(minutes: int) -> str:
    """Shopify's ``updated_at`` some minutes after the fixture's."""
    return f"2008-01-10T11:{minutes:02d}:00-05:00"


async def store_delivery(
    db: Database, merchant: MerchantHandle, payload: dict[str, Any], topic: str = "orders/create"
) -> str:
    """A webhook as the receiver stores it, for calling the ``webhook.process`` task directly."""
    delivery_id = uuid.uuid4()
    async with db.transaction() as session:
        session.add(
            WebhookDelivery(
                id=delivery_id,
                source="shopify",
                merchant_id=merchant.id,
                topic=topic,
                webhook_id=str(uuid.uuid4()),
                event_id=str(uuid.uuid4()),
                payload=json.dumps(payload),
            )
        )
    return str(delivery_id)
