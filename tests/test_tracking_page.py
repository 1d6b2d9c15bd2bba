"""The customer's tracking page, ``GET /track/{token}``: exactly what a customer sees (JSON and
HTML), nothing personal beyond the city, a wrong token indistinguishable from any 404, its
security headers, and the two queries it costs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import event, inspect, update

from app.db import Database
from app.merchants.models import Merchant
from app.merchants.service import deactivate
from app.orders import privacy
from app.orders.models import Order
from app.services import Services
from tests.conftest import MerchantHandle
from tests.support.orders import create_order
from tests.support.tracking_page import (
    TRACKING_NUMBER,
    TRACKING_URL,
    Tracked,
    branded_shop,
    token_of,
    tracked_order,
)

Client = AsyncTestClient[Litestar]
TIMES = "\N{MULTIPLICATION SIGN}"
JSON = {"Accept": "application/json"}
NOT_FOUND = {"status_code": 404, "detail": "Not Found", "extra": {}}


@pytest.fixture
async def tracked(client: Client, db: Database) -> Tracked:
    return await tracked_order(client, db, await branded_shop(db))


def expected_json(tracked: Tracked) -> dict[str, Any]:
    return {
        "locale": "en",
        "store": {"name": "Glow & Co", "logo_url": None, "color": "#0f766e"},
        "order_name": tracked.order_name,
        "placed_at": "2026-11-26T15:00:00Z",
        "status": "shipped",
        "status_label": "Shipped",
        "ship_to": {"city": "Austin", "country_code": "US", "country": "United States"},
        "items": [
            {
                "title": "Red mug",
                "variant_title": "Large",
                "quantity": 2,
                "quantity_unshipped": 1,
                "shipments": [{"shipment": 1, "quantity": 1}],
            },
            {
                "title": "Blue bowl",
                "variant_title": None,
                "quantity": 1,
                "quantity_unshipped": 1,
                "shipments": [],
            },
        ],
        "shipments": [
            {
                "number": 1,
                "carrier": "UPS",
                "tracking_number": TRACKING_NUMBER,
                "tracking_url": TRACKING_URL,
                "status": "in_transit",
                "status_label": "In transit",
                "shipped_at": "2026-11-27T10:00:00Z",
                "estimated_delivery_at": "2026-12-02T18:00:00Z",
                "delivered_at": None,
                "events": [
                    {
                        "status": "in_transit",
                        "status_label": "In transit",
                        "occurred_at": "2026-11-28T08:00:00Z",
                        "description": "Departed from facility",
                        "location": "Louisville, KY, US",
                    },
                    {
                        "status": "info_received",
                        "status_label": "Label created",
                        "occurred_at": "2026-11-27T10:05:00Z",
                        "description": "Shipper created a label",
                        "location": None,
                    },
                ],
            }
        ],
        "can_cancel": False,  # a parcel shipped
    }


_COUNTING: ContextVar[bool] = ContextVar("counting", default=False)


@contextmanager
def counting_selects(app: Litestar) -> Iterator[list[str]]:
    """Every SELECT the requests of the block send. Only this task's: the workers and the
    outbox relay share the engine (on PostgreSQL) but not this context."""
    services: Services = app.state.services
    engine = services.db.read_engine.sync_engine
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if _COUNTING.get() and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    reset = _COUNTING.set(True)
    try:
        yield seen
    finally:
        _COUNTING.reset(reset)
        event.remove(engine, "before_cursor_execute", before)


class TestContent:
    async def test_json_is_exactly_what_the_customer_may_see_in_two_queries(
        self, app: Litestar, client: Client, tracked: Tracked
    ) -> None:
        with counting_selects(app) as selects:
            r = await client.get(f"/track/{tracked.token}", headers=JSON)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json() == expected_json(tracked)
        assert len(selects) == 2, selects

    async def test_german_for_a_german_browser(self, client: Client, tracked: Tracked) -> None:
        r = await client.get(
            f"/track/{tracked.token}",
            headers={**JSON, "Accept-Language": "de-DE,de;q=0.9,en;q=0.5"},
        )
        body = r.json()
        assert (body["locale"], body["status_label"], body["ship_to"]["country"]) == (
            "de",
            "Versandt",
            "Vereinigte Staaten",
        )
        assert [e["status_label"] for e in body["shipments"][0]["events"]] == [
            "Unterwegs",
            "Versandlabel erstellt",
        ]
        html = await client.get(f"/track/{tracked.token}", headers={"Accept-Language": "de"})
        assert html.headers["content-language"] == "de"
        assert '<html lang="de">' in html.text
        assert f"<h1>Bestellung {tracked.order_name}</h1>" in html.text
        assert "Bestellt am 26. November 2026" in html.text
        assert 'Voraussichtliche Zustellung</dt><dd class="estimated">2. Dezember 2026' in html.text

    async def test_html_shows_the_order_and_nothing_personal(
        self, client: Client, tracked: Tracked
    ) -> None:
        r = await client.get(f"/track/{tracked.token}", headers={"Accept": "text/html"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        html = r.text
        assert len(r.content) < 30_000
        assert f"<h1>Order {tracked.order_name}</h1>" in html
        assert '<span class="store">Glow &amp; Co</span>' in html
        assert "--brand: #0f766e;" in html
        assert "Placed on November 26, 2026<br>Ships to Austin, United States" in html
        assert '<dd class="carrier">UPS</dd>' in html
        assert f'<dd class="tracking-number">{TRACKING_NUMBER}</dd>' in html
        assert (
            f'<a class="track-link" href="{TRACKING_URL}" rel="noopener noreferrer" '
            'target="_blank">Track at UPS</a>'
        ) in html
        assert '<dd class="estimated">December 2, 2026</dd>' in html
        events = re.findall(r"<li><strong>([^<]+)</strong><br><time datetime=\"([^\"]+)\"", html)
        assert events == [
            ("In transit", "2026-11-28T08:00:00+00:00"),
            ("Label created", "2026-11-27T10:05:00+00:00"),
        ]
        assert '<span class="location">Louisville, KY, US</span>' in html
        shipped, unshipped = html.split('<section class="unshipped">')
        assert (
            f'<span class="qty">1 {TIMES}</span> Red mug '
            '<span class="variant">Large</span>' in shipped
        )
        assert "Blue bowl" not in shipped
        assert f'<span class="qty">1 {TIMES}</span> Red mug' in unshipped
        assert f'<span class="qty">1 {TIMES}</span> Blue bowl' in unshipped
        # No street, zip, name, email, price, supplier or cost; no script at all.
        for private in (
            "12 Congress",
            "78701",
            "Ada",
            "Lovelace",
            "ada@example.com",
            "10.50",
            "4.99",
            "USD",
            "Alpha",
            "3.10",
            "RED-S",
            "<script",
        ):
            assert private not in html, private
        assert tracked.order_id not in html

    async def test_out_for_delivery_then_delivered(self, client: Client, tracked: Tracked) -> None:
        async def report(shipment_id: str, status: str, at: str) -> None:
            r = await client.post(
                f"/supplier/v1/shipments/{shipment_id}/events",
                json={"status": status, "occurred_at": at},
                headers=tracked.supplier,
            )
            assert r.status_code in (200, 201), r.text

        async def page() -> dict[str, Any]:
            r = await client.get(f"/track/{tracked.token}", headers=JSON)
            assert r.status_code == 200, r.text
            return dict(r.json())

        r = await client.post(
            f"/supplier/v1/orders/{tracked.po_id}/shipments",
            json={
                "carrier": "DHL",
                "tracking_number": "JJD0099999999",
                "shipped_at": "2026-11-29T09:00:00Z",
            },
            headers=tracked.supplier,
        )
        assert r.status_code == 201, r.text
        second = r.json()["id"]
        await report(tracked.shipment_id, "out_for_delivery", "2026-11-30T07:00:00Z")
        body = await page()
        assert (body["status"], body["status_label"]) == ("out_for_delivery", "Out for delivery")
        assert [(s["number"], s["carrier"], s["status"]) for s in body["shipments"]] == [
            (1, "UPS", "out_for_delivery"),
            (2, "DHL", "shipped"),
        ]
        assert [(i["quantity_unshipped"], i["shipments"]) for i in body["items"]] == [
            (0, [{"shipment": 1, "quantity": 1}, {"shipment": 2, "quantity": 1}]),
            (0, [{"shipment": 2, "quantity": 1}]),
        ]
        await report(tracked.shipment_id, "delivered", "2026-11-30T12:00:00Z")
        assert (await page())["status"] == "shipped"  # one parcel still on its way
        await report(second, "delivered", "2026-12-01T10:00:00Z")
        body = await page()
        assert (body["status"], body["status_label"]) == ("delivered", "Delivered")
        assert [s["delivered_at"] for s in body["shipments"]] == [
            "2026-11-30T12:00:00Z",
            "2026-12-01T10:00:00Z",
        ]
        html = (await client.get(f"/track/{tracked.token}")).text
        assert '<section class="unshipped">' not in html
        assert "<dt>Delivered on</dt><dd>November 30, 2026</dd>" in html
        assert "Estimated delivery" not in html

    async def test_an_order_not_yet_shipped_and_a_hostile_title(
        self, client: Client, db: Database, merchant: MerchantHandle
    ) -> None:
        hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
        order = await create_order(
            client,
            merchant,
            "H-1",
            lines=[{"sku": "EVIL", "quantity": 1, "price": "1.00", "title": hostile}],
        )
        token = token_of(order)
        page = (await client.get(f"/track/{token}", headers=JSON)).json()
        assert (page["status"], page["status_label"], page["shipments"]) == (
            "received",
            "Order received",
            [],
        )
        assert page["store"] == {
            "name": "acme-store.myshopify.com",
            "logo_url": None,
            "color": None,
        }
        assert page["items"] == [
            {
                "title": hostile,
                "variant_title": None,
                "quantity": 1,
                "quantity_unshipped": 1,
                "shipments": [],
            }
        ]
        html = (await client.get(f"/track/{token}")).text
        assert hostile not in html
        assert "<script" not in html
        assert "<img" not in html
        assert (
            "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=&#34;alert(2)&#34;&gt;"
            in html
        )
        assert "Your order has been received and will ship soon." in html

        async with db.transaction() as session:
            await session.execute(
                update(Order).where(Order.tracking_token == token).values(status="cancelled")
            )
        page = (await client.get(f"/track/{token}", headers=JSON)).json()
        assert (page["status"], page["status_label"]) == ("cancelled", "Cancelled")
        assert "This order was cancelled." in (await client.get(f"/track/{token}")).text


class TestSecurity:
    async def test_headers_of_the_page(self, client: Client, tracked: Tracked) -> None:
        r = await client.get(f"/track/{tracked.token}")
        nonce = re.search(r'<style nonce="([^"]+)">', r.text)
        assert nonce is not None
        assert r.headers["content-security-policy"] == (
            f"default-src 'none'; style-src 'nonce-{nonce.group(1)}'; img-src https:; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        again = await client.get(f"/track/{tracked.token}")
        assert nonce.group(1) not in again.text  # a new nonce every time
        for response in (r, await client.get(f"/track/{tracked.token}", headers=JSON)):
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["x-robots-tag"] == "noindex, nofollow"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["vary"] == "Accept, Accept-Language"
        assert '<meta name="referrer" content="no-referrer">' in r.text

    async def test_a_wrong_token_is_any_404(
        self, app: Litestar, client: Client, db: Database, tracked: Tracked
    ) -> None:
        elsewhere = await client.get("/no/such/page")
        assert (elsewhere.status_code, elsewhere.json()) == (404, NOT_FOUND)
        wrong = ["A" * 32, tracked.token[:-1] + ("A" if tracked.token[-1] != "A" else "B")]
        malformed = ["x", "%3Cscript%3E", "a" * 65, tracked.token + "!", "to.ken" * 4]
        with counting_selects(app) as selects:
            for token in wrong + malformed:
                for headers in ({}, JSON):
                    r = await client.get(f"/track/{token}", headers=headers)
                    assert (r.status_code, r.json()) == (404, NOT_FOUND), token
                    assert r.headers["cache-control"] == "no-store"
                    assert r.headers["referrer-policy"] == "no-referrer"
        # A well-formed token costs one indexed lookup; a malformed one none.
        assert len(selects) == 2 * len(wrong)
        # The case of a token matters (it is compared exactly).
        swapped = tracked.token.swapcase()
        if swapped != tracked.token:
            assert (await client.get(f"/track/{swapped}")).status_code == 404

    async def test_a_redacted_customer_has_no_page(
        self, client: Client, db: Database, tracked: Tracked
    ) -> None:
        assert (await client.get(f"/track/{tracked.token}")).status_code == 200
        async with db.transaction() as session:
            await privacy.redact_customer(
                session, tracked.shop.id, {"customer": {"email": "ada@example.com"}}
            )
        for headers in ({}, JSON):
            r = await client.get(f"/track/{tracked.token}", headers=headers)
            assert (r.status_code, r.json()) == (404, NOT_FOUND)

    async def test_an_uninstalled_store_has_no_pages(
        self, client: Client, db: Database, tracked: Tracked
    ) -> None:
        async with db.transaction() as session:
            merchant = await session.get(Merchant, tracked.shop.id)
            assert merchant is not None
            assert await deactivate(session, merchant)
        r = await client.get(f"/track/{tracked.token}", headers=JSON)
        assert (r.status_code, r.json()) == (404, NOT_FOUND)

    async def test_tokens_are_unique_and_indexed(self, db: Database) -> None:
        async with db.engine.connect() as conn:
            uniques = await conn.run_sync(
                lambda c: (
                    inspect(c).get_unique_constraints("orders")
                    + [i for i in inspect(c).get_indexes("orders") if i["unique"]]
                )
            )
        assert ["tracking_token"] in [u["column_names"] for u in uniques]

    async def test_openapi_documents_both_answers(self, client: Client) -> None:
        doc = (await client.get("/schema/openapi.json")).json()
        op = doc["paths"]["/track/{token}"]["get"]
        assert op["operationId"] == "getTrackingPage"
        assert "security" not in op or op["security"] == []
        ok = op["responses"]["200"]["content"]
        assert set(ok) == {"application/json", "text/html"}
        assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/TrackingPageOut"}
        assert set(op["responses"]) == {"200", "404"}
