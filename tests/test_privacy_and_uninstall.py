"""``app/uninstalled`` and Shopify's mandatory privacy topics (``customers/data_request``,
``customers/redact``, ``shop/redact``)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update

from app.db import Database
from app.jobs.task import TaskContext
from app.merchants.models import Merchant
from app.orders.models import Customer, Order
from app.security import SecretBox
from app.settings import Settings
from app.webhooks.models import WebhookDelivery
from app.webhooks.tasks import process_delivery
from tests.conftest import MerchantHandle
from tests.support.order_flow import (
    Client,
    accepted,
    add_catalog,
    all_processed,
    detail,
    open_exceptions,
    order_id_of,
    outcomes,
    send,
    store_delivery,
    types,
    wait_status,
)
from tests.support.shopify import order_payload
from tests.support.wait import eventually

SHOP = "acme-store.myshopify.com"
BOB = {"id": 207119551, "email": "bob.norman@hostmail.com", "phone": "555-625-1199"}


def shop_payload() -> dict[str, Any]:
    """``app/uninstalled`` carries the Shop resource."""
    return {
        "id": 690933842,
        "name": "Acme Store",
        "domain": "acme.example",
        "myshopify_domain": SHOP,
    }


def alice_order() -> dict[str, Any]:
    """Another customer's order in the same shop."""
    payload = order_payload(
        id=450789470, name="#1002", order_number=1002, email="alice@example.com"
    )
    payload["customer"].update(id=207119552, email="alice@example.com", first_name="Alice")
    payload["shipping_address"].update(
        name="Alice Liddell", first_name="Alice", last_name="Liddell"
    )
    return payload


async def merchant_row(db: Database, merchant: MerchantHandle) -> Merchant:
    async with db.sessionmaker() as session:
        row = await session.get(Merchant, merchant.id)
    assert row is not None
    return row


async def count(db: Database, model: Any) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def customers(db: Database) -> dict[int | None, tuple[Any, ...]]:
    async with db.sessionmaker() as session:
        rows = (await session.scalars(select(Customer))).all()
    return {
        c.shopify_customer_id: (
            c.email,
            c.first_name,
            c.last_name,
            c.phone,
            c.redacted_at is not None,
        )
        for c in rows
    }


async def stored_bodies(db: Database) -> list[str]:
    async with db.sessionmaker() as session:
        return list((await session.scalars(select(WebhookDelivery.payload))).all())


