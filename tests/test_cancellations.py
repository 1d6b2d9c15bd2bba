"""Cancelling orders: at once before routing; after routing, each purchase order at its supplier
(a rest_json supplier behind respx, portal suppliers through the supplier API), what shipped
refused and turned into a return, stock released once, one ``order.cancelled``; the job run
twice, a crash between the supplier's answer and our commit, 5xx retries; the customer's
cancel from the tracking page."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import select

from app.cancellations.models import PurchaseOrderCancellation
from app.cancellations.tasks import cancel_at_supplier
from app.credits.models import SupplierCredit
from app.db import Database
from app.events.models import LifecycleEvent
from app.exceptions.models import ExceptionCase
from app.jobs.task import TaskContext
from app.orders.models import Order, OrderLine
from app.purchasing.models import PurchaseOrder
from app.purchasing.tasks import place
from app.settings import Settings
from app.suppliers.models import SupplierProduct
from tests.conftest import MerchantHandle, make_merchant
from tests.support.order_flow import accepted, add_catalog, order_id_of
from tests.support.orders import order_body
from tests.support.portal import Client, bearer, line, offer, portal_supplier, routed_order
from tests.support.routing import create_supplier
from tests.support.shopify import order_payload
from tests.support.supplier_sim import BASE_URL, SupplierSim, rest_config
from tests.support.wait import eventually

CANCEL_PATH = "/orders/{reference}/cancel"
SHOPIFY_SHOP = "acme-store.myshopify.com"


@dataclass
class CancellingSupplier:
    """The rest_json supplier's cancel endpoint: one cancellation per idempotency key (a retry
    gets the same answer), scriptable (a status to answer first, or ``"lost"``: the supplier
    cancels and the answer never reaches us)."""

    cancelled: dict[str, str] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    script: list[int | str] = field(default_factory=list)
    answer: tuple[int, dict[str, Any]] = (200, {"status": "cancelled"})

    def cancel(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = request.headers["idempotency-key"]
        step = self.script.pop(0) if self.script else None
        if isinstance(step, int):
            return httpx.Response(
                step, json={"error": f"scripted {step}"}, headers={"Retry-After": "0"}
            )
        self.cancelled.setdefault(key, request.url.path)
        if step == "lost":
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return httpx.Response(self.answer[0], json=self.answer[1])


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, "cancel-shop.myshopify.com", auto_route=True)


@pytest.fixture
def sim() -> Iterator[tuple[SupplierSim, CancellingSupplier]]:
    placing, cancelling = SupplierSim(), CancellingSupplier()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"{BASE_URL}/orders").mock(side_effect=placing.place)
        mock.post(url__regex=rf"{BASE_URL}/orders/[^/]+/cancel").mock(side_effect=cancelling.cancel)
        mock.get(url__startswith=f"{BASE_URL}/orders/").mock(side_effect=placing.get)
        yield placing, cancelling


async def rest_supplier(client: Client, shop: MerchantHandle, **config: Any) -> dict[str, Any]:
    s = await create_supplier(
        client,
        shop,
        name="RestCo",
        connector="rest_json",
        config=rest_config(cancel_path=CANCEL_PATH, **config),
    )
    await offer(client, shop, s["supplier"]["id"], "RED", stock=10, unit_cost="3.10")
    return s


async def portal(client: Client, shop: MerchantHandle) -> dict[str, Any]:
    s = await portal_supplier(client, shop, "PortalCo")
    await offer(client, shop, s["supplier"]["id"], "BLUE", stock=10, unit_cost="4.00")
    return s


async def ship_all(client: Client, supplier: dict[str, Any], po_id: str) -> None:
    r = await client.post(
        f"/supplier/v1/orders/{po_id}/shipments",
        json={"carrier": "UPS", "tracking_number": "1Z999AA10123456784"},
        headers=bearer(supplier["api_key"]),
    )
    assert r.status_code == 201, r.text


async def stock(db: Database, sku: str) -> int:
    async with db.sessionmaker() as session:
        value = await session.scalar(
            select(SupplierProduct.stock).where(SupplierProduct.sku == sku)
        )
        assert value is not None
        return int(value)


async def events(db: Database, type_: str) -> list[LifecycleEvent]:
    async with db.sessionmaker() as session:
        return list(
            await session.scalars(select(LifecycleEvent).where(LifecycleEvent.type == type_))
        )


async def line_ids(db: Database, order_id: str) -> dict[str, str]:
    async with db.sessionmaker() as session:
        query = select(OrderLine).where(OrderLine.order_id == uuid.UUID(order_id))
        rows = await session.scalars(query)
        return {str(ln.sku): str(ln.id) for ln in rows}


async def wait_order(
    client: Client, shop: MerchantHandle, order_id: str, status: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)
        body = r.json()
        return body if body["status"] == status else None

    return dict(await eventually(probe, timeout=45))


def po_of(pos: list[dict[str, Any]], supplier: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in pos if p["supplier_id"] == supplier["supplier"]["id"])


def ctx_of(settings: Settings, db: Database, client: Client) -> TaskContext:
    return TaskContext(settings=settings, db=db, box=client.app.state.services.box)


class TestDoneWhen:
    async def test_shipped_po_refused_unshipped_po_cancelled_at_its_supplier(
        self,
        client: Client,
        db: Database,
        shop: MerchantHandle,
        sim: tuple[SupplierSim, CancellingSupplier],
        settings: Settings,
    ) -> None:
        _, cancelling = sim
        rest = await rest_supplier(client, shop)
        beta = await portal(client, shop)
        order_id, pos = await routed_order(
            client, shop, "C-1", [line("RED", 2), line("BLUE", 1)], expect=2
        )
        rest_po, portal_po = po_of(pos, rest), po_of(pos, beta)
        assert await stock(db, "RED") == 8
        await ship_all(client, beta, portal_po["id"])

        r = await client.post(
            f"/api/v1/orders/{order_id}/cancel",
            json={"reason": "customer changed their mind"},
            headers=shop.headers,
        )
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "in_progress"
        assert r.json()["origin"] == "merchant"
        detail = await wait_order(client, shop, order_id, "cancelled")

        # The unshipped purchase order: one POST to its cancel path, its stock back.
        assert [req.url.path for req in cancelling.requests] == ["/api/orders/SUP-1000/cancel"]
        sent = cancelling.requests[0]
        assert sent.headers["idempotency-key"] == f"dropship-cancel-{rest_po['id']}"
        assert json.loads(sent.content) == {
            "reference": rest_po["number"],
            "lines": [{"sku": "RED-S", "quantity": 2}],
        }
        assert await stock(db, "RED") == 10
        assert await stock(db, "BLUE") == 9  # shipped: nothing to release
        pos_now = {p["id"]: p["status"] for p in detail["purchase_orders"]}
        assert pos_now == {rest_po["id"]: "cancelled", portal_po["id"]: "shipped"}

        ids = await line_ids(db, order_id)
        refused = await events(db, "purchase_order.cancel_refused")
        assert len(refused) == 1
        portal_line = portal_po["lines"][0]
        assert refused[0].key == f"purchase_order.cancel_refused:{portal_po['id']}"
        assert refused[0].data["purchase_order_id"] == portal_po["id"]
        assert refused[0].data["supplier_id"] == beta["supplier"]["id"]
        assert refused[0].data["reason"] == "already shipped"
        assert [(x["order_line_id"], x["quantity"]) for x in refused[0].data["lines"]] == [
            (ids["BLUE"], 1)
        ]
        assert portal_line["sku"] == "BLUE"

        cancelled = await events(db, "order.cancelled")
        assert len(cancelled) == 1
        assert cancelled[0].data == {
            "order_id": order_id,
            "reason": "customer changed their mind",
            "origin": "merchant",
            "lines": [{"line_id": ids["RED"], "quantity": 2}],
            "shipping": False,
        }
        types = [e["type"] for e in detail["timeline"]]
        assert "order.cancel_requested" in types
        assert "cancellation.line_cancelled" in types
        assert "cancellation.line_refused" in types
        assert types[-1] == "status.cancelled" or "status.cancelled" in types
        messages = [e["message"] for e in detail["timeline"]]
        assert f"{rest_po['number']}: 2 x RED cancelled at RestCo, stock released" in messages
        assert (
            f"{portal_po['number']}: 1 x BLUE not cancelled at PortalCo: already shipped"
            in messages
        )
        # The request's exception is resolved; the credit for the cancelled PO is expected.
        async with db.sessionmaker() as session:
            cases = list(await session.scalars(select(ExceptionCase)))
            assert [(c.kind, c.resolved_at is not None) for c in cases] == [
                ("cancel_after_routing", True)
            ]
            credits = list(await session.scalars(select(SupplierCredit)))
        assert [(c.kind, c.amount, c.currency, str(c.purchase_order_id)) for c in credits] == [
            ("cancellation", Decimal("6.2000"), "USD", rest_po["id"])
        ]
        # Asking again: nothing is left to cancel.
        again = await client.post(
            f"/api/v1/orders/{order_id}/cancel", json={"reason": "again"}, headers=shop.headers
        )
        assert again.status_code == 409, again.text
        # The job run once more changes nothing, calls no one.
        async with db.sessionmaker() as session:
            row = await session.scalar(
                select(PurchaseOrderCancellation.id).where(
                    PurchaseOrderCancellation.purchase_order_id == uuid.UUID(rest_po["id"])
                )
            )
        await cancel_at_supplier(ctx_of(settings, db, client), str(row))
        assert len(cancelling.requests) == 1
        assert await stock(db, "RED") == 10


async def cancel(client: Client, shop: MerchantHandle, order_id: str, reason: str = "oops") -> Any:
    return await client.post(
        f"/api/v1/orders/{order_id}/cancel", json={"reason": reason}, headers=shop.headers
    )


async def po_row(db: Database, po_id: str) -> PurchaseOrderCancellation:
    async with db.sessionmaker() as session:
        row = await session.scalar(
            select(PurchaseOrderCancellation).where(
                PurchaseOrderCancellation.purchase_order_id == uuid.UUID(po_id)
            )
        )
        assert row is not None
        return row


async def wait_row(db: Database, po_id: str, status: str) -> PurchaseOrderCancellation:
    async def probe() -> PurchaseOrderCancellation | None:
        row = await po_row(db, po_id)
        return row if row.status == status else None

    return await eventually(probe, timeout=45)


class TestBeforeRouting:
    async def test_cancelled_at_once_with_every_line_and_the_shipping(
        self, client: Client, db: Database
    ) -> None:
        shop = await make_merchant(db, "manual-shop.myshopify.com")  # no auto-route
        r = await client.post(
            "/api/v1/orders",
            json={
                "reference": "M-1",
                "currency": "USD",
                "email": "ada@example.com",
                "shipping_address": {
                    "name": "Ada",
                    "address1": "1 Main St",
                    "city": "Austin",
                    "zip": "78701",
                    "country_code": "US",
                },
                "lines": [line("RED", 2)],
            },
            headers=shop.headers,
        )
        assert r.status_code == 201, r.text
        order_id = r.json()["id"]
        r = await cancel(client, shop, order_id, "duplicate order")
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["order_status"]) == ("cancelled", "cancelled")
        assert r.json()["purchase_orders"] == []
        ids = await line_ids(db, order_id)
        [event] = await events(db, "order.cancelled")
        assert event.data == {
            "order_id": order_id,
            "reason": "duplicate order",
            "origin": "merchant",
            "lines": [{"line_id": ids["RED"], "quantity": 2}],
            "shipping": True,
        }
        again = await cancel(client, shop, order_id)
        assert again.status_code == 409
        assert again.json()["detail"].endswith("is already cancelled")
        other = await make_merchant(db, "other-shop.myshopify.com")
        assert (await cancel(client, other, order_id)).status_code == 404
        long = await client.post(
            f"/api/v1/orders/{order_id}/cancel", json={"reason": "x" * 1001}, headers=shop.headers
        )
        assert long.status_code == 400
        assert "reason" in long.json()["detail"]


class TestFaults:
    async def test_a_lost_answer_is_asked_again_with_the_same_key_and_counts_once(
        self,
        client: Client,
        db: Database,
        shop: MerchantHandle,
        sim: tuple[SupplierSim, CancellingSupplier],
        settings: Settings,
    ) -> None:
        _, cancelling = sim
        cancelling.script = ["lost", 503]
        rest = await rest_supplier(client, shop)
        order_id, pos = await routed_order(client, shop, "F-1", [line("RED", 3)])
        assert await stock(db, "RED") == 7
        r = await cancel(client, shop, order_id)
        assert r.status_code == 202, r.text
        await wait_order(client, shop, order_id, "cancelled")
        po = po_of(pos, rest)
        # Lost (the supplier cancelled, we never heard), 503, then the supplier's same answer.
        assert len(cancelling.requests) == 3
        assert {req.headers["idempotency-key"] for req in cancelling.requests} == {
            f"dropship-cancel-{po['id']}"
        }
        assert len(cancelling.cancelled) == 1
        assert await stock(db, "RED") == 10  # released once
        row = await po_row(db, po["id"])
        assert (row.status, row.attempts) == ("cancelled", 3)
        red = (await line_ids(db, order_id))["RED"]
        assert [(x["order_line_id"], x["quantity"]) for x in row.lines] == [(red, 3)]
        detail = await wait_order(client, shop, order_id, "cancelled")
        retries = [e["message"] for e in detail["timeline"] if e["type"] == "cancellation.retry"]
        assert len(retries) == 2
        assert "supplier timed out" in retries[0]
        assert "supplier answered 503" in retries[1]
        # The job delivered again, and the sweeper's query: nothing more to do.
        await cancel_at_supplier(ctx_of(settings, db, client), str(row.id))
        assert len(cancelling.requests) == 3
        assert await stock(db, "RED") == 10
        async with db.sessionmaker() as session:
            credits = list(await session.scalars(select(SupplierCredit)))
        assert [c.amount for c in credits] == [Decimal("9.3000")]
        assert len(await events(db, "order.cancelled")) == 1

    async def test_a_channel_that_cannot_cancel_asks_the_merchant(
        self,
        client: Client,
        db: Database,
        shop: MerchantHandle,
        sim: tuple[SupplierSim, CancellingSupplier],
    ) -> None:
        s = await create_supplier(
            client, shop, name="NoCancelCo", connector="rest_json", config=rest_config()
        )
        await offer(client, shop, s["supplier"]["id"], "RED", stock=10)
        order_id, pos = await routed_order(client, shop, "F-2", [line("RED", 1)])
        assert (await cancel(client, shop, order_id)).status_code == 202
        po = pos[0]
        row = await wait_row(db, po["id"], "needs_merchant")
        assert row.detail == "rest_json suppliers cannot cancel through the connector"
        async with db.sessionmaker() as session:
            kinds = {c.kind for c in await session.scalars(select(ExceptionCase))}
        assert kinds == {"cancel_after_routing", "cancellation_unconfirmed"}
        state = await client.get(f"/api/v1/orders/{order_id}/cancellation", headers=shop.headers)
        assert state.status_code == 200
        assert [p["status"] for p in state.json()["purchase_orders"]] == ["needs_merchant"]

        url = f"/api/v1/purchase-orders/{po['id']}/cancellation"
        other = await make_merchant(db, "other-shop.myshopify.com")
        assert (
            await client.post(url, json={"accepted": True}, headers=other.headers)
        ).status_code == 404
        r = await client.post(url, json={"accepted": True}, headers=shop.headers)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled"
        assert (
            await client.post(url, json={"accepted": True}, headers=shop.headers)
        ).status_code == 200  # the same answer again
        conflict = await client.post(
            url, json={"accepted": False, "reason": "shipped"}, headers=shop.headers
        )
        assert conflict.status_code == 409
        await wait_order(client, shop, order_id, "cancelled")
        assert await stock(db, "RED") == 10
        async with db.sessionmaker() as session:
            open_cases = [
                c.kind for c in await session.scalars(select(ExceptionCase)) if not c.resolved_at
            ]
        assert open_cases == []


class TestPlacementInFlight:
    async def test_no_answer_while_placing_then_the_placed_order_is_cancelled_there(
        self,
        client: Client,
        db: Database,
        shop: MerchantHandle,
        settings: Settings,
    ) -> None:
        """The first placement call times out at the gateway (503, retry in an hour): the
        supplier may have the order. The cancellation waits for the placement; the merchant
        cannot record an answer meanwhile; once placed, the job cancels it at the supplier."""
        placing, cancelling = SupplierSim(), CancellingSupplier()
        calls: list[int] = []

        def place_once_late(request: httpx.Request) -> httpx.Response:
            calls.append(1)
            if len(calls) == 1:
                return httpx.Response(503, json={"error": "busy"}, headers={"Retry-After": "3600"})
            return placing.place(request)

        with respx.mock(assert_all_called=False) as mock:
            mock.post(f"{BASE_URL}/orders").mock(side_effect=place_once_late)
            mock.post(url__regex=rf"{BASE_URL}/orders/[^/]+/cancel").mock(
                side_effect=cancelling.cancel
            )
            await rest_supplier(client, shop)
            r = await client.post(
                "/api/v1/orders",
                json=order_body("IF-1", lines=[line("RED", 2)]),
                headers=shop.headers,
            )
            assert r.status_code == 201, r.text
            order_id = r.json()["id"]

            async def backing_off() -> PurchaseOrder | None:
                async with db.sessionmaker() as session:
                    po = await session.scalar(
                        select(PurchaseOrder).where(PurchaseOrder.order_id == uuid.UUID(order_id))
                    )
                    ok = po is not None and po.attempts == 1 and po.next_attempt_at is not None
                    return po if ok else None

            po = await eventually(backing_off, timeout=45)
            assert po.status == "pending"
            assert await stock(db, "RED") == 8

            assert (await cancel(client, shop, order_id)).status_code == 202

            async def waited() -> PurchaseOrderCancellation | None:
                row = await po_row(db, str(po.id))
                return row if row.next_attempt_at is not None else None

            row = await eventually(waited, timeout=45)
            assert (row.status, row.attempts) == ("requested", 0)  # not asked: nothing placed
            assert cancelling.requests == []
            assert await stock(db, "RED") == 8

            url = f"/api/v1/purchase-orders/{po.id}/cancellation"
            for answer in ({"accepted": True}, {"accepted": False, "reason": "shipped"}):
                r = await client.post(url, json=answer, headers=shop.headers)
                assert r.status_code == 409, r.text
                assert r.json()["detail"] == (
                    f"purchase order {po.number}: placement in flight: answer once it is placed"
                )
            assert (await po_row(db, str(po.id))).status == "requested"
            assert await stock(db, "RED") == 8
            assert await events(db, "order.cancelled") == []

            # The hour passes: the placement goes through, then the cancellation's next look.
            ctx = ctx_of(settings, db, client)
            async with db.transaction() as session:
                found = await session.get(PurchaseOrder, po.id)
                assert found is not None
                found.next_attempt_at = None
            await place(ctx, str(po.id))
            async with db.sessionmaker() as session:
                placed = await session.get(PurchaseOrder, po.id)
                assert placed is not None
                assert (placed.status, placed.supplier_reference) == ("accepted", "SUP-1000")
            async with db.transaction() as session:
                waiting = await session.get(PurchaseOrderCancellation, row.id)
                assert waiting is not None
                waiting.next_attempt_at = None
            await cancel_at_supplier(ctx, str(row.id))

            assert [req.url.path for req in cancelling.requests] == ["/api/orders/SUP-1000/cancel"]
            assert (await po_row(db, str(po.id))).status == "cancelled"
            await wait_order(client, shop, order_id, "cancelled")
            assert await stock(db, "RED") == 10
            [event] = await events(db, "order.cancelled")
            red = (await line_ids(db, order_id))["RED"]
            assert event.data["lines"] == [{"line_id": red, "quantity": 2}]


class TestPortal:
    async def test_the_supplier_sees_the_request_and_confirms_it(
        self, client: Client, db: Database, shop: MerchantHandle
    ) -> None:
        beta = await portal(client, shop)
        order_id, pos = await routed_order(client, shop, "P-1", [line("BLUE", 2)])
        po = pos[0]
        assert (await cancel(client, shop, order_id, "wrong size")).status_code == 202
        await wait_row(db, po["id"], "awaiting_supplier")
        key = bearer(beta["api_key"])
        listed = await client.get("/supplier/v1/orders?status=open", headers=key)
        [mine] = [o for o in listed.json()["items"] if o["id"] == po["id"]]
        assert mine["cancellation_requested_at"] is not None
        url = f"/supplier/v1/orders/{po['id']}/cancellation"
        stranger = await portal_supplier(client, shop, "Stranger")
        assert (
            await client.post(url, json={"accepted": True}, headers=bearer(stranger["api_key"]))
        ).status_code == 404
        bad = await client.post(url, json={"accepted": "yes"}, headers=key)
        assert bad.status_code == 400
        r = await client.post(url, json={"accepted": True}, headers=key)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled"
        detail = await wait_order(client, shop, order_id, "cancelled")
        assert await stock(db, "BLUE") == 10
        messages = [e["message"] for e in detail["timeline"]]
        assert f"{po['number']}: cancellation asked, awaiting the supplier's answer" in messages
        assert f"{po['number']}: 2 x BLUE cancelled at PortalCo, stock released" in messages
        [event] = await events(db, "order.cancelled")
        assert event.data["lines"] == [
            {"line_id": (await line_ids(db, order_id))["BLUE"], "quantity": 2}
        ]
        assert event.data["shipping"] is True

    async def test_a_refusal_becomes_a_return_and_a_partly_shipped_po_keeps_what_shipped(
        self, client: Client, db: Database, shop: MerchantHandle
    ) -> None:
        beta = await portal(client, shop)
        order_id, pos = await routed_order(client, shop, "P-2", [line("BLUE", 3)])
        po = pos[0]
        key = bearer(beta["api_key"])
        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/shipments",
            json={
                "carrier": "UPS",
                "tracking_number": "1Z999AA10123456784",
                "lines": [{"sku": "BLUE-S", "quantity": 1}],
            },
            headers=key,
        )
        assert r.status_code == 201, r.text
        assert (await cancel(client, shop, order_id)).status_code == 202
        await wait_row(db, po["id"], "awaiting_supplier")
        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/cancellation", json={"accepted": True}, headers=key
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "shipped"  # complete with what shipped
        await wait_order(client, shop, order_id, "cancelled")
        assert await stock(db, "BLUE") == 9  # the 2 unshipped back
        ids = await line_ids(db, order_id)
        [refused] = await events(db, "purchase_order.cancel_refused")
        assert [(x["order_line_id"], x["quantity"]) for x in refused.data["lines"]] == [
            (ids["BLUE"], 1)
        ]
        [event] = await events(db, "order.cancelled")
        assert (event.data["lines"], event.data["shipping"]) == (
            [{"line_id": ids["BLUE"], "quantity": 2}],
            False,
        )


class TestCustomer:
    async def token_of(self, db: Database, order_id: str) -> str:
        async with db.sessionmaker() as session:
            order = await session.get(Order, uuid.UUID(order_id))
            assert order is not None
            return str(order.tracking_token)

    async def test_the_customer_cancels_from_the_tracking_page(
        self, client: Client, db: Database, shop: MerchantHandle
    ) -> None:
        beta = await portal(client, shop)
        order_id, pos = await routed_order(client, shop, "T-1", [line("BLUE", 1)])
        token = await self.token_of(db, order_id)
        page = await client.get(f"/track/{token}")
        assert f'<form method="post" action="/track/{token}/cancel">' in page.text
        assert (await client.get(f"/track/{token}", headers={"Accept": "application/json"})).json()[
            "can_cancel"
        ] is True
        assert (
            await client.post("/track/" + "x" * 32 + "/cancel", data={"reason": "r"})
        ).status_code == 404
        too_long = await client.post(f"/track/{token}/cancel", data={"reason": "x" * 1001})
        assert too_long.status_code == 400
        assert too_long.json()["extra"]["field"] == "reason"
        r = await client.post(
            f"/track/{token}/cancel", data={"reason": "ordered twice"}, follow_redirects=False
        )
        assert r.status_code == 303, r.text
        assert r.headers["location"] == f"/track/{token}"
        state = await client.get(f"/api/v1/orders/{order_id}/cancellation", headers=shop.headers)
        assert (state.json()["origin"], state.json()["reason"]) == ("customer", "ordered twice")
        again = await client.post(
            f"/track/{token}/cancel", json={}, headers={"Accept": "application/json"}
        )
        assert again.status_code == 409
        r = await client.post(
            f"/supplier/v1/orders/{pos[0]['id']}/cancellation",
            json={"accepted": True},
            headers=bearer(beta["api_key"]),
        )
        assert r.status_code == 200, r.text
        await wait_order(client, shop, order_id, "cancelled")
        [event] = await events(db, "order.cancelled")
        assert event.data["origin"] == "customer"
        page = await client.get(f"/track/{token}")
        assert "<form" not in page.text

    async def test_not_once_something_shipped_nor_when_the_store_says_no(
        self, client: Client, db: Database, shop: MerchantHandle
    ) -> None:
        beta = await portal(client, shop)
        order_id, pos = await routed_order(client, shop, "T-2", [line("BLUE", 1)])
        token = await self.token_of(db, order_id)
        r = await client.put(
            "/api/v1/settings",
            json={"cancellation": {"customer_can_cancel": False}},
            headers=shop.headers,
        )
        assert r.status_code == 200, r.text
        assert "<form" not in (await client.get(f"/track/{token}")).text
        no = await client.post(f"/track/{token}/cancel", headers={"Accept": "application/json"})
        assert no.status_code == 409
        r = await client.put(
            "/api/v1/settings",
            json={"cancellation": {"customer_can_cancel": True}},
            headers=shop.headers,
        )
        await ship_all(client, beta, pos[0]["id"])
        shipped = await client.post(
            f"/track/{token}/cancel", headers={"Accept": "application/json"}
        )
        assert shipped.status_code == 409
        assert "shipped" in shipped.json()["detail"]
        # Nor can the merchant: everything shipped (a return instead).
        assert (await cancel(client, shop, order_id)).status_code == 409


class TestShopifyAndConcurrency:
    async def test_shopify_cancels_a_routed_order_and_two_requests_make_one(
        self, client: Client, db: Database
    ) -> None:
        shop = await make_merchant(db, SHOPIFY_SHOP, auto_route=True)
        await add_catalog(db, shop)
        await accepted(client, "orders/create", order_payload(), shop=SHOPIFY_SHOP)
        order_id = str(await order_id_of(db))
        await wait_order(client, shop, order_id, "routed")

        async def placed() -> bool:
            async with db.sessionmaker() as session:
                statuses = set(
                    await session.scalars(
                        select(PurchaseOrder.status).where(
                            PurchaseOrder.order_id == uuid.UUID(order_id)
                        )
                    )
                )
            return statuses == {"placed"}

        await eventually(placed, timeout=45)
        await accepted(
            client,
            "orders/cancelled",
            order_payload(
                updated_at="2008-01-10T11:05:00-05:00", cancelled_at="2008-01-10T11:05:00-05:00"
            ),
            shop=SHOPIFY_SHOP,
        )

        async def requested() -> dict[str, Any] | None:
            r = await client.get(f"/api/v1/orders/{order_id}/cancellation", headers=shop.headers)
            return r.json() if r.status_code == 200 else None

        state = await eventually(requested, timeout=45)
        assert (state["origin"], state["reason"]) == ("shopify", "cancelled in Shopify")
        # The merchant asks too, twice at once: one cancellation, its state answered.
        first, second = await asyncio.gather(
            cancel(client, shop, order_id), cancel(client, shop, order_id)
        )
        assert (first.status_code, second.status_code) == (202, 202)
        assert first.json()["origin"] == second.json()["origin"] == "shopify"
        async with db.sessionmaker() as session:
            rows = list(await session.scalars(select(PurchaseOrderCancellation)))
        assert len(rows) == 1
