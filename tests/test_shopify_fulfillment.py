"""Shipments become Shopify fulfillments, once: the Admin API client (shopifyapp's helper behind
our URL rewrite, throttling, the cost budget, refusals) and the sync (one fulfillmentCreate per
shipment with the right fulfillment order lines and tracking, also when the task runs twice,
after a lost answer and after a crash between the call and our commit; partial shipments;
userErrors; THROTTLED; a refused token stops the shop)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis as redis_lib
import respx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from app.db import Database, utcnow
from app.events.models import EventType, LifecycleEvent
from app.events.service import publish
from app.fulfillment import service as fulfillment_service
from app.fulfillment.models import ShopifyFulfillment, ShopifyFulfillmentEvent
from app.fulfillment.service import Shop, adoptable, plan
from app.fulfillment.tasks import admin, create_fulfillment, shipment_shipped
from app.jobs.task import TaskContext
from app.merchants.models import Merchant
from app.merchants.service import set_shopify_token
from app.orders.models import Order
from app.purchasing.models import Shipment
from app.security import SecretBox
from app.settings import DEFAULT_SHOPIFY_API_VERSION, Settings
from connectors.base import PermanentConnectorError, RetryableConnectorError
from connectors.shopify_admin import (
    RECENT_CALLS,
    Bucket,
    BudgetExceeded,
    FulfillmentOrder,
    FulfillmentOrderLine,
    MemoryCostStore,
    RedisCostStore,
    ShopifyAdmin,
    ShopifyAuthError,
    UserErrors,
    admin_http_client,
)
from tests.conftest import MerchantHandle, make_merchant
from tests.support.order_flow import FIXTURE_SKUS, open_exceptions
from tests.support.portal import offer, portal_supplier
from tests.support.routing import send_order, wait_pos
from tests.support.services import free_port
from tests.support.shopify import order_payload
from tests.support.shopify_admin import Fo, ShopifyAdminSim, throttled, unauthorized
from tests.support.wait import eventually
from workers.broker import RUNTIME
from workers.maintenance import sweep

VERSION = "2025-10"
SHOP = "acme-store.myshopify.com"
ADMIN_URL = "http://shopify.test/{shop}/admin/api/{version}"
ENDPOINT = f"http://shopify.test/{SHOP}/admin/api/{VERSION}/graphql.json"
TOKEN = "shpat_0123456789abcdef0123456789abcdef"
ORDER = "gid://shopify/Order/450789469"
GREEN, RED = "gid://shopify/LineItem/466157049", "gid://shopify/LineItem/518995019"


@pytest.fixture
def sim() -> Iterator[ShopifyAdminSim]:
    simulator = ShopifyAdminSim()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(ENDPOINT).mock(side_effect=simulator.handle)
        yield simulator


@pytest.fixture
async def api() -> ShopifyAdmin:
    return ShopifyAdmin(admin_http_client(ADMIN_URL), SHOP, TOKEN, VERSION, MemoryCostStore())


class TestAdminClient:
    async def test_calls_go_to_the_configured_url_with_the_token(
        self, sim: ShopifyAdminSim, api: ShopifyAdmin
    ) -> None:
        [fo] = sim.add_order(ORDER, {GREEN: 2, RED: 1})
        [got] = await api.fulfillment_orders(ORDER)
        assert (got.id, got.status, got.location_id) == (fo.id, "OPEN", fo.location)
        assert [(ln.line_item_id, ln.remaining) for ln in got.lines] == [(GREEN, 2), (RED, 1)]
        [call] = sim.calls
        assert (call.url, call.token, call.operation) == (ENDPOINT, TOKEN, "OrderFulfillmentOrders")
        assert call.variables == {"id": ORDER, "after": None}
        # A compact record of the call, for `dropship demo`.
        assert api.calls[-1] == RECENT_CALLS[-1]
        assert (api.calls[-1].operation, api.calls[-1].status, api.calls[-1].actual_cost) == (
            "OrderFulfillmentOrders",
            200,
            10,
        )

    async def test_throttled_is_retryable_after_what_the_bucket_needs(
        self, sim: ShopifyAdminSim, api: ShopifyAdmin
    ) -> None:
        sim.add_order(ORDER, {GREEN: 1})
        sim.overrides["OrderFulfillmentOrders"] = [lambda: throttled(530, 66, 50)]
        with pytest.raises(RetryableConnectorError) as caught:
            await api.fulfillment_orders(ORDER)
        # (530 requested - 66 available) / 50 restored a second, rounded up.
        assert caught.value.retry_after == 10
        assert caught.value.message == "Shopify throttled OrderFulfillmentOrders"
        # The bucket is remembered: the next call is held back without being sent.
        with pytest.raises(BudgetExceeded) as held:
            await api.fulfillment_orders(ORDER)
        assert held.value.retry_after == 10
        assert sim.operations() == ["OrderFulfillmentOrders"]

    async def test_a_refused_token_is_an_auth_error(
        self, sim: ShopifyAdminSim, api: ShopifyAdmin
    ) -> None:
        sim.overrides["OrderFulfillments"] = [unauthorized]
        with pytest.raises(ShopifyAuthError) as caught:
            await api.order_fulfillments(ORDER)
        assert (caught.value.status, caught.value.message) == (
            401,
            f"Shopify refused the access token ({SHOP})",
        )

    async def test_a_missing_scope_is_permanent_and_says_which(
        self, sim: ShopifyAdminSim, api: ShopifyAdmin
    ) -> None:
        sim.overrides["OrderFulfillmentOrders"] = [lambda: httpx.Response(403, text="Forbidden")]
        with pytest.raises(PermanentConnectorError) as caught:
            await api.fulfillment_orders(ORDER)
        assert not isinstance(caught.value, ShopifyAuthError)
        assert caught.value.message == (
            "Shopify refused OrderFulfillmentOrders (HTTP 403): the access token lacks a scope "
            "(fulfillments need write_merchant_managed_fulfillment_orders, or "
            "write_assigned/third_party_fulfillment_orders)"
        )

    async def test_server_errors_and_network_errors_are_retryable(
        self, sim: ShopifyAdminSim, api: ShopifyAdmin
    ) -> None:
        def fail() -> httpx.Response:
            return httpx.Response(503, text="unavailable")

        def drop() -> httpx.Response:
            raise httpx.ConnectError("connection refused")

        sim.overrides["OrderFulfillments"] = [fail, fail, drop]
        with pytest.raises(RetryableConnectorError) as caught:
            await api.order_fulfillments(ORDER)
        assert caught.value.message == "Shopify answered HTTP 503 to OrderFulfillments"
        assert len(sim.calls) == 2  # the helper's own retry, once
        with pytest.raises(RetryableConnectorError) as dropped:
            await api.order_fulfillments(ORDER)
        assert dropped.value.message == "network error calling Shopify (OrderFulfillments)"

    async def test_other_graphql_errors_are_permanent(
        self, sim: ShopifyAdminSim, api: ShopifyAdmin
    ) -> None:
        sim.overrides["OrderFulfillments"] = [
            lambda: httpx.Response(
                200, json={"errors": [{"message": "Access denied for fulfillments field."}]}
            )
        ]
        with pytest.raises(PermanentConnectorError) as caught:
            await api.order_fulfillments(ORDER)
        assert not isinstance(caught.value, RetryableConnectorError)
        assert caught.value.message == (
            "Shopify refused OrderFulfillments: Access denied for fulfillments field."
        )

    async def test_user_errors_in_a_200_are_refusals(
        self, sim: ShopifyAdminSim, api: ShopifyAdmin
    ) -> None:
        [fo] = sim.add_order(ORDER, {GREEN: 1})
        body = {
            "notifyCustomer": False,
            "lineItemsByFulfillmentOrder": [
                {
                    "fulfillmentOrderId": fo.id,
                    "fulfillmentOrderLineItems": [{"id": fo.lines[0].id, "quantity": 2}],
                }
            ],
        }
        with pytest.raises(UserErrors) as caught:
            await api.create_fulfillment(body)
        assert caught.value.message == (
            "Shopify refused FulfillmentCreate: fulfillment: "
            "Invalid fulfillment order line item quantity requested."
        )
        assert sim.fulfillments[ORDER] == []

    async def test_an_unreachable_cost_store_fails_no_call(self, sim: ShopifyAdminSim) -> None:
        """The shared cost bucket is advice: with its Redis gone, the fulfillment Shopify made
        comes back as made (not as an error, which left it unrecorded until its claim ran out),
        and the failed reads and writes of the bucket are counted."""
        gone = redis_lib.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
        costs = RedisCostStore(gone)
        api = ShopifyAdmin(admin_http_client(ADMIN_URL), SHOP, TOKEN, VERSION, costs)
        [fo] = sim.add_order(ORDER, {GREEN: 1})
        body = {
            "notifyCustomer": False,
            "lineItemsByFulfillmentOrder": [
                {
                    "fulfillmentOrderId": fo.id,
                    "fulfillmentOrderLineItems": [{"id": fo.lines[0].id, "quantity": 1}],
                }
            ],
        }

        def errors(op: str) -> float:
            name = "dropship_shopify_cost_store_errors_total"
            return REGISTRY.get_sample_value(name, {"op": op}) or 0.0

        before = errors("get"), errors("put")
        created = await api.create_fulfillment(body)
        assert [f["id"] for f in sim.fulfillments[ORDER]] == [created["id"]]
        assert (errors("get") - before[0], errors("put") - before[1]) == (1.0, 1.0)


# --- The sync, end to end: Shopify order -> portal supplier -> shipment -> fulfillment ---------

Client = AsyncTestClient[Litestar]
STORE = "route-shop.myshopify.com"
STORE_ENDPOINT = f"http://shopify.test/{STORE}/admin/api/{DEFAULT_SHOPIFY_API_VERSION}/graphql.json"
NEW_TOKEN = "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"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Every Admin call of the app goes to the simulated Shopify (the URL rewrite in use)."""
    return settings.model_copy(update={"shopify_admin_url": ADMIN_URL})


