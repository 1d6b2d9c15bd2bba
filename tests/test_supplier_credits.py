"""Supplier credits: a received return and a cancelled purchase order each make one credit of
their cost; the merchant sees what each supplier owes, filters, settles once; tenants apart."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from app.db import Database
from app.events.models import EventReaction
from app.events.service import publish
from app.orders.models import Order
from app.purchasing.models import PurchaseOrderLine
from tests.conftest import MerchantHandle, make_merchant
from tests.support.portal import Client, bearer, line, offer, portal_supplier, routed_order
from tests.support.wait import eventually

URL = "/api/v1/supplier-credits"
SUBSCRIBER = "app.credits.tasks.credit_returned_lines"


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, "credit-shop.myshopify.com", auto_route=True)


async def received(db: Database, order_id: str, po: dict[str, Any], key: str, rid: str) -> None:
    async with db.transaction() as session:
        order = await session.get(Order, uuid.UUID(order_id))
        assert order is not None
        pol = await session.scalar(
            select(PurchaseOrderLine).where(
                PurchaseOrderLine.purchase_order_id == uuid.UUID(po["id"])
            )
        )
        assert pol is not None
        await publish(
            session,
            order,
            "return.received",
            key=key,
            return_id=rid,
            number="RMA-1",
            purchase_order_id=po["id"],
            supplier_id=po["supplier_id"],
            reason="too small",
            exchange=False,
            condition="resellable",
            lines=[
                {
                    "order_line_id": str(pol.order_line_id),
                    "purchase_order_line_id": str(pol.id),
                    "quantity": 2,
                    "title": "Blue",
                }
            ],
        )


async def listing(client: Client, shop: MerchantHandle, **params: Any) -> dict[str, Any]:
    r = await client.get(URL, params=params, headers=shop.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_credits_from_a_return_and_a_cancellation_listed_and_settled(
    client: Client, db: Database, shop: MerchantHandle
) -> None:
    beta = await portal_supplier(client, shop, "Beta")
    await offer(client, shop, beta["supplier"]["id"], "BLUE", stock=10, unit_cost="4.25")
    order_id, [po] = await routed_order(client, shop, "K-1", [line("BLUE", 3)])
    rid = str(uuid.uuid4())
    await received(db, order_id, po, f"return.received:{rid}", rid)
    # The same return seen again (a replay under another key): still one credit.
    await received(db, order_id, po, f"return.received:{rid}:again", rid)

    async def both_handled() -> bool:
        async with db.sessionmaker() as session:
            done = (
                await session.scalars(
                    select(EventReaction.done_at).where(EventReaction.subscriber == SUBSCRIBER)
                )
            ).all()
        return len(done) == 2 and all(done)

    await eventually(both_handled, timeout=45)
    body = await listing(client, shop)
    [credit] = body["items"]
    assert (credit["kind"], credit["amount"], credit["currency"], credit["status"]) == (
        "return",
        "8.50",
        "USD",
        "expected",
    )
    assert credit["source_key"] == f"return:{rid}"
    assert credit["purchase_order_id"] == po["id"]
    assert credit["note"] == f"return RMA-1 of {po['number']} received (resellable)"

    # A second order cancelled after placement: the supplier owes its cost too.
    order2, [po2] = await routed_order(client, shop, "K-2", [line("BLUE", 1)])
    r = await client.post(
        f"/api/v1/orders/{order2}/cancel", json={"reason": "r"}, headers=shop.headers
    )
    assert r.status_code == 202, r.text

    async def awaiting() -> bool:
        r = await client.get(f"/api/v1/orders/{order2}/cancellation", headers=shop.headers)
        return bool(r.json()["purchase_orders"][0]["status"] == "awaiting_supplier")

    await eventually(awaiting, timeout=45)
    r = await client.post(
        f"/supplier/v1/orders/{po2['id']}/cancellation",
        json={"accepted": True},
        headers=bearer(beta["api_key"]),
    )
    assert r.status_code == 200, r.text
    body = await listing(client, shop)
    assert [(c["kind"], c["amount"]) for c in body["items"]] == [
        ("cancellation", "4.25"),
        ("return", "8.50"),
    ]
    assert body["totals"] == [
        {
            "supplier_id": beta["supplier"]["id"],
            "supplier_name": "Beta",
            "currency": "USD",
            "expected": "12.75",
            "settled": "0.00",
        }
    ]

    settle = await client.post(
        f"{URL}/{credit['id']}/settle", json={"note": "credit note 77"}, headers=shop.headers
    )
    assert settle.status_code == 200, settle.text
    assert settle.json()["status"] == "settled"
    assert settle.json()["settled_at"] is not None
    assert settle.json()["note"].endswith("; credit note 77")
    again = await client.post(f"{URL}/{credit['id']}/settle", headers=shop.headers)
    assert again.status_code == 409
    body = await listing(client, shop, status="expected")
    assert [c["kind"] for c in body["items"]] == ["cancellation"]
    assert body["totals"][0]["expected"] == "4.25"
    assert body["totals"][0]["settled"] == "8.50"
    assert (await listing(client, shop, supplier_id=str(uuid.uuid4())))["items"] == []
    page = await listing(client, shop, limit=1)
    assert len(page["items"]) == 1
    assert page["next_cursor"] is not None

    bad = await client.get(URL, params={"status": "paid"}, headers=shop.headers)
    assert bad.status_code == 400
    assert "status" in bad.json()["detail"]
    other = await make_merchant(db, "other-shop.myshopify.com")
    assert (await listing(client, other)) == {"totals": [], "items": [], "next_cursor": None}
    stolen = await client.post(f"{URL}/{credit['id']}/settle", headers=other.headers)
    assert stolen.status_code == 404
