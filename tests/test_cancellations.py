"""Cancelling orders: at once before routing; after routing, each purchase order at its supplier
(a rest_json supplier behind respx, portal suppliers through the supplier API), what shipped
refused and turned into a return, stock released once, one ``order.cancelled``; the job run
twice, a crash between the supplier's answer and our commit, 5xx retries; the customer's
cancel from the tracking page."""

from __future__ import annotations

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
from app.orders.models import OrderLine
from app.settings import Settings
from app.suppliers.models import SupplierProduct
from tests.conftest import MerchantHandle, make_merchant
from tests.support.portal import Client, bearer, line, offer, portal_supplier, routed_order
from tests.support.routing import create_supplier
from tests.support.supplier_sim import BASE_URL, SupplierSim, rest_config
from tests.support.wait import eventually

CANCEL_PATH = "/orders/{reference}/cancel"


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

    return dict(await eventually(probe, timeout=20))


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