@pytest.fixture
def shopify() -> Iterator[ShopifyAdminSim]:
    simulator = ShopifyAdminSim()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(STORE_ENDPOINT).mock(side_effect=simulator.handle)
        yield simulator


@pytest.fixture
def ctx(settings: Settings, db: Database) -> TaskContext:
    """A worker's context, for running a task here and now (as a duplicate delivery would)."""
    return TaskContext(settings=settings, db=db, box=SecretBox(settings.resolved_secret_key()))


async def set_token(db: Database, settings: Settings, shop: MerchantHandle, token: str) -> None:
    async with db.transaction() as session:
        merchant = await session.get(Merchant, shop.id)
        assert merchant is not None
        await set_shopify_token(session, SecretBox(settings.resolved_secret_key()), merchant, token)


@pytest.fixture
async def store(db: Database, settings: Settings) -> MerchantHandle:
    shop = await make_merchant(db, STORE, auto_route=True)
    await set_token(db, settings, shop, TOKEN)
    return shop


@pytest.fixture
async def supplier(client: Client, store: MerchantHandle) -> dict[str, Any]:
    s = await portal_supplier(client, store, "Alpha")
    for sku in FIXTURE_SKUS:
        await offer(client, store, s["supplier"]["id"], sku, stock=10)
    return s


