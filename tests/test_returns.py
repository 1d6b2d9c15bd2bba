"""Returns (RMA) end to end: requested, approved (at once or by the merchant), the supplier told
through its connector (respx for rest_json, the supplier API for portal), received with the
item's condition (restock or disposal), exchanges, refused cancellations, stalls; every step on
the timeline and published once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import select, update

from app.db import Database, utcnow
from app.events.models import LifecycleEvent
from app.events.service import publish
from app.exceptions.models import ExceptionCase
from app.jobs.task import REGISTRY, TaskContext
from app.orders.models import Order
from app.purchasing.models import PurchaseOrderLine
from app.returns.models import Return
from app.returns.tasks import authorize, check_stalled
from app.settings import Settings
from app.suppliers.models import SupplierProduct
from tests.conftest import MerchantHandle, make_merchant
from tests.support.portal import (
    Client,
    bearer,
    line,
    offer,
    portal_supplier,
    routed_order,
    wait_order_pos,
)
from tests.support.routing import create_supplier
from tests.support.wait import eventually

BASE = "https://returns-supplier.test/api"
RETURN_ADDRESS = {
    "name": "Acme Returns",
    "address1": "1 Dock Road",
    "city": "Austin",
    "province_code": "TX",
    "zip": "78701",
    "country_code": "US",
}
SUBSCRIBER = "app.returns.tasks.return_refused_cancellation"


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, "return-shop.myshopify.com", auto_route=True)


@pytest.fixture
async def alpha(client: Client, shop: MerchantHandle) -> dict[str, Any]:
    s = await portal_supplier(client, shop, "Alpha")
    for sku in ("RED", "BLUE", "GREEN"):
        await offer(client, shop, s["supplier"]["id"], sku, stock=5)
    return s


def ctx_of(settings: Settings, db: Database, client: Client) -> TaskContext:
    return TaskContext(settings=settings, db=db, box=client.app.state.services.box)


async def put_returns(client: Client, shop: MerchantHandle, **policy: Any) -> None:
    r = await client.put("/api/v1/settings", json={"returns": policy}, headers=shop.headers)
    assert r.status_code == 200, r.text


async def ship(
    client: Client, supplier: dict[str, Any], po_id: str, *lines: tuple[str, int], **extra: Any
) -> str:
    r = await client.post(
        f"/supplier/v1/orders/{po_id}/shipments",
        json={
            "carrier": "UPS",
            "tracking_number": f"1Z{uuid.uuid4().hex[:10].upper()}",
            "lines": [{"sku": s, "quantity": q} for s, q in lines],
            **extra,
        },
        headers=bearer(supplier["api_key"]),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def shipped_order(
    client: Client,
    shop: MerchantHandle,
    supplier: dict[str, Any],
    reference: str,
    lines: list[dict[str, Any]],
    **ship_extra: Any,
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An order routed to ``supplier`` and shipped whole: its id, detail and purchase order."""
    order_id, [po] = await routed_order(client, shop, reference, lines)
    await ship(client, supplier, po["id"], **ship_extra)
    detail = await order(client, shop, order_id)
    return order_id, detail, po


