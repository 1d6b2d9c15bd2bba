"""Shipments become Shopify fulfillments, once: the Admin API client (shopifyapp's helper behind
our URL rewrite, throttling, the cost budget, refusals) and the sync (one fulfillmentCreate per
shipment with the right fulfillment order lines and tracking, also when the task runs twice,
after a lost answer and after a crash between the call and our commit; partial shipments;
userErrors; THROTTLED; a refused token stops the shop)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx

from connectors.base import PermanentConnectorError, RetryableConnectorError
from connectors.shopify_admin import (
    RECENT_CALLS,
    BudgetExceeded,
    MemoryCostStore,
    ShopifyAdmin,
    ShopifyAuthError,
    UserErrors,
    admin_http_client,
)
from tests.support.shopify_admin import ShopifyAdminSim, throttled, unauthorized

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