async def placed_order(
    client: Client, store: MerchantHandle, shopify: ShopifyAdminSim, **quantities: int
) -> tuple[dict[str, Any], list[Fo]]:
    """The fixture order with these SKUs and quantities, known to Shopify (its fulfillment
    orders) and placed with the portal supplier: its purchase order."""
    items = []
    lines = {}
    for item in order_payload()["line_items"]:
        if item["sku"] in quantities:
            items.append({**item, "quantity": quantities[item["sku"]]})
            lines[f"gid://shopify/LineItem/{item['id']}"] = quantities[item["sku"]]
    fos = shopify.add_order(ORDER, lines)
    await send_order(client, line_items=items)
    [po] = await wait_pos(client, store, lambda p: len(p) == 1 and p[0]["status"] == "placed")
    return po, fos


async def ship(
    client: Client,
    db: Database,
    supplier: dict[str, Any],
    po: dict[str, Any],
    tracking: str,
    **lines: int,
) -> uuid.UUID:
    r = await client.post(
        f"/supplier/v1/orders/{po['id']}/shipments",
        json={
            "carrier": "UPS",
            "tracking_number": tracking,
            "tracking_url": f"https://www.ups.com/track?tracknum={tracking}",
            "lines": [{"sku": f"{sku}-S", "quantity": q} for sku, q in lines.items()],
        },
        headers={"Authorization": f"Bearer {supplier['api_key']}"},
    )
    assert r.status_code == 201, r.text
    return uuid.UUID(r.json()["id"])


async def announce(db: Database, shipment_id: uuid.UUID) -> None:
    """The ``shipment.shipped`` subscriber again (a repeated delivery of its job)."""
    async with db.transaction() as session:
        await shipment_shipped(session, shipment_id)


async def find_row(db: Database, shipment_id: uuid.UUID) -> ShopifyFulfillment | None:
    """The shipment's sync row (written by the ``shipment.shipped`` subscriber's job)."""
    async with db.sessionmaker() as session:
        found: ShopifyFulfillment | None = await session.scalar(
            select(ShopifyFulfillment).where(ShopifyFulfillment.shipment_id == shipment_id)
        )
    return found


async def row(db: Database, shipment_id: uuid.UUID) -> ShopifyFulfillment:
    found = await find_row(db, shipment_id)
    assert found is not None
    return found


async def settled(db: Database, shipment_id: uuid.UUID, *states: str) -> ShopifyFulfillment:
    async def probe() -> ShopifyFulfillment | None:
        found = await find_row(db, shipment_id)
        return found if found is not None and found.state in states else None

    return await eventually(probe, timeout=30)


def expected_create(fo: Fo, tracking: str, *lines: tuple[int, int], notify: bool = False) -> Any:
    """The fulfillmentCreate variables for ``lines`` ((index of the FO line, quantity))."""
    return {
        "fulfillment": {
            "notifyCustomer": notify,
            "lineItemsByFulfillmentOrder": [
                {
                    "fulfillmentOrderId": fo.id,
                    "fulfillmentOrderLineItems": [
                        {"id": fo.lines[i].id, "quantity": q} for i, q in lines
                    ],
                }
            ],
            "trackingInfo": {
                "company": "UPS",
                "number": tracking,
                "url": f"https://www.ups.com/track?tracknum={tracking}",
            },
        }
    }


async def timeline(client: Client, store: MerchantHandle, order_id: str) -> list[tuple[str, str]]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=store.headers)
    assert r.status_code == 200, r.text
    return [
        (e["type"], e["message"]) for e in r.json()["timeline"] if e["type"].startswith("shopify.")
    ]


