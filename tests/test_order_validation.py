"""Order validation in the worker (payment, shipping address, catalog), each outcome on the
timeline; rejected payloads; and the idempotency of the ``webhook.process`` and
``order.validate`` tasks."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.db import Database
from app.exceptions.models import ExceptionCase
from app.jobs.task import TaskContext
from app.merchants.models import Merchant
from app.orders.models import Order
from app.orders.tasks import validate_order
from app.security import SecretBox
from app.settings import Settings
from app.timeline.models import OrderEvent
from app.webhooks.tasks import process_delivery
from tests.conftest import MerchantHandle
from tests.support.order_flow import (
    Client,
    accepted,
    add_catalog,
    all_processed,
    events,
    open_exceptions,
    outcomes,
    store_delivery,
    wait_status,
)
from tests.support.shopify import order_payload

CREATE = "orders/create"


def without(field: str) -> dict[str, Any]:
    payload = order_payload()
    payload["shipping_address"][field] = None
    return payload


class TestValidOrder:
    async def test_all_good_is_ready_to_route_with_each_check_on_the_timeline(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, order_payload())
        order = await wait_status(client, merchant, "ready_to_route", db=db)
        assert order["status_reason"] is None
        assert events(order) == [
            ("order.received", "order #1001 received from shopify"),
            ("validation.payment", "payment ok (authorized)"),
            ("validation.address", "shipping address complete"),
            ("validation.catalog", "every SKU is in the catalog"),
            ("status.ready_to_route", "received -> ready_to_route"),
        ]
        assert [e["data"].get("ok") for e in order["timeline"][1:4]] == [True, True, True]
        assert order["timeline"][1]["data"]["financial_status"] == "authorized"
        assert await open_exceptions(client, merchant) == []

    async def test_country_without_postcodes_needs_no_zip(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        payload = order_payload()
        payload["shipping_address"].update(
            address1="1 Queen's Road Central",
            city="Central",
            country="Hong Kong",
            country_code="HK",
            province=None,
            province_code=None,
            zip=None,
        )
        await accepted(client, CREATE, payload)
        order = await wait_status(client, merchant, "ready_to_route", db=db)
        assert ("validation.address", "shipping address complete") in events(order)

    async def test_merchant_may_route_only_paid_orders(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        async with db.transaction() as session:
            await session.execute(
                update(Merchant)
                .where(Merchant.id == merchant.id)
                .values(
                    settings={
                        "routable_financial_statuses": ["paid"],
                        "routing": {"auto_route": False},
                    }
                )
            )
        await accepted(client, CREATE, order_payload())
        order = await wait_status(client, merchant, "on_hold", db=db)
        assert order["status_reason"] == "payment status is authorized"


class TestPayment:
    @pytest.mark.parametrize(
        ("financial_status", "reason"),
        [
            ("pending", "payment is pending review"),
            ("voided", "payment status is voided"),
            (None, "payment status is unknown"),
        ],
    )
    async def test_unsettled_payment_holds_the_order(
        self,
        client: Client,
        merchant: MerchantHandle,
        db: Database,
        financial_status: str | None,
        reason: str,
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, order_payload(financial_status=financial_status))
        order = await wait_status(client, merchant, "on_hold", db=db)
        assert order["status_reason"] == reason
        assert events(order)[1:] == [
            ("validation.payment", reason),
            ("validation.address", "shipping address complete"),
            ("validation.catalog", "every SKU is in the catalog"),
            ("status.on_hold", f"received -> on_hold: {reason}"),
        ]
        assert order["timeline"][1]["data"] == {"ok": False, "financial_status": financial_status}
        # Waiting for Shopify is not a person's job: nothing in the exceptions queue.
        assert await open_exceptions(client, merchant) == []


class TestShippingAddress:
    @pytest.mark.parametrize(
        ("payload", "reason"),
        [
            (without("zip"), "shipping address has no zip"),
            (without("address1"), "shipping address has no address1"),
            (order_payload(shipping_address=None), "no shipping address"),
        ],
        ids=["zip", "address1", "none"],
    )
    async def test_incomplete_address_needs_attention_naming_the_field(
        self,
        client: Client,
        merchant: MerchantHandle,
        db: Database,
        payload: dict[str, Any],
        reason: str,
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, payload)
        order = await wait_status(client, merchant, "needs_attention", db=db)
        assert order["status_reason"] == reason
        assert ("validation.address", reason) in events(order)
        assert events(order)[-1] == (
            "status.needs_attention",
            f"received -> needs_attention: {reason}",
        )
        [case] = await open_exceptions(client, merchant)
        assert (case["kind"], case["reason"], case["order_id"]) == (
            "validation_failed",
            reason,
            order["id"],
        )
        assert case["data"] == {"problems": [reason]}

    async def test_several_missing_fields_are_named_together(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        payload = order_payload()
        payload["shipping_address"].update(city="", province_code=None, province=None)
        await accepted(client, CREATE, payload)
        order = await wait_status(client, merchant, "needs_attention", db=db)
        assert order["status_reason"] == "shipping address has no city, province_code"

    async def test_address_and_payment_problems_are_both_given(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        payload = without("zip")
        payload["financial_status"] = "pending"
        await accepted(client, CREATE, payload)
        order = await wait_status(client, merchant, "needs_attention", db=db)
        assert order["status_reason"] == "shipping address has no zip; payment is pending review"


class TestCatalog:
    async def test_unknown_sku_needs_attention_naming_the_sku(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant, ["IPOD2008GREEN", "IPOD2008RED"])
        await accepted(client, CREATE, order_payload())
        order = await wait_status(client, merchant, "needs_attention", db=db)
        reason = "SKU IPOD2008BLACK is not in any active supplier's catalog"
        assert order["status_reason"] == reason
        assert ("validation.catalog", reason) in events(order)
        assert order["timeline"][3]["data"] == {"ok": False}
        [case] = await open_exceptions(client, merchant)
        assert (case["kind"], case["reason"], case["order_id"]) == (
            "validation_failed",
            reason,
            order["id"],
        )

    async def test_empty_sku_needs_attention_naming_the_line(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        payload = order_payload()
        payload["line_items"][1]["sku"] = ""
        await accepted(client, CREATE, payload)
        order = await wait_status(client, merchant, "needs_attention", db=db)
        assert order["status_reason"] == "line 2 (IPod Nano - 8gb) has no SKU"
        [case] = await open_exceptions(client, merchant)
        assert case["reason"] == "line 2 (IPod Nano - 8gb) has no SKU"

    async def test_sku_of_an_inactive_supplier_counts_as_unknown(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant, ["IPOD2008GREEN", "IPOD2008RED"])
        await add_catalog(db, merchant, ["IPOD2008BLACK"], supplier="Gone Ltd", status="inactive")
        await accepted(client, CREATE, order_payload())
        order = await wait_status(client, merchant, "needs_attention", db=db)
        assert order["status_reason"] == (
            "SKU IPOD2008BLACK is not in any active supplier's catalog"
        )

    async def test_another_merchants_catalog_does_not_count(
        self,
        client: Client,
        merchant: MerchantHandle,
        other_merchant: MerchantHandle,
        db: Database,
    ) -> None:
        await add_catalog(db, other_merchant)
        await accepted(client, CREATE, order_payload())
        order = await wait_status(client, merchant, "needs_attention", db=db)
        assert order["status_reason"] == "; ".join(
            f"SKU {sku} is not in any active supplier's catalog"
            for sku in ("IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK")
        )

    async def test_removed_lines_are_not_checked(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant, ["IPOD2008GREEN", "IPOD2008RED"])
        payload = order_payload()
        payload["line_items"][2].update(quantity=1, current_quantity=0)
        await accepted(client, CREATE, payload)
        await wait_status(client, merchant, "ready_to_route", db=db)

    async def test_no_lines_to_fulfil_needs_attention(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await accepted(client, CREATE, order_payload(line_items=[]))
        order = await wait_status(client, merchant, "needs_attention", db=db)
        assert order["status_reason"] == "order has no lines to fulfil"
        assert ("validation.catalog", "order has no lines to fulfil") in events(order)


class TestRejectedPayload:
    async def test_unusable_order_goes_to_the_exceptions_queue_naming_the_field(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        payload = order_payload()
        payload["line_items"][2]["price"] = "a lot"
        await accepted(client, CREATE, payload)
        await all_processed(db, 1)
        assert await outcomes(db) == ["rejected: line_items[2].price: not an amount: 'a lot'"]
        [case] = await open_exceptions(client, merchant)
        assert case["kind"] == "webhook_rejected"
        assert case["reason"] == (
            "Shopify orders/create webhook could not be used: "
            "line_items[2].price: not an amount: 'a lot'"
        )
        assert case["order_id"] is None
        assert case["data"]["field"] == "line_items[2].price"
        assert case["data"]["shopify_order_id"] == "450789469"
        async with db.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Order)) == 0


# ---------------------------------------------------------------------------------------------
# The tasks themselves, called directly (no API, no workers running): at-least-once delivery.


async def timeline(db: Database) -> list[str]:
    async with db.sessionmaker() as session:
        return list(
            (
                await session.scalars(
                    select(OrderEvent.type).order_by(OrderEvent.created_at, OrderEvent.id)
                )
            ).all()
        )


async def count(db: Database, model: Any) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def ctx(settings: Settings, db: Database) -> TaskContext:
    return TaskContext(settings=settings, db=db, box=SecretBox("x"))


#: The timeline of an order made by ``webhook.process``: received and validated in one job
#: (no catalog here, so its SKUs are unknown).
PROCESSED = [
    "order.received",
    "validation.payment",
    "validation.address",
    "validation.catalog",
    "status.needs_attention",
]


class TestWorkerIdempotency:
    async def test_webhook_process_twice_makes_one_order_and_one_timeline(
        self, ctx: TaskContext, db: Database, merchant: MerchantHandle
    ) -> None:
        delivery = await store_delivery(db, merchant, order_payload())
        await process_delivery(ctx, delivery)
        await process_delivery(ctx, delivery)
        assert await count(db, Order) == 1
        assert await timeline(db) == PROCESSED
        assert await outcomes(db) == [f"order {await only_order(db)} created"]

    async def test_webhook_process_twice_at_once_makes_one_order(
        self, ctx: TaskContext, db: Database, merchant: MerchantHandle
    ) -> None:
        delivery = await store_delivery(db, merchant, order_payload())
        await asyncio.gather(process_delivery(ctx, delivery), process_delivery(ctx, delivery))
        assert await count(db, Order) == 1
        assert await timeline(db) == PROCESSED

    async def test_two_deliveries_of_one_order_at_once_make_one_order(
        self, ctx: TaskContext, db: Database, merchant: MerchantHandle
    ) -> None:
        first = await store_delivery(db, merchant, order_payload())
        second = await store_delivery(db, merchant, order_payload())
        await asyncio.gather(process_delivery(ctx, first), process_delivery(ctx, second))
        assert await count(db, Order) == 1
        assert await timeline(db) == PROCESSED
        order_id = await only_order(db)
        assert sorted(await outcomes(db)) == sorted(  # type: ignore[type-var]
            [f"order {order_id} created", f"order {order_id} exists: unchanged"]
        )

    async def test_order_validate_twice_records_validation_once(
        self, ctx: TaskContext, db: Database, merchant: MerchantHandle
    ) -> None:
        await add_catalog(db, merchant)
        await process_delivery(ctx, await store_delivery(db, merchant, order_payload()))
        order_id = str(await only_order(db))
        await validate_order(ctx, order_id)
        await validate_order(ctx, order_id)
        await asyncio.gather(validate_order(ctx, order_id), validate_order(ctx, order_id))
        assert await timeline(db) == [
            "order.received",
            "validation.payment",
            "validation.address",
            "validation.catalog",
            "status.ready_to_route",
        ]

    async def test_failed_validation_twice_opens_one_exception(
        self, ctx: TaskContext, db: Database, merchant: MerchantHandle
    ) -> None:
        await process_delivery(ctx, await store_delivery(db, merchant, without("zip")))
        order_id = str(await only_order(db))
        await asyncio.gather(validate_order(ctx, order_id), validate_order(ctx, order_id))
        await validate_order(ctx, order_id)
        assert await count(db, ExceptionCase) == 1
        assert (await timeline(db)).count("status.needs_attention") == 1

    async def test_validating_an_unknown_order_is_a_no_op(
        self, ctx: TaskContext, db: Database
    ) -> None:
        await validate_order(ctx, str(uuid.uuid4()))
        await process_delivery(ctx, str(uuid.uuid4()))
        assert await timeline(db) == []


async def only_order(db: Database) -> uuid.UUID:
    async with db.sessionmaker() as session:
        [order_id] = (await session.scalars(select(Order.id))).all()
    return order_id