async def order(client: Client, shop: MerchantHandle, order_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def line_id(detail: dict[str, Any], sku: str) -> str:
    return str(next(ln["id"] for ln in detail["lines"] if ln["sku"] == sku))


async def request(
    client: Client, shop: MerchantHandle, order_id: str, body: dict[str, Any], status: int = 201
) -> Any:
    r = await client.post(f"/api/v1/orders/{order_id}/returns", json=body, headers=shop.headers)
    assert r.status_code == status, r.text
    return r.json()


async def get_return(client: Client, shop: MerchantHandle, return_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/returns/{return_id}", headers=shop.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def authorized(client: Client, shop: MerchantHandle, return_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        ret = await get_return(client, shop, return_id)
        return ret if ret["authorized_at"] else None

    return await eventually(probe, timeout=45)


async def return_events(db: Database, return_id: str) -> list[tuple[str, str]]:
    async with db.sessionmaker() as session:
        rows = await session.scalars(
            select(LifecycleEvent)
            .where(LifecycleEvent.key.like(f"return.%:{return_id}"))
            .order_by(LifecycleEvent.created_at, LifecycleEvent.id)
        )
        return [(e.type, e.key) for e in rows]


async def event_data(db: Database, key: str) -> dict[str, Any]:
    async with db.sessionmaker() as session:
        event = await session.scalar(select(LifecycleEvent).where(LifecycleEvent.key == key))
        assert event is not None
        return dict(event.data)


async def stock(db: Database, supplier_id: str, sku: str) -> int:
    async with db.sessionmaker() as session:
        value = await session.scalar(
            select(SupplierProduct.stock).where(
                SupplierProduct.supplier_id == uuid.UUID(supplier_id), SupplierProduct.sku == sku
            )
        )
        assert value is not None
        return int(value)


def timeline(detail: dict[str, Any], prefix: str = "return.") -> list[tuple[str, str]]:
    return [(e["type"], e["message"]) for e in detail["timeline"] if e["type"].startswith(prefix)]


class TestLifecycle:
    async def test_requested_approved_received_resellable_each_step_once(
        self,
        client: Client,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        db: Database,
        settings: Settings,
    ) -> None:
        await put_returns(
            client,
            shop,
            auto_approve=False,
            return_address=RETURN_ADDRESS,
            instructions="Pack it well and write the RMA number on the box.",
        )
        order_id, detail, po = await shipped_order(
            client, shop, alpha, "R-1", [line("RED", 2), line("BLUE", 1)]
        )
        supplier_id = alpha["supplier"]["id"]
        assert await stock(db, supplier_id, "RED") == 3
        red = line_id(detail, "RED")
        created = await request(
            client,
            shop,
            order_id,
            {"lines": [{"line_id": red, "quantity": 2}], "reason": "Too big"},
        )
        [ret] = created["returns"]
        number = f"R-{detail['name'].lstrip('#')}-1"
        assert (ret["number"], ret["status"], ret["origin"]) == (number, "requested", "merchant")
        assert ret["purchase_order_id"] == po["id"]
        assert [(x["order_line_id"], x["sku"], x["quantity"]) for x in ret["lines"]] == [
            (red, "RED", 2)
        ]
        # Queued for the merchant: nothing goes to the supplier yet.
        r = await client.get("/supplier/v1/returns", headers=bearer(alpha["api_key"]))
        assert r.json()["items"] == []
        r = await client.get(
            "/api/v1/returns", params={"status": "requested"}, headers=shop.headers
        )
        assert [x["id"] for x in r.json()["items"]] == [ret["id"]]

        r = await client.post(f"/api/v1/returns/{ret['id']}/approve", headers=shop.headers)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "approved"
        done = await authorized(client, shop, ret["id"])
        # A portal supplier offers no address or label: the merchant's are the customer's.
        assert done["return_address"] == RETURN_ADDRESS
        assert done["label_url"] is None
        assert done["instructions"] == "Pack it well and write the RMA number on the box."
        approved = await event_data(db, f"return.approved:{ret['id']}")
        assert approved == {
            "order_id": order_id,
            "return_id": ret["id"],
            "number": number,
            "purchase_order_id": po["id"],
            "supplier_id": supplier_id,
            "reason": "Too big",
            "exchange": False,
            "origin": "merchant",
            "lines": [
                {
                    "order_line_id": red,
                    "purchase_order_line_id": ret["lines"][0]["purchase_order_line_id"],
                    "quantity": 2,
                    "title": "RED",
                }
            ],
            "instructions": "Pack it well and write the RMA number on the box.",
            "return_address": RETURN_ADDRESS,
            "label_url": None,
        }
        # Approving again is an illegal step.
        r = await client.post(f"/api/v1/returns/{ret['id']}/approve", headers=shop.headers)
        assert r.status_code == 409, r.text

        # The supplier sees it coming and receives it; another supplier cannot.
        r = await client.get("/supplier/v1/returns", headers=bearer(alpha["api_key"]))
        [seen] = r.json()["items"]
        assert (seen["number"], seen["status"]) == (number, "approved")
        assert seen["lines"] == [{"sku": "RED", "supplier_sku": "RED-S", "quantity": 2}]
        beta = await portal_supplier(client, shop, "Beta")
        r = await client.post(
            f"/supplier/v1/returns/{ret['id']}/receive",
            json={"condition": "resellable"},
            headers=bearer(beta["api_key"]),
        )
        assert r.status_code == 404, r.text
        r = await client.get("/supplier/v1/returns", headers=bearer(beta["api_key"]))
        assert r.json()["items"] == []
        r = await client.post(
            f"/supplier/v1/returns/{ret['id']}/receive",
            json={"condition": "broken"},
            headers=bearer(alpha["api_key"]),
        )
        assert r.status_code == 400, r.text
        assert r.json()["extra"]["field"] == "condition", r.text
        r = await client.post(
            f"/supplier/v1/returns/{ret['id']}/receive",
            json={"condition": "resellable"},
            headers=bearer(alpha["api_key"]),
        )
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["condition"]) == ("received", "resellable")
        assert await stock(db, supplier_id, "RED") == 5  # back in the supplier's stock
        r = await client.post(
            f"/api/v1/returns/{ret['id']}/receive",
            json={"condition": "resellable"},
            headers=shop.headers,
        )
        assert r.status_code == 409, r.text
        assert await stock(db, supplier_id, "RED") == 5

        detail = await order(client, shop, order_id)
        assert timeline(detail) == [
            (
                "return.requested",
                f"return {number} requested by the merchant ({po['number']}): 2 x RED: Too big",
            ),
            ("return.approved", f"return {number}: approved by the merchant"),
            (
                "return.authorized",
                f"return {number}: the customer gets your return address and instructions",
            ),
            (
                "return.received",
                f"return {number} received by the supplier: resellable, back in the "
                "supplier's stock: 2 x RED",
            ),
        ]
        received = await event_data(db, f"return.received:{ret['id']}")
        assert received["condition"] == "resellable"
        assert await return_events(db, ret["id"]) == [
            ("return.requested", f"return.requested:{ret['id']}"),
            ("return.approved", f"return.approved:{ret['id']}"),
            ("return.received", f"return.received:{ret['id']}"),
        ]
        # The job again: nothing more is published or recorded.
        await authorize(ctx_of(settings, db, client), ret["id"])
        assert len(await return_events(db, ret["id"])) == 3

    async def test_auto_approval_and_rejection(
        self,
        client: Client,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        db: Database,
    ) -> None:
        order_id, detail, _ = await shipped_order(client, shop, alpha, "R-2", [line("RED", 2)])
        red = line_id(detail, "RED")
        # Default policy: approved at once.
        [auto] = (
            await request(
                client, shop, order_id, {"lines": [{"line_id": red, "quantity": 1}], "reason": "x"}
            )
        )["returns"]
        assert auto["status"] == "approved"
        await authorized(client, shop, auto["id"])
        assert [t for t, _ in await return_events(db, auto["id"])] == [
            "return.requested",
            "return.approved",
        ]
        await put_returns(client, shop, auto_approve=False)
        [queued] = (
            await request(
                client, shop, order_id, {"lines": [{"line_id": red, "quantity": 1}], "reason": "y"}
            )
        )["returns"]
        assert queued["status"] == "requested"
        assert queued["number"].endswith("-2")
        r = await client.post(
            f"/api/v1/returns/{queued['id']}/reject", json={"reason": ""}, headers=shop.headers
        )
        assert r.status_code == 400, r.text
        assert r.json()["extra"]["field"] == "reason", r.text
        r = await client.post(
            f"/api/v1/returns/{queued['id']}/reject",
            json={"reason": "Used item"},
            headers=shop.headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "rejected", r.text
        rejected = await event_data(db, f"return.rejected:{queued['id']}")
        assert rejected["rejection_reason"] == "Used item"
        r = await client.post(
            f"/api/v1/returns/{queued['id']}/receive",
            json={"condition": "damaged"},
            headers=shop.headers,
        )
        assert r.status_code == 409, r.text
        # A rejected return gives its quantity back: one unit can be asked for again.
        await request(
            client, shop, order_id, {"lines": [{"line_id": red, "quantity": 1}], "reason": "z"}
        )

    async def test_damaged_is_disposed_of_without_restock(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any], db: Database
    ) -> None:
        order_id, detail, _ = await shipped_order(client, shop, alpha, "R-3", [line("BLUE", 1)])
        [ret] = (
            await request(
                client,
                shop,
                order_id,
                {"lines": [{"line_id": line_id(detail, "BLUE"), "quantity": 1}], "reason": "x"},
            )
        )["returns"]
        before = await stock(db, alpha["supplier"]["id"], "BLUE")
        r = await client.post(
            f"/api/v1/returns/{ret['id']}/receive",
            json={"condition": "damaged"},
            headers=shop.headers,
        )
        assert r.status_code == 200, r.text
        assert (r.json()["condition"], r.json()["received_by"]) == ("damaged", "merchant")
        assert await stock(db, alpha["supplier"]["id"], "BLUE") == before
        messages = [m for t, m in timeline(await order(client, shop, order_id))]
        assert messages[-1] == (
            f"return {ret['number']} received by the merchant: damaged, disposed of "
            "(no restock): 1 x BLUE"
        )
        assert (await event_data(db, f"return.received:{ret['id']}"))["condition"] == "damaged"


class TestQuantitiesAndInput:
    async def test_never_more_than_shipped_minus_returned(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any], other_merchant: Any
    ) -> None:
        order_id, [po] = await routed_order(client, shop, "R-4", [line("RED", 2), line("BLUE", 1)])
        detail = await order(client, shop, order_id)
        red, blue = line_id(detail, "RED"), line_id(detail, "BLUE")
        await ship(client, alpha, po["id"], ("RED-S", 1))  # one of two shipped
        r = await client.post(
            f"/api/v1/orders/{order_id}/returns",
            json={"lines": [{"line_id": red, "quantity": 2}], "reason": "x"},
            headers=shop.headers,
        )
        assert r.status_code == 409, r.text
        assert r.json()["extra"]["field"] == "lines[0].quantity"
        assert "2 > 1 returnable" in r.json()["detail"]
        r = await client.post(
            f"/api/v1/orders/{order_id}/returns",
            json={"lines": [{"line_id": blue, "quantity": 1}], "reason": "x"},
            headers=shop.headers,
        )
        assert r.status_code == 409, r.text
        assert "nothing of this line has shipped" in r.text, r.text
        for body, field in (
            ({"lines": [{"line_id": red, "quantity": 0}], "reason": "x"}, "lines[0].quantity"),
            ({"lines": [], "reason": "x"}, "lines"),
            ({"lines": [{"line_id": red, "quantity": 1}]}, "reason"),
            (
                {"lines": [{"line_id": str(uuid.uuid4()), "quantity": 1}], "reason": "x"},
                "lines[0].line_id",
            ),
            (
                {"lines": [{"line_id": red, "quantity": 1}], "reason": "x", "exchange": {}},
                "exchange.sku",
            ),
            (
                {
                    "lines": [{"line_id": red, "quantity": 1}],
                    "reason": "x",
                    "exchange": {"sku": "NOPE"},
                },
                "exchange.sku",
            ),
        ):
            r = await client.post(
                f"/api/v1/orders/{order_id}/returns", json=body, headers=shop.headers
            )
            assert r.status_code == 400, (body, r.text)
            assert r.json()["extra"]["field"] == field, (body, r.text)
        await request(
            client, shop, order_id, {"lines": [{"line_id": red, "quantity": 1}], "reason": "x"}
        )
        r = await client.post(
            f"/api/v1/orders/{order_id}/returns",
            json={"lines": [{"line_id": red, "quantity": 1}], "reason": "again"},
            headers=shop.headers,
        )
        assert r.status_code == 409, r.text
        # Another store's order and returns are not there at all.
        r = await client.post(
            f"/api/v1/orders/{order_id}/returns",
            json={"lines": [{"line_id": red, "quantity": 1}], "reason": "x"},
            headers=other_merchant.headers,
        )
        assert r.status_code == 404, r.text
        r = await client.get("/api/v1/returns", headers=shop.headers)
        [mine] = r.json()["items"]
        r = await client.get(f"/api/v1/returns/{mine['id']}", headers=other_merchant.headers)
        assert r.status_code == 404
        r = await client.post(
            f"/api/v1/returns/{mine['id']}/receive",
            json={"condition": "damaged"},
            headers=other_merchant.headers,
        )
        assert r.status_code == 404
        r = await client.get("/api/v1/returns", headers=other_merchant.headers)
        assert r.json()["items"] == []
        r = await client.get("/api/v1/returns", params={"status": "x"}, headers=shop.headers)
        assert r.status_code == 400
        assert r.json()["extra"]["field"] == "status"

    async def test_concurrent_requests_for_the_last_unit_one_wins(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any], db: Database
    ) -> None:
        order_id, detail, _ = await shipped_order(client, shop, alpha, "R-5", [line("RED", 1)])
        body = {"lines": [{"line_id": line_id(detail, "RED"), "quantity": 1}], "reason": "x"}
        answers = await asyncio.gather(
            *(
                client.post(f"/api/v1/orders/{order_id}/returns", json=body, headers=shop.headers)
                for _ in range(3)
            )
        )
        assert sorted(r.status_code for r in answers) == [201, 409, 409], [r.text for r in answers]
        async with db.sessionmaker() as session:
            rows = (
                await session.scalars(select(Return).where(Return.order_id == uuid.UUID(order_id)))
            ).all()
        assert len(rows) == 1

    async def test_a_request_over_two_suppliers_makes_one_return_each(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        beta = await portal_supplier(client, shop, "Beta")
        await offer(client, shop, beta["supplier"]["id"], "ONLYBETA", stock=5)
        order_id, pos = await routed_order(
            client, shop, "R-6", [line("RED", 1), line("ONLYBETA", 1)], expect=2
        )
        for po in pos:
            who = alpha if po["supplier_id"] == alpha["supplier"]["id"] else beta
            await ship(client, who, po["id"])
        detail = await order(client, shop, order_id)
        created = await request(
            client,
            shop,
            order_id,
            {
                "lines": [
                    {"line_id": line_id(detail, "RED"), "quantity": 1},
                    {"line_id": line_id(detail, "ONLYBETA"), "quantity": 1},
                ],
                "reason": "x",
            },
        )
        got = sorted((r["supplier_id"], [x["sku"] for x in r["lines"]]) for r in created["returns"])
        assert got == sorted(
            [(alpha["supplier"]["id"], ["RED"]), (beta["supplier"]["id"], ["ONLYBETA"])]
        )
        assert sorted(r["number"][-2:] for r in created["returns"]) == ["-1", "-2"]

    async def test_a_long_order_name_gives_numbers_within_the_column_distinct_per_order(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        """Order references of 64 characters sharing their first 63: the RMA numbers (and the
        purchase orders' numbers) stay within their columns (64) and differ, per order and per
        return."""
        stem = "LONG-" + "x" * 58
        numbers, pos = [], []
        for ref in (stem + "A", stem + "B"):
            assert len(ref) == 64
            order_id, detail, po = await shipped_order(client, shop, alpha, ref, [line("RED", 2)])
            pos.append(po["number"])
            for _ in range(1 if ref.endswith("B") else 2):
                body = {"lines": [{"line_id": line_id(detail, "RED"), "quantity": 1}]}
                made = await request(client, shop, order_id, {**body, "reason": "too long"})
                [ret] = made["returns"]
                numbers.append(ret["number"])
        digest_a = hashlib.sha256((stem + "A").encode()).hexdigest()[:8]
        digest_b = hashlib.sha256((stem + "B").encode()).hexdigest()[:8]
        assert numbers == [
            f"R-{stem[:51]}~{digest_a}-1",
            f"R-{stem[:51]}~{digest_a}-2",
            f"R-{stem[:51]}~{digest_b}-1",
        ]
        assert [len(n) for n in numbers] == [64, 64, 64]
        # Their purchase orders' numbers too (``purchase_orders.number`` is 64 as well).
        assert pos == [f"{stem[:53]}~{digest_a}-1", f"{stem[:53]}~{digest_b}-1"]


class TestTrackingPage:
    async def test_the_customer_returns_within_the_window_and_not_after(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any], db: Database
    ) -> None:
        old = (utcnow() - timedelta(days=40)).isoformat()
        order_id, detail, _ = await shipped_order(
            client, shop, alpha, "R-7", [line("RED", 2)], shipped_at=old
        )
        async with db.sessionmaker() as session:
            o = await session.get(Order, uuid.UUID(order_id))
            assert o is not None
            token = o.tracking_token
        body = {"lines": [{"item": 1, "quantity": 1}], "reason": "Wrong colour"}
        r = await client.post(f"/track/{token}/returns", json=body)
        assert r.status_code == 409, r.text
        assert "return window of 30 days ended" in r.json()["detail"]
        assert r.json()["extra"]["field"] == "lines[0].quantity"
        await put_returns(client, shop, window_days=60)
        r = await client.post(
            f"/track/{token}/returns", json={**body, "lines": [{"item": 2, "quantity": 1}]}
        )
        assert r.status_code == 400, r.text
        assert r.json()["extra"]["field"] == "lines[0].item", r.text
        r = await client.post(f"/track/{token}/returns", json={"lines": [], "reason": "x"})
        assert r.status_code == 400, r.text
        assert r.json()["extra"]["field"] == "lines", r.text
        r = await client.post(f"/track/{token}/returns", json=body)
        assert r.status_code == 201, r.text
        number = f"R-{detail['name'].lstrip('#')}-1"
        assert r.json() == {
            "returns": [
                {"number": number, "status": "approved", "items": [{"title": "RED", "quantity": 1}]}
            ]
        }
        # The page's own form: one item, answered by a redirect back to the page.
        page = await client.get(f"/track/{token}")
        assert f'action="/track/{token}/returns"' in page.text
        assert "form-action 'self'" in page.headers["content-security-policy"]
        r = await client.post(
            f"/track/{token}/returns",
            content="item=1&quantity=1&reason=Also+wrong",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        assert r.headers["location"] == f"/track/{token}", r.text
        r = await client.post(f"/track/{token}/returns", json=body)
        assert r.status_code == 409, r.text  # both units are being returned
        rets = (await client.get("/api/v1/returns", headers=shop.headers)).json()["items"]
        assert sorted((x["origin"], x["reason"]) for x in rets) == [
            ("customer", "Also wrong"),
            ("customer", "Wrong colour"),
        ]
        r = await client.post("/track/" + "x" * 32 + "/returns", json=body)
        assert r.status_code == 404


class TestRestJsonSupplier:
    @pytest.fixture
    def supplier_api(self) -> Iterator[respx.MockRouter]:
        with respx.mock(base_url=BASE, assert_all_called=False) as mock:
            mock.post("/orders").mock(
                return_value=httpx.Response(200, json={"id": "SUP-77", "status": "accepted"})
            )
            yield mock

    async def test_the_label_lands_on_the_return_and_the_job_twice_calls_once(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        settings: Settings,
        supplier_api: respx.MockRouter,
    ) -> None:
        route = supplier_api.post("/orders/SUP-77/returns").mock(
            return_value=httpx.Response(
                201,
                json={
                    "id": "RMA-9",
                    "label_url": "https://labels.example.com/RMA-9.pdf",
                    "instructions": "Drop it at any UPS store.",
                },
            )
        )
        s = await create_supplier(
            client,
            shop,
            name="Remote",
            connector="rest_json",
            config={"base_url": BASE, "return_path": "/orders/{reference}/returns"},
        )
        await offer(client, shop, s["supplier"]["id"], "RED", stock=5)
        order_id, detail, po = await shipped_order(client, shop, s, "R-8", [line("RED", 1)])
        [ret] = (
            await request(
                client,
                shop,
                order_id,
                {"lines": [{"line_id": line_id(detail, "RED"), "quantity": 1}], "reason": "x"},
            )
        )["returns"]
        done = await authorized(client, shop, ret["id"])
        assert done["label_url"] == "https://labels.example.com/RMA-9.pdf"
        assert done["supplier_reference"] == "RMA-9"
        assert done["instructions"] == "Drop it at any UPS store."
        assert done["return_address"] is None
        assert route.call_count == 1
        sent = route.calls.last.request
        assert sent.headers["Idempotency-Key"] == f"dropship-po-{po['id']}-return-{ret['number']}"
        assert json.loads(sent.content) == {
            "rma": ret["number"],
            "purchase_order": po["number"],
            "reference": "SUP-77",
            "reason": "x",
            "lines": [{"sku": "RED-S", "quantity": 1}],
        }
        approved = await event_data(db, f"return.approved:{ret['id']}")
        assert approved["label_url"] == "https://labels.example.com/RMA-9.pdf"
        await authorize(ctx_of(settings, db, client), ret["id"])
        assert route.call_count == 1

    async def test_a_failing_supplier_is_retried_then_answers(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        settings: Settings,
        supplier_api: respx.MockRouter,
    ) -> None:
        route = supplier_api.post("/returns").mock(
            side_effect=[
                httpx.Response(503, json={"error": "busy"}),
                httpx.Response(200, json={"return_address": RETURN_ADDRESS}),
            ]
        )
        s = await create_supplier(
            client,
            shop,
            name="Flaky",
            connector="rest_json",
            config={"base_url": BASE, "return_path": "/returns"},
        )
        await offer(client, shop, s["supplier"]["id"], "RED", stock=5)
        order_id, detail, _ = await shipped_order(client, shop, s, "R-9", [line("RED", 1)])
        [ret] = (
            await request(
                client,
                shop,
                order_id,
                {"lines": [{"line_id": line_id(detail, "RED"), "quantity": 1}], "reason": "x"},
            )
        )["returns"]
        # The first call fails (503): the job backs off and its retry gets the answer.
        done = await authorized(client, shop, ret["id"])
        assert done["return_address"] == RETURN_ADDRESS
        assert route.call_count == 2
        messages = [m for t, m in timeline(await order(client, shop, order_id))]
        assert any("attempt 1 to tell the supplier failed" in m for m in messages), messages


class TestExchange:
    async def test_received_exchange_creates_one_replacement_order_routed_like_any(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any], db: Database
    ) -> None:
        order_id, detail, _ = await shipped_order(client, shop, alpha, "R-10", [line("RED", 1)])
        [ret] = (
            await request(
                client,
                shop,
                order_id,
                {
                    "lines": [{"line_id": line_id(detail, "RED"), "quantity": 1}],
                    "reason": "Wrong colour",
                    "exchange": {"sku": "GREEN"},
                },
            )
        )["returns"]
        assert (ret["exchange"], ret["exchange_sku"]) == (True, "GREEN")
        r = await client.post(
            f"/api/v1/returns/{ret['id']}/receive",
            json={"condition": "resellable"},
            headers=shop.headers,
        )
        assert r.status_code == 200, r.text
        replacement_id = r.json()["replacement_order_id"]
        assert replacement_id is not None
        [po] = await wait_order_pos(
            client, shop, replacement_id, lambda p: len(p) == 1 and p[0]["status"] != "pending"
        )
        assert po["supplier_id"] == alpha["supplier"]["id"]
        assert [x["sku"] for x in po["lines"]] == ["GREEN"]
        replacement = await order(client, shop, replacement_id)
        assert replacement["source"] == "exchange"
        assert replacement["total_price"] == "0.00"
        assert [(x["sku"], x["quantity"], x["price"]) for x in replacement["lines"]] == [
            ("GREEN", 1, "0.00")
        ]
        assert replacement["shipping_address"]["city"] == detail["shipping_address"]["city"]
        assert timeline(replacement) == [
            (
                "return.exchange_for",
                f"replacement for return {ret['number']} of order {detail['name']}",
            )
        ]
        original = timeline(await order(client, shop, order_id))
        assert (
            "return.exchange_created",
            f"return {ret['number']}: replacement order {replacement['name']} created (1 x GREEN)",
        ) in original
        async with db.sessionmaker() as session:
            count = len(
                (await session.scalars(select(Order).where(Order.source == "exchange"))).all()
            )
        assert count == 1


class TestCancellationAndStalls:
    async def test_a_refused_cancellation_opens_one_approved_return(
        self,
        client: Client,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        db: Database,
        settings: Settings,
    ) -> None:
        order_id, _, po = await shipped_order(
            client, shop, alpha, "R-11", [line("RED", 2), line("BLUE", 1)]
        )
        async with db.sessionmaker() as session:
            po_lines = (
                await session.scalars(
                    select(PurchaseOrderLine).where(
                        PurchaseOrderLine.purchase_order_id == uuid.UUID(po["id"])
                    )
                )
            ).all()
        lines = [
            {
                "order_line_id": str(x.order_line_id),
                "purchase_order_line_id": str(x.id),
                "quantity": x.quantity_shipped,
            }
            for x in po_lines
        ]
        key = f"purchase_order.cancel_refused:{po['id']}"
        for _ in range(2):  # published twice: once
            async with db.transaction() as session:
                o = await session.get(Order, uuid.UUID(order_id))
                await publish(
                    session,
                    o,
                    "purchase_order.cancel_refused",
                    key=key,
                    purchase_order_id=po["id"],
                    supplier_id=alpha["supplier"]["id"],
                    reason="customer cancelled",
                    lines=lines,
                )

        async def probe() -> list[dict[str, Any]] | None:
            r = await client.get(
                "/api/v1/returns", params={"order_id": order_id}, headers=shop.headers
            )
            items = r.json()["items"]
            return items if items and items[0]["authorized_at"] else None

        [ret] = await eventually(probe, timeout=45)
        assert (ret["origin"], ret["status"], ret["reason"]) == (
            "cancellation",
            "approved",
            "customer cancelled",
        )
        assert sorted((x["sku"], x["quantity"]) for x in ret["lines"]) == [("BLUE", 1), ("RED", 2)]
        # The subscriber run again (a redelivered reaction): still one return.
        async with db.transaction() as session:
            event = await session.scalar(select(LifecycleEvent).where(LifecycleEvent.key == key))
            await REGISTRY.subscribers[SUBSCRIBER].fn(ctx_of(settings, db, client), session, event)
        r = await client.get("/api/v1/returns", params={"order_id": order_id}, headers=shop.headers)
        assert len(r.json()["items"]) == 1
        assert [t for t, _ in await return_events(db, ret["id"])] == [
            "return.requested",
            "return.approved",
        ]

    async def test_a_refusal_before_any_shipment_is_recorded_still_opens_the_return(
        self,
        client: Client,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        db: Database,
    ) -> None:
        """The supplier refuses the cancellation (it shipped) before reporting the shipment:
        every refused unit comes back (else the customer would keep it, neither refunded nor
        returned); the shipment reported later adds nothing returnable."""
        order_id, [po] = await routed_order(client, shop, "R-12", [line("RED", 2), line("BLUE", 1)])
        r = await client.post(
            f"/api/v1/orders/{order_id}/cancel", json={"reason": "too late"}, headers=shop.headers
        )
        assert r.status_code == 202, r.text

        async def awaiting() -> bool:
            r = await client.get(f"/api/v1/orders/{order_id}/cancellation", headers=shop.headers)
            return bool(r.json()["purchase_orders"][0]["status"] == "awaiting_supplier")

        await eventually(awaiting, timeout=45)
        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/cancellation",
            json={"accepted": False, "reason": "left the warehouse this morning"},
            headers=bearer(alpha["api_key"]),
        )
        assert r.status_code == 200, r.text

        async def opened() -> list[dict[str, Any]] | None:
            r = await client.get(
                "/api/v1/returns", params={"order_id": order_id}, headers=shop.headers
            )
            return r.json()["items"] or None

        [ret] = await eventually(opened, timeout=45)
        assert (ret["origin"], ret["status"], ret["reason"], ret["purchase_order_id"]) == (
            "cancellation",
            "approved",
            "left the warehouse this morning",
            po["id"],
        )
        assert sorted((x["sku"], x["quantity"]) for x in ret["lines"]) == [("BLUE", 1), ("RED", 2)]
        detail = await order(client, shop, order_id)
        assert detail["status"] == "cancelled"
        # Nothing was cancelled before shipping (no refund for it): all of it is the return.
        cancelled = await event_data(db, f"order.cancelled:{order_id}")
        assert (cancelled["lines"], cancelled["shipping"]) == ([], False)

        # The shipment is reported afterwards: nothing more can be returned than what was.
        await ship(client, alpha, po["id"])
        more = await request(
            client,
            shop,
            order_id,
            {"lines": [{"line_id": line_id(detail, "RED"), "quantity": 1}], "reason": "x"},
            status=409,
        )
        assert (
            more["detail"]
            == "lines[0].quantity: 1 > 0 returnable (shipped, not already being returned)"
        )

    async def test_a_stalled_return_opens_one_case_resolved_when_received(
        self,
        client: Client,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        db: Database,
        settings: Settings,
    ) -> None:
        order_id, detail, _ = await shipped_order(client, shop, alpha, "R-12", [line("RED", 1)])
        [ret] = (
            await request(
                client,
                shop,
                order_id,
                {"lines": [{"line_id": line_id(detail, "RED"), "quantity": 1}], "reason": "x"},
            )
        )["returns"]
        ctx = ctx_of(settings, db, client)

        async def authorized() -> bool:
            async with db.sessionmaker() as session:
                found = await session.get(Return, uuid.UUID(ret["id"]))
                return found is not None and found.authorized_at is not None

        # The supplier's authorization job holds the row while it runs (the check skips a
        # locked return until its next run): let it finish first.
        await eventually(authorized, timeout=45)
        await check_stalled(ctx)  # approved just now: not stalled
        async with db.transaction() as session:
            await session.execute(
                update(Return)
                .where(Return.id == uuid.UUID(ret["id"]))
                .values(approved_at=utcnow() - timedelta(days=15))
            )
        await check_stalled(ctx)
        await check_stalled(ctx)
        async with db.sessionmaker() as session:
            cases = (
                await session.scalars(
                    select(ExceptionCase).where(ExceptionCase.kind == "return_stalled")
                )
            ).all()
        assert len(cases) == 1
        assert cases[0].order_id == uuid.UUID(order_id)
        assert cases[0].resolved_at is None
        assert cases[0].reason == (
            f"return {ret['number']} was approved 15 days ago and has not been received "
            "(more than 14 days)"
        )
        r = await client.post(
            f"/api/v1/returns/{ret['id']}/receive",
            json={"condition": "resellable"},
            headers=shop.headers,
        )
        assert r.status_code == 200, r.text
        async with db.sessionmaker() as session:
            case = await session.get(ExceptionCase, cases[0].id)
            assert case is not None
            assert case.resolved_at is not None


async def test_return_settings_are_checked(client: Client, shop: MerchantHandle) -> None:
    r = await client.get("/api/v1/settings", headers=shop.headers)
    assert r.json()["returns"] == {
        "window_days": 30,
        "auto_approve": True,
        "return_address": None,
        "instructions": None,
        "stall_after_days": 14,
    }
    for body, field in (
        ({"return_address": {**RETURN_ADDRESS, "country_code": "ZZ"}}, "country_code"),
        ({"window_days": -1}, "window_days"),
        ({"stall_after_days": 0}, "stall_after_days"),
        ({"instructions": "x" * 2001}, "instructions"),
    ):
        r = await client.put("/api/v1/settings", json={"returns": body}, headers=shop.headers)
        assert r.status_code == 400, (body, r.text)
        assert field in r.json()["extra"]["field"], (body, r.text)
