"""Order intake through ``POST /webhooks/shopify``: verification, durable storage, duplicates,
tenant isolation, and the mapping of Shopify's real order payload."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.db import Database
from app.orders.models import Order
from app.webhooks.models import WebhookDelivery
from tests.conftest import OLD_SHOPIFY_SECRET, SHOPIFY_SECRET, MerchantHandle
from tests.support.shopify import order_payload, webhook_headers
from tests.support.wait import eventually

Client = AsyncTestClient[Litestar]


async def post_order(
    client: Client,
    payload: dict[str, Any],
    *,
    secret: str = SHOPIFY_SECRET,
    topic: str = "orders/create",
    shop: str = "acme-store.myshopify.com",
    webhook_id: str | None = None,
    event_id: str | None = None,
) -> Any:
    body = json.dumps(payload).encode()
    headers = webhook_headers(
        body, secret=secret, topic=topic, shop=shop, webhook_id=webhook_id, event_id=event_id
    )
    return await client.post("/webhooks/shopify", content=body, headers=headers)


async def count(db: Database, model: Any) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def wait_for_orders(client: Client, merchant: MerchantHandle, n: int = 1) -> list[Any]:
    async def probe() -> list[Any] | None:
        r = await client.get("/api/v1/orders", headers=merchant.headers)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        return items if len(items) >= n else None

    return await eventually(probe)


class TestShopifyOrderCreate:
    async def test_real_payload_becomes_an_order_with_exact_totals(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        r = await post_order(client, order_payload())
        assert r.status_code == 200
        assert r.json() == {"status": "accepted"}

        [summary] = await wait_for_orders(client, merchant)
        assert summary["name"] == "#1001"
        assert summary["shopify_order_id"] == "450789469"
        assert summary["currency"] == "USD"
        assert Decimal(summary["total_price"]) == Decimal("409.94")

        detail = (
            await client.get(f"/api/v1/orders/{summary['id']}", headers=merchant.headers)
        ).json()
        assert Decimal(detail["subtotal_price"]) == Decimal("398.00")
        assert Decimal(detail["total_tax"]) == Decimal("11.94")
        assert Decimal(detail["total_shipping"]) == Decimal("0")
        assert detail["financial_status"] == "authorized"
        assert detail["email"] == "bob.norman@hostmail.com"
        assert detail["shipping_address"]["country_code"] == "US"
        assert detail["shipping_address"]["zip"] == "40202"
        assert detail["shopify_gid"] == "gid://shopify/Order/450789469"
        assert [
            (ln["sku"], ln["variant_id"], ln["quantity"], ln["price"]) for ln in detail["lines"]
        ] == [
            ("IPOD2008GREEN", "39072856", 1, "199.00"),
            ("IPOD2008RED", "49148385", 1, "199.00"),
            ("IPOD2008BLACK", "457924702", 1, "199.00"),
        ]
        assert detail["timeline"][0]["type"] == "order.received"
        assert detail["tracking_url"].startswith("http://testserver.local/track/")

    async def test_64_bit_ids_and_null_skus_are_kept_exact(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        payload = order_payload(
            id=9223372036854775807, admin_graphql_api_id="gid://shopify/Order/9223372036854775807"
        )
        payload["line_items"][0]["variant_id"] = None
        payload["line_items"][0]["sku"] = ""
        payload["line_items"][1]["id"] = 9223372036854775806
        assert (await post_order(client, payload)).status_code == 200
        [summary] = await wait_for_orders(client, merchant)
        assert summary["shopify_order_id"] == "9223372036854775807"
        detail = (
            await client.get(f"/api/v1/orders/{summary['id']}", headers=merchant.headers)
        ).json()
        assert detail["shopify_gid"] == "gid://shopify/Order/9223372036854775807"
        assert detail["lines"][0]["sku"] is None
        assert detail["lines"][0]["variant_id"] is None
        assert detail["lines"][1]["shopify_line_id"] == "9223372036854775806"

    async def test_wrong_or_missing_hmac_is_401_and_stores_nothing(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        r = await post_order(client, order_payload(), secret="not-the-secret")
        assert r.status_code == 401
        assert "X-Shopify-Hmac-Sha256" in r.json()["detail"]

        body = json.dumps(order_payload()).encode()
        headers = webhook_headers(body, secret=SHOPIFY_SECRET)
        del headers["X-Shopify-Hmac-Sha256"]
        r = await client.post("/webhooks/shopify", content=body, headers=headers)
        assert r.status_code == 401

        # A valid signature over a different body is still wrong.
        headers = webhook_headers(body, secret=SHOPIFY_SECRET)
        r = await client.post("/webhooks/shopify", content=body + b" ", headers=headers)
        assert r.status_code == 401
        assert await count(db, WebhookDelivery) == 0

    async def test_previous_secret_is_accepted_during_rotation(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        r = await post_order(client, order_payload(), secret=OLD_SHOPIFY_SECRET)
        assert r.status_code == 200
        await wait_for_orders(client, merchant)

    async def test_same_webhook_five_times_gives_one_order(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        statuses = []
        for _ in range(5):
            r = await post_order(client, order_payload(), webhook_id="wh-1", event_id="ev-1")
            statuses.append((r.status_code, r.json()["status"]))
        assert statuses == [(200, "accepted")] + [(200, "duplicate")] * 4
        await wait_for_orders(client, merchant)
        await asyncio.sleep(0.3)
        assert await count(db, Order) == 1
        assert await count(db, WebhookDelivery) == 1

    async def test_same_webhook_five_times_concurrently_gives_one_order(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        results = await asyncio.gather(
            *(
                post_order(client, order_payload(), webhook_id="wh-c", event_id="ev-c")
                for _ in range(5)
            )
        )
        assert all(r.status_code == 200 for r in results)
        assert sorted(r.json()["status"] for r in results) == ["accepted"] + ["duplicate"] * 4
        await wait_for_orders(client, merchant)
        await asyncio.sleep(0.3)
        assert await count(db, Order) == 1

    async def test_redelivery_with_same_event_id_is_a_duplicate(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        first = await post_order(client, order_payload(), webhook_id="a", event_id="same")
        again = await post_order(client, order_payload(), webhook_id="b", event_id="same")
        assert first.json()["status"] == "accepted"
        assert again.json()["status"] == "duplicate"
        assert await count(db, WebhookDelivery) == 1

    async def test_second_create_for_same_shopify_order_makes_no_second_order(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        # Different webhook and event ids (e.g. two subscriptions): still one order.
        await asyncio.gather(*(post_order(client, order_payload()) for _ in range(3)))
        await wait_for_orders(client, merchant)

        async def all_processed() -> bool:
            async with db.sessionmaker() as session:
                pending = await session.scalar(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(WebhookDelivery.processed_at.is_(None))
                )
            return pending == 0

        await eventually(all_processed)
        assert await count(db, Order) == 1
        assert await count(db, WebhookDelivery) == 3

    async def test_other_merchant_gets_404_for_the_order(
        self, client: Client, merchant: MerchantHandle, other_merchant: MerchantHandle
    ) -> None:
        await post_order(client, order_payload())
        [summary] = await wait_for_orders(client, merchant)
        r = await client.get(f"/api/v1/orders/{summary['id']}", headers=other_merchant.headers)
        assert r.status_code == 404
        listing = await client.get("/api/v1/orders", headers=other_merchant.headers)
        assert listing.json()["items"] == []

    async def test_unknown_shop_is_refused_and_stores_nothing(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        r = await post_order(client, order_payload(), shop="stranger.myshopify.com")
        assert r.status_code == 404
        assert "stranger.myshopify.com" in r.json()["detail"]
        assert await count(db, WebhookDelivery) == 0

    async def test_unknown_topic_is_200_and_ignored(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        r = await post_order(client, {"id": 1}, topic="products/update")
        assert r.status_code == 200
        assert r.json() == {"status": "ignored"}
        assert await count(db, WebhookDelivery) == 0

    @pytest.mark.parametrize(
        ("mutate", "expected"),
        [
            (lambda h: h.pop("X-Shopify-Topic"), "X-Shopify-Topic"),
            (lambda h: h.pop("X-Shopify-Webhook-Id"), "X-Shopify-Webhook-Id"),
            (lambda h: h.update({"X-Shopify-Shop-Domain": "evil.example.com"}), "myshopify.com"),
        ],
    )
    async def test_bad_headers_are_400_naming_the_header(
        self, client: Client, merchant: MerchantHandle, mutate: Any, expected: str
    ) -> None:
        body = json.dumps(order_payload()).encode()
        headers = webhook_headers(body, secret=SHOPIFY_SECRET)
        mutate(headers)
        r = await client.post("/webhooks/shopify", content=body, headers=headers)
        assert r.status_code == 400
        assert expected in r.json()["detail"]

    async def test_signed_body_that_is_not_json_is_400(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        body = b"{not json"
        r = await client.post(
            "/webhooks/shopify", content=body, headers=webhook_headers(body, secret=SHOPIFY_SECRET)
        )
        assert r.status_code == 400
        assert "JSON" in r.json()["detail"]


class TestServerFastPath:
    """``dropship serve`` answers webhooks through the ASGI fast path: same function, same
    answers as the Litestar route, everything else passes through."""

    async def test_same_answers_as_the_route(
        self, settings: Any, merchant: MerchantHandle, db: Database
    ) -> None:
        from app.webhooks.controllers import shopify_fast_path
        from dropship.asgi import create_app

        app = create_app(settings, run_workers=True, configure_logs=False)
        fast = shopify_fast_path(app, app.state.services)
        # The test client drives lifespan and requests in the app's own event loop.
        async with AsyncTestClient(fast, timeout=30) as http:  # type: ignore[arg-type]
            body = json.dumps(order_payload()).encode()
            headers = webhook_headers(body, secret=SHOPIFY_SECRET, webhook_id="f1")
            first = await http.post("/webhooks/shopify", content=body, headers=headers)
            again = await http.post("/webhooks/shopify", content=body, headers=headers)
            assert (first.status_code, first.json()) == (200, {"status": "accepted"})
            assert (again.status_code, again.json()) == (200, {"status": "duplicate"})

            forged = await http.post("/webhooks/shopify", content=body + b" ", headers=headers)
            assert forged.status_code == 401
            assert forged.json()["status_code"] == 401

            no_topic = dict(headers)
            del no_topic["X-Shopify-Topic"]
            r = await http.post("/webhooks/shopify", content=body, headers=no_topic)
            assert r.status_code == 400
            assert "X-Shopify-Topic" in r.json()["detail"]

            passthrough = await http.get("/health/live")
            assert passthrough.json() == {"status": "ok"}

            async def stored() -> bool:
                return await count(db, Order) == 1

            await eventually(stored)
        assert await count(db, WebhookDelivery) == 1


class TestIngestWriter:
    async def test_full_queue_answers_503_at_once(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        from app.webhooks.ingest import IncomingWebhook, IngestWriter, Overloaded

        writer = IngestWriter(db, max_waiting=1, writers=1)
        release = asyncio.Event()

        async def slow(batch: Any, *args: Any) -> set[Any]:
            await release.wait()
            return {w.id for w in batch}

        writer._write_sqlite = slow  # type: ignore[method-assign]
        writer._write_pg = lambda conn, batch: slow(batch)  # type: ignore[method-assign]
        writer._connect = _fake_connect  # type: ignore[method-assign]
        await writer.start()
        try:

            def item(i: int) -> IncomingWebhook:
                return IncomingWebhook("shopify", merchant.id, "orders/create", f"w{i}", None, "{}")  # type: ignore[arg-type]

            first = asyncio.ensure_future(writer.submit(item(1)))  # taken by the writer
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(writer.submit(item(2)))  # waits in the queue
            await asyncio.sleep(0.05)
            with pytest.raises(Overloaded):
                await writer.submit(item(3))
            release.set()
            assert await first is True
            assert await second is True
        finally:
            await writer.stop()

    async def test_overload_is_a_503_with_retry_after(
        self, client: Client, merchant: MerchantHandle, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from app.webhooks.ingest import Overloaded

        async def full(_: Any) -> bool:
            raise Overloaded("4096 webhooks waiting")

        monkeypatch.setattr(client.app.state.services.ingest, "submit", full)
        r = await post_order(client, order_payload())
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"

    @pytest.mark.parametrize("backend", ["postgres"], indirect=True)
    async def test_redeliveries_in_concurrent_batches_do_not_deadlock(
        self, settings: Any, merchant: MerchantHandle, db: Database
    ) -> None:
        """A delivery and its redelivery in two concurrent batches, in opposite orders, used to
        deadlock on the unique indexes; batches are now inserted in key order."""
        from app.webhooks.ingest import IncomingWebhook, IngestWriter

        writer = IngestWriter(db)
        conns = [await writer._connect(), await writer._connect()]
        try:
            for round_ in range(20):
                ids = [f"r{round_}-{i}" for i in range(40)]

                def batch(order: list[str]) -> list[IncomingWebhook]:
                    return [
                        IncomingWebhook("shopify", merchant.id, "orders/create", w, None, "{}")  # type: ignore[arg-type]
                        for w in order
                    ]

                a, b = await asyncio.gather(
                    writer._write_pg(conns[0], batch(ids)),
                    writer._write_pg(conns[1], batch(list(reversed(ids)))),
                )
                assert len(a) + len(b) == 40
        finally:
            for c in conns:
                await c.close()
        assert await count(db, WebhookDelivery) == 800


async def _fake_connect() -> Any:
    class Conn:
        def is_closed(self) -> bool:
            return False

        async def close(self) -> None:
            return None

    return Conn()
