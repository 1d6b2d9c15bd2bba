"""A refund that succeeded in Stripe is recorded on the Shopify order once, without moving money
a second time: a refund transaction only against a manual gateway's payment, else only the
lines and shipping; an amount alone against a real gateway is left out (and said so); a lost
answer is looked up and adopted; userErrors go to the exceptions queue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.db import Database
from app.events.models import LifecycleEvent
from app.events.service import publish
from app.fulfillment.models import ShopifyRefund
from app.fulfillment.tasks import on_refund_succeeded, record_refund
from app.jobs.task import TaskContext
from app.merchants.models import Merchant
from app.merchants.service import set_shopify_token
from app.orders.models import Order, OrderLine
from app.security import SecretBox
from app.settings import DEFAULT_SHOPIFY_API_VERSION, Settings
from tests.conftest import MerchantHandle, make_merchant
from tests.support.order_flow import open_exceptions, order_id_of
from tests.support.routing import SHOP, send_order
from tests.support.shopify_admin import ShopifyAdminSim
from tests.support.wait import eventually

Client = AsyncTestClient[Litestar]
ADMIN_URL = "http://shopify.test/{shop}/admin/api/{version}"
ENDPOINT = f"http://shopify.test/{SHOP}/admin/api/{DEFAULT_SHOPIFY_API_VERSION}/graphql.json"
TOKEN = "shpat_0123456789abcdef0123456789abcdef"
ORDER = "gid://shopify/Order/450789469"
GREEN, RED = "gid://shopify/LineItem/466157049", "gid://shopify/LineItem/518995019"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"shopify_admin_url": ADMIN_URL})


@pytest.fixture
def shopify() -> Iterator[ShopifyAdminSim]:
    simulator = ShopifyAdminSim()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(ENDPOINT).mock(side_effect=simulator.handle)
        yield simulator


@pytest.fixture
def ctx(settings: Settings, db: Database) -> TaskContext:
    return TaskContext(settings=settings, db=db, box=SecretBox(settings.resolved_secret_key()))


@pytest.fixture
async def store(db: Database, settings: Settings) -> MerchantHandle:
    shop = await make_merchant(db, SHOP, auto_route=False)
    async with db.transaction() as session:
        merchant = await session.get(Merchant, shop.id)
        assert merchant is not None
        await set_shopify_token(session, SecretBox(settings.resolved_secret_key()), merchant, TOKEN)
    return shop


async def shopify_order(client: Client, db: Database, shopify: ShopifyAdminSim) -> Order:
    """The fixture order (3 lines of 199.00), taken in through its webhook, known to Shopify."""
    shopify.add_order(ORDER, {GREEN: 1, RED: 1, "gid://shopify/LineItem/703073504": 1})
    await send_order(client)
    order_id = await order_id_of(db)
    async with db.sessionmaker() as session:
        order = await session.get(Order, order_id)
    assert order is not None
    return order


async def line_ids(db: Database, order: Order) -> dict[str, str]:
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(OrderLine.shopify_line_id, OrderLine.id).where(OrderLine.order_id == order.id)
        )
    return {f"gid://shopify/LineItem/{sid}": str(lid) for sid, lid in rows.all()}


async def refund_succeeded(
    db: Database, order: Order, refund_id: uuid.UUID, amount: str, **data: Any
) -> None:
    """What the refunds domain publishes once Stripe says the refund succeeded."""
    async with db.transaction() as session:
        fresh = await session.get(Order, order.id)
        await publish(
            session,
            fresh,
            "refund.succeeded",
            key=f"refund.succeeded:{refund_id}",
            refund_id=str(refund_id),
            amount=amount,
            currency="USD",
            reason="damaged",
            origin="merchant",
            **{"lines": [], "shipping": False, **data},
        )


async def find(db: Database, refund_id: uuid.UUID) -> ShopifyRefund | None:
    async with db.sessionmaker() as session:
        row: ShopifyRefund | None = await session.scalar(
            select(ShopifyRefund).where(ShopifyRefund.refund_id == refund_id)
        )
    return row


async def settled(db: Database, refund_id: uuid.UUID, *states: str) -> ShopifyRefund:
    async def probe() -> ShopifyRefund | None:
        row = await find(db, refund_id)
        return row if row is not None and row.state in states else None

    return await eventually(probe, timeout=30)


async def timeline(client: Client, store: MerchantHandle, order: Order) -> list[tuple[str, str]]:
    r = await client.get(f"/api/v1/orders/{order.id}", headers=store.headers)
    assert r.status_code == 200, r.text
    return [
        (e["type"], e["message"])
        for e in r.json()["timeline"]
        if e["type"].startswith("shopify.refund")
    ]


class TestRefundRecord:
    async def test_a_manual_gateway_books_the_amount_against_its_payment_once(
        self,
        client: Client,
        db: Database,
        ctx: TaskContext,
        store: MerchantHandle,
        shopify: ShopifyAdminSim,
    ) -> None:
        order = await shopify_order(client, db, shopify)
        sale = shopify.pay(ORDER, "409.94", "Stripe (external)", manual=True)
        lines = await line_ids(db, order)
        refund_id = uuid.uuid4()
        await refund_succeeded(
            db,
            order,
            refund_id,
            "209.00",
            lines=[{"line_id": lines[GREEN], "quantity": 1}],
            shipping=True,
            stripe_refund_id="re_3MtwBwLkdIwHu7ix0Q8VxoKc",
        )
        row = await settled(db, refund_id, "created")
        [call] = shopify.of("RefundCreate")
        note = (
            f"dropship refund {refund_id}: 209.00 USD refunded through Stripe "
            "(Stripe re_3MtwBwLkdIwHu7ix0Q8VxoKc)"
        )
        assert call.variables == {
            "input": {
                "orderId": ORDER,
                "note": note,
                "notify": False,
                "refundLineItems": [
                    {"lineItemId": GREEN, "quantity": 1, "restockType": "NO_RESTOCK"}
                ],
                "shipping": {"fullRefund": True},
                "currency": "USD",
                "transactions": [
                    {
                        "orderId": ORDER,
                        "parentId": sale,
                        "kind": "REFUND",
                        "gateway": "Stripe (external)",
                        "amount": "209.00",
                    }
                ],
            }
        }
        [made] = shopify.refunds[ORDER]
        assert (row.shopify_refund_id, row.attempts) == (made["id"], 1)
        assert await timeline(client, store, order) == [
            (
                "shopify.refund_recorded",
                f"refund of 209.00 USD recorded in Shopify: {made['id']}",
            )
        ]
        # The event again, and the job again (at once and later): nothing more.
        async with db.transaction() as session:
            event_row = await session.scalar(select(func.count()).select_from(ShopifyRefund))
        assert event_row == 1
        await asyncio.gather(*(record_refund(ctx, str(row.id)) for _ in range(3)))
        assert shopify.operations().count("RefundCreate") == 1
        assert len(shopify.refunds[ORDER]) == 1

    async def test_another_gateway_gets_lines_only_and_an_amount_alone_is_left_to_stripe(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        shopify: ShopifyAdminSim,
    ) -> None:
        order = await shopify_order(client, db, shopify)
        shopify.pay(ORDER, "409.94", "stripe", manual=False)
        lines = await line_ids(db, order)
        with_lines = uuid.uuid4()
        await refund_succeeded(
            db, order, with_lines, "398.00", lines=[{"line_id": lines[RED], "quantity": 1}]
        )
        await settled(db, with_lines, "created")
        [call] = shopify.of("RefundCreate")
        # No transaction: Shopify would refund it through its gateway a second time.
        assert "transactions" not in call.variables["input"]
        assert call.variables["input"]["refundLineItems"] == [
            {"lineItemId": RED, "quantity": 1, "restockType": "NO_RESTOCK"}
        ]

        amount_only = uuid.uuid4()
        await refund_succeeded(db, order, amount_only, "10.00")
        skipped = await settled(db, amount_only, "skipped")
        assert shopify.operations().count("RefundCreate") == 1
        assert skipped.last_error == (
            "refund not recorded in Shopify: an amount alone paid through a gateway Shopify "
            "refunds itself cannot be booked without moving money again"
        )
        assert ("shopify.refund_skipped", skipped.last_error) in await timeline(
            client, store, order
        )

    async def test_a_lost_answer_is_looked_up_and_adopted_not_recorded_again(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        shopify: ShopifyAdminSim,
    ) -> None:
        order = await shopify_order(client, db, shopify)
        shopify.pay(ORDER, "409.94", "manual", manual=True)

        def lose_the_answer() -> None:
            raise httpx.ReadTimeout("the answer never came")

        shopify.after["RefundCreate"] = lose_the_answer
        refund_id = uuid.uuid4()
        await refund_succeeded(db, order, refund_id, "50.00")
        row = await settled(db, refund_id, "created")
        assert shopify.operations() == ["OrderRefunds", "RefundCreate", "OrderRefunds"]
        [made] = shopify.refunds[ORDER]
        assert (row.shopify_refund_id, row.attempts) == (made["id"], 2)
        assert await timeline(client, store, order) == [
            (
                "shopify.refund_recorded",
                f"refund of 50.00 USD recorded in Shopify: {made['id']} "
                "(found after an interrupted attempt)",
            )
        ]

    async def test_a_refusal_goes_to_the_exceptions_queue(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        shopify: ShopifyAdminSim,
    ) -> None:
        order = await shopify_order(client, db, shopify)
        lines = await line_ids(db, order)
        refund_id = uuid.uuid4()
        await refund_succeeded(
            db, order, refund_id, "398.00", lines=[{"line_id": lines[GREEN], "quantity": 2}]
        )
        row = await settled(db, refund_id, "failed")
        reason = (
            "Shopify refused RefundCreate: input.refundLineItems: "
            "Quantity cannot refund more items than were purchased"
        )
        assert row.last_error == f"refund not recorded in Shopify: {reason}"
        [case] = [
            e for e in await open_exceptions(client, store) if e["kind"] == "shopify_refund_failed"
        ]
        assert (case["reason"], case["order_id"]) == (reason, str(order.id))
        assert shopify.refunds[ORDER] == []

    async def test_manual_orders_and_a_switched_off_record_write_nothing(
        self,
        client: Client,
        db: Database,
        ctx: TaskContext,
        store: MerchantHandle,
        shopify: ShopifyAdminSim,
    ) -> None:
        order = await shopify_order(client, db, shopify)
        async with db.transaction() as session:
            merchant = await session.get(Merchant, store.id)
            assert merchant is not None
            merchant.settings = {**merchant.settings, "shopify": {"record_refunds": False}}
        refund_id = uuid.uuid4()
        await refund_succeeded(db, order, refund_id, "5.00")
        # The subscriber itself, run here: it writes no row.
        async with db.transaction() as session:
            event = await session.scalar(
                select(LifecycleEvent).where(LifecycleEvent.key == f"refund.succeeded:{refund_id}")
            )
            assert event is not None
            await on_refund_succeeded(ctx, session, event)
        assert await find(db, refund_id) is None
        assert shopify.calls == []