class TestFulfillmentSync:
    async def test_one_shipment_one_fulfillment_also_when_the_task_runs_again(
        self,
        client: Client,
        db: Database,
        ctx: TaskContext,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, [fo] = await placed_order(client, store, shopify, IPOD2008GREEN=1, IPOD2008RED=1)
        shipment = await ship(client, db, supplier, po, "1Z999AA10123456784")
        done = await settled(db, shipment, "created")
        [create] = shopify.of("FulfillmentCreate")
        assert create.variables == expected_create(fo, "1Z999AA10123456784", (0, 1), (1, 1))
        assert create.token == TOKEN
        [made] = shopify.fulfillments[ORDER]
        assert (done.shopify_fulfillment_id, done.fulfillment_ids, done.attempts) == (
            made["id"],
            [made["id"]],
            1,
        )
        assert [ln.remaining for ln in fo.lines] == [0, 0]
        assert await timeline(client, store, po["order_id"]) == [
            ("shopify.fulfilled", f"fulfilled in Shopify: {made['id']}")
        ]

        # Duplicate deliveries of the job (at once, and later) call nothing.
        calls = len(shopify.calls)
        await asyncio.gather(*(create_fulfillment(ctx, str(shipment)) for _ in range(3)))
        await announce(db, shipment)  # the event again: the row exists, no job
        await create_fulfillment(ctx, str(shipment))
        assert len(shopify.calls) == calls
        assert shopify.operations() == ["OrderFulfillmentOrders", "FulfillmentCreate"]

    async def test_a_partial_shipment_fulfils_only_its_lines_and_quantities(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, [fo] = await placed_order(client, store, shopify, IPOD2008GREEN=3, IPOD2008RED=1)
        first = await ship(client, db, supplier, po, "1ZPART1", IPOD2008GREEN=2)
        await settled(db, first, "created")
        [create] = shopify.of("FulfillmentCreate")
        assert create.variables == expected_create(fo, "1ZPART1", (0, 2))
        assert [ln.remaining for ln in fo.lines] == [1, 1]

        second = await ship(client, db, supplier, po, "1ZPART2")  # everything still owed
        await settled(db, second, "created")
        assert shopify.of("FulfillmentCreate")[1].variables == expected_create(
            fo, "1ZPART2", (0, 1), (1, 1)
        )
        assert [ln.remaining for ln in fo.lines] == [0, 0]
        assert len(shopify.fulfillments[ORDER]) == 2

    async def test_a_lost_answer_is_looked_up_and_adopted_not_created_again(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, _ = await placed_order(client, store, shopify, IPOD2008GREEN=1)

        def lose_the_answer() -> None:
            raise httpx.ReadTimeout("the answer never came")

        shopify.after["FulfillmentCreate"] = lose_the_answer
        shipment = await ship(client, db, supplier, po, "1ZLOST")
        done = await settled(db, shipment, "created")
        # Shopify created it; the retry looked, found it by its tracking number, kept it.
        assert shopify.operations() == [
            "OrderFulfillmentOrders",
            "FulfillmentCreate",
            "OrderFulfillments",
        ]
        [made] = shopify.fulfillments[ORDER]
        assert (done.shopify_fulfillment_id, done.attempts) == (made["id"], 2)
        assert await timeline(client, store, po["order_id"]) == [
            (
                "shopify.fulfilled",
                f"fulfilled in Shopify: {made['id']} (found after an interrupted attempt)",
            )
        ]

    async def test_a_crash_between_the_call_and_our_commit_creates_no_second_fulfillment(
        self,
        client: Client,
        db: Database,
        ctx: TaskContext,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        po, [fo] = await placed_order(client, store, shopify, IPOD2008GREEN=1, IPOD2008RED=1)
        real = fulfillment_service.mark_created
        crashed = asyncio.Event()

        async def crash_before_commit(*args: Any, **kwargs: Any) -> None:
            await real(*args, **kwargs)  # written, then the worker dies: nothing commits
            if not crashed.is_set():
                crashed.set()
                raise SystemError("worker died before the commit")

        monkeypatch.setattr(fulfillment_service, "mark_created", crash_before_commit)
        shipment = await ship(client, db, supplier, po, "1ZCRASH")
        await asyncio.wait_for(crashed.wait(), 30)
        await asyncio.sleep(0.5)  # the job's own retries find the row claimed: they leave it
        stuck = await row(db, shipment)
        assert (stuck.state, stuck.shopify_fulfillment_id) == ("creating", None)
        assert len(shopify.fulfillments[ORDER]) == 1

        # The claim's lease runs out; the sweeper sends the shipment again.
        async with db.transaction() as session:
            await session.execute(
                update(ShopifyFulfillment)
                .where(ShopifyFulfillment.shipment_id == shipment)
                .values(claimed_at=utcnow() - timedelta(hours=1))
            )
        await sweep(ctx, 0)
        done = await settled(db, shipment, "created")
        [made] = shopify.fulfillments[ORDER]
        assert done.shopify_fulfillment_id == made["id"]
        assert shopify.operations() == [
            "OrderFulfillmentOrders",
            "FulfillmentCreate",
            "OrderFulfillments",
        ]
        assert [ln.remaining for ln in fo.lines] == [0, 0]

    async def test_user_errors_go_to_the_timeline_and_the_exceptions_queue(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, _ = await placed_order(client, store, shopify, IPOD2008GREEN=1)
        refusal = {
            "data": {
                "fulfillmentCreate": {
                    "fulfillment": None,
                    "userErrors": [
                        {
                            "field": ["fulfillment", "lineItemsByFulfillmentOrder"],
                            "message": "Fulfillment order is on hold.",
                        }
                    ],
                }
            }
        }
        shopify.overrides["FulfillmentCreate"] = [lambda: httpx.Response(200, json=refusal)]
        shipment = await ship(client, db, supplier, po, "1ZREFUSED")
        failed = await settled(db, shipment, "failed")
        reason = (
            "Shopify refused FulfillmentCreate: "
            "fulfillment.lineItemsByFulfillmentOrder: Fulfillment order is on hold."
        )
        assert (failed.last_error, failed.attempts) == (reason, 1)
        assert await timeline(client, store, po["order_id"]) == [
            ("shopify.fulfillment_failed", reason)
        ]
        [case] = await open_exceptions(client, store)
        assert (case["kind"], case["reason"], case["order_id"], case["data"]) == (
            "shopify_fulfillment_failed",
            reason,
            po["order_id"],
            {"shipment_id": str(shipment)},
        )
        assert shopify.operations() == ["OrderFulfillmentOrders", "FulfillmentCreate"]

    async def test_a_fulfillment_order_on_hold_is_an_exception_not_a_partial_fulfillment(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, [fo] = await placed_order(client, store, shopify, IPOD2008GREEN=1)
        fo.status, fo.actions = "ON_HOLD", ("RELEASE_HOLD",)
        shipment = await ship(client, db, supplier, po, "1ZHOLD")
        failed = await settled(db, shipment, "failed")
        reason = (
            f"Shopify has no open fulfillment order line for 1 x {GREEN} "
            f"({fo.id} is ON_HOLD/UNSUBMITTED)"
        )
        assert failed.last_error == reason
        [case] = await open_exceptions(client, store)
        assert (case["kind"], case["reason"]) == ("shopify_fulfillment_failed", reason)
        assert shopify.operations() == ["OrderFulfillmentOrders"]

    async def test_throttled_is_retried_later_and_creates_once(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, [fo] = await placed_order(client, store, shopify, IPOD2008GREEN=1)
        shopify.overrides["OrderFulfillmentOrders"] = [lambda: throttled(530, 500, 50)]
        shipment = await ship(client, db, supplier, po, "1ZSLOW")
        done = await settled(db, shipment, "created")
        assert shopify.operations() == [
            "OrderFulfillmentOrders",
            "OrderFulfillmentOrders",
            "FulfillmentCreate",
        ]
        assert done.attempts == 2
        assert shopify.of("FulfillmentCreate")[0].variables == expected_create(fo, "1ZSLOW", (0, 1))

    async def test_a_refused_token_stops_the_shop_until_a_new_one_is_given(
        self,
        client: Client,
        db: Database,
        ctx: TaskContext,
        settings: Settings,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, [fo] = await placed_order(client, store, shopify, IPOD2008GREEN=1, IPOD2008RED=1)
        shopify.overrides["OrderFulfillmentOrders"] = [unauthorized]
        first = await ship(client, db, supplier, po, "1ZAUTH1", IPOD2008GREEN=1)

        async def stopped() -> ShopifyFulfillment | None:
            found = await find_row(db, first)
            return found if found is not None and found.last_error else None

        waiting = await eventually(stopped)
        reason = f"Shopify refused the access token ({STORE})"
        assert (waiting.state, waiting.attempts, waiting.last_error) == (
            "pending",
            0,
            f"Shopify sync stopped: {reason}",
        )
        told = (
            f"Shopify sync stopped: {reason}. Give the store a new access token "
            "(PUT /api/v1/settings/shopify-token); waiting shipments are sent then."
        )
        assert await timeline(client, store, po["order_id"]) == [("shopify.sync_stopped", told)]
        [case] = await open_exceptions(client, store)
        assert (case["kind"], case["reason"]) == ("shopify_sync_stopped", told)

        # The next shipment of the shop waits without calling; nothing is retried meanwhile.
        second = await ship(client, db, supplier, po, "1ZAUTH2", IPOD2008RED=1)
        await eventually(lambda: _has_error(db, second))
        assert shopify.operations() == ["OrderFulfillmentOrders"]
        await sweep(ctx, 0)
        await create_fulfillment(ctx, str(first))
        assert shopify.operations() == ["OrderFulfillmentOrders"]
        assert len(await open_exceptions(client, store)) == 1

        # A new token resumes the sync: both shipments go, with it.
        await set_token(db, settings, store, NEW_TOKEN)
        await sweep(ctx, 0)
        await settled(db, first, "created")
        await settled(db, second, "created")
        creates = shopify.of("FulfillmentCreate")
        assert {c.token for c in creates} == {NEW_TOKEN}
        assert sorted(c.variables["fulfillment"]["trackingInfo"]["number"] for c in creates) == [
            "1ZAUTH1",
            "1ZAUTH2",
        ]
        assert [ln.remaining for ln in fo.lines] == [0, 0]

    async def test_the_merchants_settings_turn_sync_off_and_shopifys_email_on(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, [fo] = await placed_order(client, store, shopify, IPOD2008GREEN=1, IPOD2008RED=1)
        await set_shopify_settings(db, store, {"sync_fulfillments": False})
        off = await ship(client, db, supplier, po, "1ZOFF", IPOD2008GREEN=1)
        skipped = await settled(db, off, "skipped")
        assert skipped.last_error == "Shopify fulfillment sync is off for this store"
        assert shopify.calls == []

        await set_shopify_settings(db, store, {"notify_customer": True})
        on = await ship(client, db, supplier, po, "1ZON", IPOD2008RED=1)
        await settled(db, on, "created")
        [create] = shopify.of("FulfillmentCreate")
        assert create.variables == expected_create(fo, "1ZON", (1, 1), notify=True)
        assert await timeline(client, store, po["order_id"]) == [
            ("shopify.fulfillment_skipped", "Shopify fulfillment sync is off for this store"),
            ("shopify.fulfilled", f"fulfilled in Shopify: {shopify.fulfillments[ORDER][0]['id']}"),
        ]

    async def test_a_store_without_a_token_is_skipped_with_a_note_and_no_call(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, _ = await placed_order(client, store, shopify, IPOD2008GREEN=1)
        async with db.transaction() as session:
            merchant = await session.get(Merchant, store.id)
            assert merchant is not None
            await set_shopify_token(session, SecretBox("unused"), merchant, None)
        shipment = await ship(client, db, supplier, po, "1ZNOTOKEN")
        skipped = await settled(db, shipment, "skipped")
        assert skipped.last_error == "not sent to Shopify: no Shopify access token"
        assert await timeline(client, store, po["order_id"]) == [
            ("shopify.fulfillment_skipped", "not sent to Shopify: no Shopify access token")
        ]
        assert shopify.calls == []
        assert await open_exceptions(client, store) == []


async def _has_error(db: Database, shipment_id: uuid.UUID) -> bool:
    found = await find_row(db, shipment_id)
    return found is not None and bool(found.last_error)


async def set_shopify_settings(db: Database, shop: MerchantHandle, section: dict[str, Any]) -> None:
    async with db.transaction() as session:
        merchant = await session.get(Merchant, shop.id)
        assert merchant is not None
        merchant.settings = {**merchant.settings, "shopify": section}


async def report(
    client: Client,
    db: Database,
    supplier: dict[str, Any],
    shipment: uuid.UUID,
    status: str,
    at: str,
) -> None:
    """A carrier status from the supplier (published as ``shipment.<status>``)."""
    r = await client.post(
        f"/supplier/v1/shipments/{shipment}/events",
        json={"status": status, "occurred_at": at},
        headers={"Authorization": f"Bearer {supplier['api_key']}"},
    )
    assert r.status_code in (200, 201), r.text


async def pushed(db: Database, shipment: uuid.UUID) -> dict[str, str]:
    async with db.sessionmaker() as session:
        rows = await session.scalars(
            select(ShopifyFulfillmentEvent).where(ShopifyFulfillmentEvent.shipment_id == shipment)
        )
        return {e.status: e.state for e in rows}


class TestTrackingInShopify:
    async def test_each_status_becomes_one_fulfillment_event(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, _ = await placed_order(client, store, shopify, IPOD2008GREEN=1)
        shipment = await ship(client, db, supplier, po, "1ZEVENTS")
        done = await settled(db, shipment, "created")
        await report(client, db, supplier, shipment, "in_transit", "2026-11-27T08:00:00+00:00")
        await report(client, db, supplier, shipment, "in_transit", "2026-11-27T18:00:00+00:00")
        await report(client, db, supplier, shipment, "delivered", "2026-11-28T10:30:00+00:00")
        await eventually(
            lambda: _equals(pushed(db, shipment), {"in_transit": "created", "delivered": "created"})
        )
        fid = done.shopify_fulfillment_id
        # One job per status: two of them may reach Shopify in either order (each carries its
        # own happenedAt, by which Shopify orders them).
        events = sorted(shopify.events, key=lambda e: str(e["happenedAt"]))
        assert [{k: v for k, v in e.items() if k != "id"} for e in events] == [
            {
                "fulfillmentId": fid,
                "status": "IN_TRANSIT",
                "happenedAt": "2026-11-27T08:00:00+00:00",
            },
            {
                "fulfillmentId": fid,
                "status": "DELIVERED",
                "happenedAt": "2026-11-28T10:30:00+00:00",
            },
        ]
        assert (await row(db, shipment)).last_event_status == "delivered"

    async def test_a_status_before_the_fulfillment_waits_for_it_and_returned_is_a_failure(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, _ = await placed_order(client, store, shopify, IPOD2008GREEN=1)
        # Throttled first: the fulfillment comes a second or two later than the event.
        shopify.overrides["OrderFulfillmentOrders"] = [lambda: throttled(530, 500, 50)]
        shipment = await ship(client, db, supplier, po, "1ZEARLY")
        await report(client, db, supplier, shipment, "returned", "2026-11-29T09:00:00+00:00")
        await eventually(lambda: _equals(pushed(db, shipment), {"returned": "pending"}))
        early = await find_row(db, shipment)
        assert early is None or early.state != "created"
        done = await settled(db, shipment, "created")
        await eventually(lambda: _equals(pushed(db, shipment), {"returned": "created"}))
        [event] = shopify.events
        assert {k: v for k, v in event.items() if k != "id"} == {
            "fulfillmentId": done.shopify_fulfillment_id,
            "status": "FAILURE",
            "happenedAt": "2026-11-29T09:00:00+00:00",
            "message": "Returned to sender",
        }

    async def test_a_supplier_correcting_the_link_updates_the_fulfillment_once(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, _ = await placed_order(client, store, shopify, IPOD2008GREEN=1)
        shipment = await ship(client, db, supplier, po, "1ZFIX")
        done = await settled(db, shipment, "created")
        corrected = "https://www.ups.com/track?loc=en_US&tracknum=1ZFIX"
        for _ in range(2):  # the same correction twice: one update
            r = await client.post(
                f"/supplier/v1/orders/{po['id']}/shipments",
                json={"carrier": "UPS", "tracking_number": "1ZFIX", "tracking_url": corrected},
                headers={"Authorization": f"Bearer {supplier['api_key']}"},
            )
            assert r.status_code in (200, 201), r.text
            assert r.json()["tracking_url"] == corrected
        await eventually(lambda: _some(shopify.of("FulfillmentTrackingInfoUpdate")))
        async with db.sessionmaker() as session:
            published = (
                await session.scalars(
                    select(LifecycleEvent.key).where(
                        LifecycleEvent.type == EventType.SHIPMENT_TRACKING_UPDATED
                    )
                )
            ).all()
        assert len(published) == 1
        [call] = shopify.of("FulfillmentTrackingInfoUpdate")
        assert call.variables["fulfillmentId"] == done.shopify_fulfillment_id
        assert call.variables["trackingInfoInput"] == {
            "company": "UPS",
            "number": "1ZFIX",
            "url": corrected,
        }

    async def test_a_changed_tracking_number_updates_the_fulfillment(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, _ = await placed_order(client, store, shopify, IPOD2008GREEN=1)
        shipment = await ship(client, db, supplier, po, "1ZOLD")
        done = await settled(db, shipment, "created")
        async with db.transaction() as session:
            await session.execute(
                update(Shipment)
                .where(Shipment.id == shipment)
                .values(
                    tracking_number="1ZNEW", tracking_url="https://www.ups.com/track?tracknum=1ZNEW"
                )
            )
            order = await session.get(Order, uuid.UUID(po["order_id"]))
            await publish(
                session,
                order,
                EventType.SHIPMENT_TRACKING_UPDATED,
                key=f"shipment.tracking_updated:{shipment}:1ZNEW",
                shipment_id=str(shipment),
            )
        await eventually(lambda: _some(shopify.of("FulfillmentTrackingInfoUpdate")))
        [call] = shopify.of("FulfillmentTrackingInfoUpdate")
        assert call.variables == {
            "fulfillmentId": done.shopify_fulfillment_id,
            "trackingInfoInput": {
                "company": "UPS",
                "number": "1ZNEW",
                "url": "https://www.ups.com/track?tracknum=1ZNEW",
            },
            "notifyCustomer": False,
        }
        [made] = shopify.fulfillments[ORDER]
        assert made["trackingInfo"][0]["number"] == "1ZNEW"


class TestCostBudget:
    async def test_workers_share_each_shops_bucket_and_wait_instead_of_being_throttled(
        self, settings: Settings, db: Database, shopify: ShopifyAdminSim
    ) -> None:
        box = SecretBox(settings.resolved_secret_key())
        one = TaskContext(settings=settings, db=db, box=box)
        # Another worker process shares the bucket through Redis; the embedded deployment
        # has a single worker process (one context).
        other = TaskContext(settings=settings, db=db, box=box) if settings.redis_url else one
        shop = Shop(uuid.uuid4(), STORE, TOKEN, False)
        shopify.add_order(ORDER, {GREEN: 1})
        shopify.available = 100
        await admin(one, shop).fulfillment_orders(ORDER)
        with pytest.raises(BudgetExceeded) as held:
            await admin(other, shop).fulfillment_orders(ORDER)
        # (530 points the query may cost - 100 left) / 50 restored a second, rounded up.
        assert held.value.retry_after == 9
        assert shopify.operations() == ["OrderFulfillmentOrders"]
        assert isinstance(
            other.shopify_costs, RedisCostStore if settings.redis_url else MemoryCostStore
        )

    async def test_a_sync_waiting_for_the_budget_backs_off_without_spending_an_attempt(
        self,
        client: Client,
        db: Database,
        store: MerchantHandle,
        supplier: dict[str, Any],
        shopify: ShopifyAdminSim,
    ) -> None:
        po, _ = await placed_order(client, store, shopify, IPOD2008GREEN=1)
        # The workers' bucket of the shop is empty (another app, another worker spent it).
        emptied = time.time()
        RUNTIME.context().shopify_costs.put(STORE, Bucket(1000.0, 0.0, 50.0, emptied))
        shipment = await ship(client, db, supplier, po, "1ZWAIT")

        async def waiting() -> ShopifyFulfillment | None:
            found = await find_row(db, shipment)
            return found if found is not None and found.last_error else None

        held = await eventually(waiting)
        assert (held.state, held.attempts, held.claimed_at) == ("pending", 0, None)
        assert held.last_error is not None
        assert held.last_error.startswith(f"Shopify cost budget of {STORE} is spent (")
        assert held.last_error.endswith(" of 530 points)")
        assert held.next_attempt_at is not None
        # Not before the bucket can pay the 530 points (50 a second from empty: 10.6 s after it
        # was emptied), however late the job ran.
        assert held.next_attempt_at.timestamp() >= emptied + 10.0
        assert shopify.calls == []


async def _equals(got: Any, expected: Any) -> bool:
    return bool(await got == expected)


async def _some(items: list[Any]) -> bool:
    return bool(items)


class TestMatching:
    """The pure rules: our shipped quantities onto Shopify's fulfillment order lines."""

    @staticmethod
    def fo(
        n: int, location: str, *lines: tuple[str, int], status: str = "OPEN"
    ) -> FulfillmentOrder:
        return FulfillmentOrder(
            f"gid://shopify/FulfillmentOrder/{n}",
            status,
            None,
            location,
            frozenset({"CREATE_FULFILLMENT"}) if status == "OPEN" else frozenset(),
            tuple(
                FulfillmentOrderLine(f"gid://shopify/FulfillmentOrderLineItem/{n}{i}", li, q)
                for i, (li, q) in enumerate(lines)
            ),
        )

    def test_quantities_are_taken_greedily_and_grouped_by_location(self) -> None:
        orders = [
            self.fo(1, "L1", (GREEN, 1)),
            self.fo(2, "L2", (GREEN, 2), (RED, 1)),
            self.fo(3, "L1", (RED, 5)),
        ]
        result = plan({GREEN: 3, RED: 2}, orders)
        assert result.shortfall == {}
        assert [(g.location_id, g.lines) for g in result.groups] == [
            (
                "L1",
                {
                    "gid://shopify/FulfillmentOrder/1": [
                        ("gid://shopify/FulfillmentOrderLineItem/10", 1)
                    ],
                    "gid://shopify/FulfillmentOrder/3": [
                        ("gid://shopify/FulfillmentOrderLineItem/30", 1)
                    ],
                },
            ),
            (
                "L2",
                {
                    "gid://shopify/FulfillmentOrder/2": [
                        ("gid://shopify/FulfillmentOrderLineItem/20", 2),
                        ("gid://shopify/FulfillmentOrderLineItem/21", 1),
                    ]
                },
            ),
        ]

    def test_held_or_missing_quantities_are_a_shortfall_never_a_partial_lie(self) -> None:
        orders = [self.fo(1, "L1", (GREEN, 1), status="ON_HOLD"), self.fo(2, "L1", (RED, 1))]
        result = plan({GREEN: 1, RED: 2}, orders)
        assert result.shortfall == {GREEN: 1, RED: 1}
        assert result.held == ["gid://shopify/FulfillmentOrder/1 is ON_HOLD"]

    def test_only_a_live_fulfillment_with_our_number_and_only_our_lines_is_adopted(self) -> None:
        def made(n: int, number: str, status: str = "SUCCESS", line: str = GREEN) -> Any:
            return {
                "id": f"gid://shopify/Fulfillment/{n}",
                "status": status,
                "trackingInfo": [{"company": "UPS", "number": number, "url": None}],
                "fulfillmentLineItems": {
                    "nodes": [{"id": "x", "quantity": 1, "lineItem": {"id": line}}]
                },
            }

        existing = [
            made(1, "1ZOTHER"),
            made(2, "1ZOURS", status="CANCELLED"),
            made(3, "1ZOURS", line="gid://shopify/LineItem/1"),
            made(4, "1ZOURS"),
        ]
        ids, left = adoptable(existing, {"number": "1ZOURS"}, {GREEN: 2})
        assert (ids, left) == (["gid://shopify/Fulfillment/4"], {GREEN: 1})
        assert adoptable(existing, {}, {GREEN: 1}) == ([], {GREEN: 1})