class TestAppUninstalled:
    async def test_merchant_is_deactivated_token_wiped_orders_kept(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        async with db.transaction() as session:
            await session.execute(
                update(Merchant)
                .where(Merchant.id == merchant.id)
                .values(shopify_token_encrypted=b"encrypted-token", shopify_scopes="read_orders")
            )
        await add_catalog(db, merchant)
        await accepted(client, "orders/create", order_payload())
        await wait_status(client, merchant, "ready_to_route", db=db)

        await accepted(client, "app/uninstalled", shop_payload())

        async def deactivated() -> Merchant | None:
            row = await merchant_row(db, merchant)
            return row if row.status == "inactive" else None

        row = await eventually(deactivated)
        assert row.shopify_token_encrypted is None
        assert row.shopify_scopes is None
        assert row.uninstalled_at is not None
        assert row.email == "owner@example.com"
        assert await count(db, Order) == 1
        assert await count(db, Customer) == 1

        r = await client.get("/api/v1/orders", headers=merchant.headers)
        assert r.status_code == 401

        # The webhook endpoint caches active shops for a few seconds.
        client.app.state.services.directory.forget(SHOP)
        deliveries = await count(db, WebhookDelivery)
        r = await send(client, "orders/create", order_payload(id=450789470, name="#1002"))
        assert (r.status_code, r.json()) == (200, {"status": "ignored"})
        r = await send(client, "orders/updated", order_payload(updated_at="2009-01-01T00:00:00Z"))
        assert (r.status_code, r.json()) == (200, {"status": "ignored"})
        assert await count(db, WebhookDelivery) == deliveries
        assert await count(db, Order) == 1

    async def test_uninstall_twice_is_harmless(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await accepted(client, "app/uninstalled", shop_payload())
        await accepted(client, "app/uninstalled", shop_payload())
        await all_processed(db, 2)
        assert sorted(await outcomes(db)) == ["already inactive", "merchant deactivated"]  # type: ignore[type-var]

    async def test_two_uninstalls_processed_at_once_deactivate_once(
        self, settings: Settings, db: Database, merchant: MerchantHandle
    ) -> None:
        ctx = TaskContext(settings=settings, db=db, box=SecretBox("x"))
        first = await store_delivery(db, merchant, shop_payload(), "app/uninstalled")
        second = await store_delivery(db, merchant, shop_payload(), "app/uninstalled")
        await asyncio.gather(process_delivery(ctx, first), process_delivery(ctx, second))
        assert sorted(await outcomes(db)) == ["already inactive", "merchant deactivated"]  # type: ignore[type-var]
        assert (await merchant_row(db, merchant)).status == "inactive"

    async def test_orders_slipping_through_the_cache_are_ignored_by_the_worker(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await accepted(client, "app/uninstalled", shop_payload())
        await all_processed(db, 1)
        # Still cached as active: accepted, then ignored by the worker.
        await accepted(client, "orders/create", order_payload())
        await all_processed(db, 2)
        assert (await outcomes(db))[1] == "ignored: merchant inactive"
        assert await count(db, Order) == 0

    async def test_privacy_topics_are_still_accepted_for_an_inactive_shop(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await accepted(client, "app/uninstalled", shop_payload())
        await all_processed(db, 1)
        client.app.state.services.directory.forget(SHOP)
        redact = {
            "shop_id": 690933842,
            "shop_domain": SHOP,
            "customer": BOB,
            "orders_to_redact": [],
        }
        await accepted(client, "customers/redact", redact)
        await accepted(client, "shop/redact", {"shop_id": 690933842, "shop_domain": SHOP})
        await all_processed(db, 3)
        assert (await outcomes(db))[1:] == [
            "redacted 0 orders (0 stored webhook bodies)",
            "shop redacted (0 orders)",
        ]

    async def test_reinstalled_shop_is_seen_at_once(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await accepted(client, "app/uninstalled", shop_payload())
        await all_processed(db, 1)
        client.app.state.services.directory.forget(SHOP)
        r = await send(client, "orders/create", order_payload())
        assert r.json() == {"status": "ignored"}
        # Reinstalled (as the install flow does): its next order must not be answered
        # "ignored" (Shopify would not send it again) just because "inactive" was cached.
        async with db.transaction() as session:
            await session.execute(
                update(Merchant)
                .where(Merchant.id == merchant.id)
                .values(status="active", uninstalled_at=None)
            )
        await accepted(client, "orders/create", order_payload())
        await order_id_of(db)


class TestCustomersRedact:
    async def test_wipes_personal_data_of_the_orders_keeps_the_books(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, "orders/create", order_payload(note="Call Bob on 555-625-1199"))
        await accepted(client, "orders/create", alice_order())
        bob = await wait_status(client, merchant, "ready_to_route", db=db)
        alice_before = await wait_status(client, merchant, "ready_to_route", 450789470, db=db)

        await accepted(
            client,
            "customers/redact",
            {
                "shop_id": 690933842,
                "shop_domain": SHOP,
                "customer": BOB,
                "orders_to_redact": [450789469],
            },
        )

        async def redacted() -> dict[str, Any] | None:
            order = await detail(client, merchant, bob["id"])
            return order if order["email"] is None else None

        after = await eventually(redacted)
        assert after["shipping_address"] is None
        assert after["note"] is None
        async with db.sessionmaker() as session:
            billing = await session.scalar(
                select(Order.billing_address).where(Order.id == uuid.UUID(bob["id"]))
            )
        assert billing is None
        # The books stay.
        assert Decimal(after["total_price"]) == Decimal("409.94")
        assert after["lines"] == bob["lines"]
        assert after["status"] == "ready_to_route"
        assert types(after) == [*types(bob), "privacy.redacted"]
        assert (
            after["timeline"][-1]["message"] == "customer data redacted on the customer's request"
        )

        assert await customers(db) == {
            207119551: (None, None, None, None, True),
            207119552: ("alice@example.com", "Alice", "Norman", None, False),
        }
        alice = await detail(client, merchant, alice_before["id"])
        assert alice["email"] == "alice@example.com"
        assert alice["shipping_address"] == alice_before["shipping_address"]

        # No copy of Bob's data is left in the stored webhook bodies; Alice's stays.
        await all_processed(db, 3)
        bodies = await stored_bodies(db)
        assert not [
            b for b in bodies if "bob.norman" in b or ("Chestnut" in b and "Alice" not in b)
        ]
        assert len([b for b in bodies if "alice@example.com" in b]) == 1

    async def test_a_later_order_of_the_redacted_customer_does_not_refill_the_customer(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await accepted(client, "orders/create", order_payload())
        await order_id_of(db)
        await accepted(
            client,
            "customers/redact",
            {"shop_id": 1, "shop_domain": SHOP, "customer": BOB, "orders_to_redact": [450789469]},
        )
        await all_processed(db, 2)
        await accepted(client, "orders/create", order_payload(id=450789471, name="#1003"))
        await order_id_of(db, 450789471)
        assert (await customers(db))[207119551] == (None, None, None, None, True)


class TestShopRedact:
    async def test_wipes_every_customers_data(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await accepted(client, "orders/create", order_payload())
        await accepted(client, "orders/create", alice_order())
        await all_processed(db, 2)
        await order_id_of(db, 450789470)
        await accepted(client, "app/uninstalled", shop_payload())
        await accepted(client, "shop/redact", {"shop_id": 690933842, "shop_domain": SHOP})
        await all_processed(db, 4)
        assert (await outcomes(db))[-1] == "shop redacted (2 orders)"

        async with db.sessionmaker() as session:
            orders = (await session.scalars(select(Order).order_by(Order.name))).all()
        assert [(o.name, o.email, o.shipping_address, o.billing_address) for o in orders] == [
            ("#1001", None, None, None),
            ("#1002", None, None, None),
        ]
        assert [o.total_price for o in orders] == [Decimal("409.94"), Decimal("409.94")]
        assert await customers(db) == {
            207119551: (None, None, None, None, True),
            207119552: (None, None, None, None, True),
        }
        bodies = await stored_bodies(db)
        assert not [b for b in bodies if "@" in b or "Chestnut" in b]


class TestCustomersDataRequest:
    async def test_opens_an_exception_listing_the_orders(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await accepted(client, "orders/create", order_payload())
        await accepted(client, "orders/create", alice_order())
        bob_id = await order_id_of(db)
        await order_id_of(db, 450789470)
        await all_processed(db, 2)
        await accepted(
            client,
            "customers/data_request",
            {
                "shop_id": 690933842,
                "shop_domain": SHOP,
                "orders_requested": [450789469],
                "customer": BOB,
                "data_request": {"id": 9999},
            },
        )
        await all_processed(db, 3)
        cases = [
            c
            for c in await open_exceptions(client, merchant)
            if c["kind"] == "customer_data_request"
        ]
        [case] = cases
        assert case["reason"] == (
            "customer bob.norman@hostmail.com asked for their data: 1 order(s) hold it (#1001)"
        )
        assert case["order_id"] is None
        assert case["data"] == {
            "order_ids": [str(bob_id)],
            "shopify_order_ids": ["450789469"],
            "shopify_customer_id": 207119551,
        }

    async def test_a_later_redaction_takes_the_name_out_of_the_request(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        request = {"shop_id": 1, "shop_domain": SHOP, "orders_requested": [], "customer": BOB}
        await accepted(client, "customers/data_request", request)
        await all_processed(db, 1)
        [case] = await open_exceptions(client, merchant)
        assert case["reason"] == (
            "customer bob.norman@hostmail.com asked for their data: 0 order(s) hold it (none)"
        )
        await accepted(
            client,
            "customers/redact",
            {"shop_id": 1, "shop_domain": SHOP, "customer": BOB, "orders_to_redact": []},
        )
        await all_processed(db, 2)
        [case] = await open_exceptions(client, merchant)
        assert "bob" not in case["reason"]
        assert not [b for b in await stored_bodies(db) if "bob" in b]
