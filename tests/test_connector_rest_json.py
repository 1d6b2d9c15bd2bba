"""``connectors/rest_json.py`` on its own: a real ``httpx.AsyncClient`` against a supplier API
served by respx. What we send (body, headers, renames), how each answer is classified (placed,
permanent, retryable), status, cancel, stock, and the settings check."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

from connectors.base import (
    AddressDTO,
    CancelResult,
    CancelUnsupported,
    ConnectorConfigError,
    PermanentConnectorError,
    PlacementResult,
    PurchaseOrderDTO,
    PurchaseOrderLineDTO,
    RetryableConnectorError,
    ShipmentDTO,
    StatusResult,
    StockLevel,
)
from connectors.rest_json import RestJsonConnector

BASE = "https://api.supplier.test/v2"
KEY = "dropship-po-01a2314d-0000-7000-8000-000000000001"


def purchase_order(**overrides: Any) -> PurchaseOrderDTO:
    fields: dict[str, Any] = {
        "id": "01a2314d-0000-7000-8000-000000000001",
        "number": "PO-1001-1",
        "idempotency_key": KEY,
        "currency": "USD",
        "ship_to": AddressDTO(
            name="Ada Lovelace",
            company=None,
            address1="12 Congress Ave",
            address2=None,
            city="Austin",
            province_code="TX",
            zip="78701",
            country_code="US",
            phone="+1 512 555 0100",
        ),
        "shipping_method": "Standard",
        "lines": (
            PurchaseOrderLineDTO(
                sku="RED", supplier_sku="S-RED", quantity=2, unit_cost=Decimal("3.10")
            ),
            PurchaseOrderLineDTO(
                sku="BLUE", supplier_sku="S-BLUE", quantity=1, unit_cost=Decimal("4.00")
            ),
        ),
        "supplier_reference": None,
    }
    fields.update(overrides)
    return PurchaseOrderDTO(**fields)


PLACEMENT_BODY = {
    "reference": "PO-1001-1",
    "currency": "USD",
    "shipping_method": "Standard",
    "ship_to": {  # only what is known
        "name": "Ada Lovelace",
        "address1": "12 Congress Ave",
        "city": "Austin",
        "province_code": "TX",
        "zip": "78701",
        "country_code": "US",
        "phone": "+1 512 555 0100",
    },
    "lines": [
        {"sku": "S-RED", "quantity": 2, "unit_cost": "3.10"},  # their SKUs
        {"sku": "S-BLUE", "quantity": 1, "unit_cost": "4.00"},
    ],
}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def supplier() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def connector(http: httpx.AsyncClient, **config: Any) -> RestJsonConnector:
    return RestJsonConnector(RestJsonConnector.validate_config({"base_url": BASE, **config}), http)


def sent(route: respx.Route) -> httpx.Request:
    assert route.call_count == 1
    request: httpx.Request = route.calls.last.request
    return request


class TestPlacementRequest:
    async def test_body_headers_and_idempotency_key(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        route = supplier.post("/orders").respond(201, json={"id": "S-1", "status": "received"})
        result = await connector(http, auth_value="Bearer sup-secret").place_order(purchase_order())
        request = sent(route)
        assert str(request.url) == f"{BASE}/orders"
        assert json.loads(request.content) == PLACEMENT_BODY
        assert request.headers["idempotency-key"] == KEY
        assert request.headers["authorization"] == "Bearer sup-secret"
        assert request.headers["accept"] == "application/json"
        assert request.headers["content-type"] == "application/json"
        assert request.extensions["timeout"] == {
            "connect": 10.0,
            "read": 10.0,
            "write": 10.0,
            "pool": 10.0,
        }
        # "received" is not one of our words: handed over, not confirmed.
        assert result == PlacementResult(
            status="placed", supplier_reference="S-1", raw={"id": "S-1", "status": "received"}
        )

    async def test_the_same_key_on_every_attempt(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        route = supplier.post("/orders").mock(
            side_effect=[httpx.Response(503), httpx.Response(200, json={"id": "S-1"})]
        )
        c = connector(http)
        with pytest.raises(RetryableConnectorError):
            await c.place_order(purchase_order())
        await c.place_order(purchase_order())
        assert [call.request.headers["idempotency-key"] for call in route.calls] == [KEY, KEY]

    async def test_configured_idempotency_header_path_and_timeout(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        route = supplier.post("/purchase/new").respond(200, json={"id": "S-2"})
        await connector(
            http, idempotency_header="X-Request-Key", order_path="/purchase/new", timeout=2.5
        ).place_order(purchase_order())
        request = sent(route)
        assert request.headers["x-request-key"] == KEY
        assert "idempotency-key" not in request.headers
        assert request.extensions["timeout"]["read"] == 2.5

    async def test_field_map_renames_at_every_level(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        route = supplier.post("/orders").respond(200, json={"id": "S-3"})
        field_map = {
            "reference": "external_id",
            "lines": "items",
            "sku": "item_code",
            "quantity": "qty",
            "zip": "postal_code",
        }
        await connector(http, field_map=field_map).place_order(purchase_order())
        assert json.loads(sent(route).content) == {
            "external_id": "PO-1001-1",
            "currency": "USD",
            "shipping_method": "Standard",
            "ship_to": {
                "name": "Ada Lovelace",
                "address1": "12 Congress Ave",
                "city": "Austin",
                "province_code": "TX",
                "postal_code": "78701",
                "country_code": "US",
                "phone": "+1 512 555 0100",
            },
            "items": [
                {"item_code": "S-RED", "qty": 2, "unit_cost": "3.10"},
                {"item_code": "S-BLUE", "qty": 1, "unit_cost": "4.00"},
            ],
        }

    @pytest.mark.parametrize(
        ("config", "header", "value"),
        [
            ({"auth_value": "Token abc"}, "authorization", "Token abc"),
            ({"auth_header": "X-Api-Key", "auth_value": "abc"}, "x-api-key", "abc"),
        ],
    )
    async def test_auth_header_and_value(
        self,
        http: httpx.AsyncClient,
        supplier: respx.MockRouter,
        config: dict[str, Any],
        header: str,
        value: str,
    ) -> None:
        route = supplier.post("/orders").respond(200, json={"id": "S-4"})
        await connector(http, **config).place_order(purchase_order())
        request = sent(route)
        assert request.headers[header] == value
        if header != "authorization":
            assert "authorization" not in request.headers

    async def test_no_credential_no_auth_header(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        route = supplier.post("/orders").respond(200, json={"id": "S-5"})
        await connector(http, auth_header="X-Api-Key").place_order(purchase_order())
        request = sent(route)
        assert "authorization" not in request.headers
        assert "x-api-key" not in request.headers


class TestPlacementAnswer:
    @pytest.mark.parametrize(
        ("config", "answer", "expected"),
        [
            ({}, {"id": "S-1", "status": "accepted"}, ("accepted", "S-1")),
            ({}, {"id": 42}, ("placed", "42")),  # no status: handed over
            ({}, {"status": "accepted"}, ("accepted", None)),  # no reference
            ({}, {"id": "S-1", "status": "shipped"}, ("placed", "S-1")),
            (
                {
                    "reference_field": "order_no",
                    "status_field": "state",
                    "status_map": {"OK": "accepted", "QUEUED": "placed"},
                },
                {"order_no": "S-9", "state": "OK", "id": "not-this"},
                ("accepted", "S-9"),
            ),
            (
                {"status_field": "state", "status_map": {"OK": "accepted"}},
                {"id": "S-9", "state": "QUEUED", "status": "accepted"},
                ("placed", "S-9"),
            ),
        ],
        ids=["accepted", "no-status", "no-reference", "later-status", "mapped", "unmapped"],
    )
    @pytest.mark.parametrize("code", [200, 201, 202])
    async def test_success(
        self,
        http: httpx.AsyncClient,
        supplier: respx.MockRouter,
        config: dict[str, Any],
        answer: dict[str, Any],
        expected: tuple[str, str | None],
        code: int,
    ) -> None:
        supplier.post("/orders").respond(code, json=answer)
        result = await connector(http, **config).place_order(purchase_order())
        assert (result.status, result.supplier_reference, dict(result.raw)) == (
            *expected,
            answer,
        )

    @pytest.mark.parametrize(
        ("config", "answer", "message"),
        [
            (
                {},
                {"status": "rejected", "message": "S-BLUE discontinued"},
                "placing PO-1001-1: supplier rejected it: S-BLUE discontinued",
            ),
            (
                {"status_map": {"NOPE": "rejected"}},
                {"status": "NOPE"},
                "placing PO-1001-1: supplier rejected it: {'status': 'NOPE'}",
            ),
        ],
    )
    async def test_a_rejected_status_is_permanent(
        self,
        http: httpx.AsyncClient,
        supplier: respx.MockRouter,
        config: dict[str, Any],
        answer: dict[str, Any],
        message: str,
    ) -> None:
        supplier.post("/orders").respond(200, json=answer)
        with pytest.raises(PermanentConnectorError) as caught:
            await connector(http, **config).place_order(purchase_order())
        assert caught.value.message == message

    @pytest.mark.parametrize(
        ("code", "body", "message"),
        [
            (400, {"error": "lines[0].sku unknown"}, "supplier answered 400: lines[0].sku unknown"),
            (404, {"message": "no such route"}, "supplier answered 404: no such route"),
            (422, {"detail": "bad zip"}, "supplier answered 422: bad zip"),
            (401, "bad credentials", "supplier answered 401: bad credentials"),
            (409, {}, "supplier answered 409: {}"),
        ],
    )
    async def test_client_errors_are_permanent(
        self,
        http: httpx.AsyncClient,
        supplier: respx.MockRouter,
        code: int,
        body: Any,
        message: str,
    ) -> None:
        kwargs = {"json": body} if isinstance(body, dict) else {"text": body}
        supplier.post("/orders").respond(code, **kwargs)
        with pytest.raises(PermanentConnectorError) as caught:
            await connector(http).place_order(purchase_order())
        assert caught.value.message == f"placing PO-1001-1: {message}"

    @pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503, 504])
    async def test_transient_errors_are_retryable(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter, code: int
    ) -> None:
        supplier.post("/orders").respond(code, json={"error": "busy"})
        with pytest.raises(RetryableConnectorError) as caught:
            await connector(http).place_order(purchase_order())
        assert caught.value.message == f"placing PO-1001-1: supplier answered {code}: busy"
        assert caught.value.retry_after is None

    @pytest.mark.parametrize(
        ("header", "expected"),
        [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None)],
    )
    async def test_retry_after_in_seconds(
        self,
        http: httpx.AsyncClient,
        supplier: respx.MockRouter,
        header: str,
        expected: float | None,
    ) -> None:
        supplier.post("/orders").respond(429, headers={"Retry-After": header})
        with pytest.raises(RetryableConnectorError) as caught:
            await connector(http).place_order(purchase_order())
        assert caught.value.retry_after == expected

    async def test_retry_after_as_an_http_date(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        later = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=120)
        supplier.post("/orders").respond(
            503, headers={"Retry-After": format_datetime(later, usegmt=True)}
        )
        with pytest.raises(RetryableConnectorError) as caught:
            await connector(http).place_order(purchase_order())
        assert caught.value.retry_after is not None
        assert 115 <= caught.value.retry_after <= 120
        # A date in the past: now.
        earlier = datetime.now(UTC) - timedelta(hours=1)
        supplier.post("/orders").respond(
            503, headers={"Retry-After": format_datetime(earlier, usegmt=True)}
        )
        with pytest.raises(RetryableConnectorError) as caught:
            await connector(http).place_order(purchase_order())
        assert caught.value.retry_after == 0.0

    @pytest.mark.parametrize(
        ("error", "message"),
        [
            (httpx.ReadTimeout("read timed out"), "placing PO-1001-1: supplier timed out"),
            (httpx.ConnectTimeout("connect timed out"), "placing PO-1001-1: supplier timed out"),
            (httpx.PoolTimeout("pool"), "placing PO-1001-1: supplier timed out"),
            (
                httpx.ConnectError("connection refused"),
                "placing PO-1001-1: cannot reach supplier (connection refused)",
            ),
            (
                httpx.RemoteProtocolError("peer closed connection"),
                "placing PO-1001-1: cannot reach supplier (peer closed connection)",
            ),
        ],
    )
    async def test_network_failures_are_retryable(
        self,
        http: httpx.AsyncClient,
        supplier: respx.MockRouter,
        error: Exception,
        message: str,
    ) -> None:
        supplier.post("/orders").mock(side_effect=error)
        with pytest.raises(RetryableConnectorError) as caught:
            await connector(http).place_order(purchase_order())
        assert caught.value.message == message
        assert caught.value.retry_after is None

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"text": "<html>OK</html>"}, "supplier answered something other than JSON"),
            ({"content": b""}, "supplier answered something other than JSON"),
            ({"json": [{"id": "S-1"}]}, "supplier answered a non-object"),
            ({"json": "S-1"}, "supplier answered a non-object"),
            (
                {"content": b"null", "headers": {"Content-Type": "application/json"}},
                "supplier answered a non-object",
            ),
        ],
        ids=["html", "empty", "list", "string", "null"],
    )
    async def test_a_success_without_a_json_object_is_retryable(
        self,
        http: httpx.AsyncClient,
        supplier: respx.MockRouter,
        kwargs: dict[str, Any],
        message: str,
    ) -> None:
        """The supplier may have taken it: retrying under the same key is safe."""
        supplier.post("/orders").respond(200, **kwargs)
        with pytest.raises(RetryableConnectorError) as caught:
            await connector(http).place_order(purchase_order())
        assert caught.value.message == f"placing PO-1001-1: {message}"


class TestFetchStatus:
    async def test_without_a_reference_nothing_is_asked(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        assert await connector(http).fetch_status(purchase_order()) is None
        assert supplier.calls.call_count == 0

    async def test_status_and_shipments(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        route = supplier.get("/orders/S-9").respond(
            200,
            json={
                "id": "S-9",
                "status": "shipped",
                "shipments": [
                    {
                        "carrier": "UPS",
                        "tracking_number": "1Z999",
                        "tracking_url": "",
                        "lines": [
                            {"sku": "S-RED", "quantity": 2},
                            {"sku": "S-BLUE"},
                            {"quantity": 1},  # no SKU: not a line
                            "junk",
                        ],
                    },
                    {"tracking_number": 12345},
                    "junk",
                ],
            },
        )
        result = await connector(http, auth_value="Bearer k").fetch_status(
            purchase_order(supplier_reference="S-9")
        )
        assert result == StatusResult(
            status="shipped",
            shipments=(
                ShipmentDTO(
                    carrier="UPS",
                    tracking_number="1Z999",
                    tracking_url=None,
                    lines=(("S-RED", 2), ("S-BLUE", 0)),
                ),
                ShipmentDTO(carrier=None, tracking_number="12345", tracking_url=None, lines=()),
            ),
        )
        assert sent(route).headers["authorization"] == "Bearer k"

    async def test_configured_path_and_status_words(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        route = supplier.get("/v1/purchase/S-9/state").respond(200, json={"state": "DONE"})
        result = await connector(
            http,
            status_path="/v1/purchase/{reference}/state",
            status_field="state",
            status_map={"DONE": "delivered"},
        ).fetch_status(purchase_order(supplier_reference="S-9"))
        assert result == StatusResult(status="delivered", shipments=())
        assert route.call_count == 1

    async def test_the_reference_cannot_change_the_path(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        """The supplier's reference is data: quoted into the path, never a path of its own."""
        route = supplier.get(url__startswith=BASE).respond(200, json={"status": "accepted"})
        await connector(http).fetch_status(purchase_order(supplier_reference="../admin?all=1"))
        assert sent(route).url.raw_path == b"/v2/orders/..%2Fadmin%3Fall%3D1"

    @pytest.mark.parametrize(
        ("code", "kind"), [(404, PermanentConnectorError), (503, RetryableConnectorError)]
    )
    async def test_errors(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter, code: int, kind: type
    ) -> None:
        supplier.get("/orders/S-9").respond(code, json={"error": "x"})
        with pytest.raises(kind) as caught:
            await connector(http).fetch_status(purchase_order(supplier_reference="S-9"))
        assert caught.value.message == f"status of PO-1001-1: supplier answered {code}: x"

    async def test_a_malformed_quantity_is_a_connector_error(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        supplier.get("/orders/S-9").respond(
            200,
            json={"status": "shipped", "shipments": [{"lines": [{"sku": "A", "quantity": "two"}]}]},
        )
        with pytest.raises(PermanentConnectorError) as caught:
            await connector(http).fetch_status(purchase_order(supplier_reference="S-9"))
        assert caught.value.message == (
            "status of PO-1001-1: shipments[0].lines[0].quantity: 'two' is not a whole number"
        )


class TestCancel:
    async def test_configured(self, http: httpx.AsyncClient, supplier: respx.MockRouter) -> None:
        route = supplier.post("/orders/S-9/cancel").respond(200, json={})
        c = connector(
            http,
            cancel_path="/orders/{reference}/cancel",
            auth_value="Bearer k",
            field_map={"lines": "items"},
        )
        assert await c.cancel_order(
            purchase_order(supplier_reference="S-9"), "dropship-cancel-1"
        ) == CancelResult("cancelled")
        request = sent(route)
        assert request.headers["authorization"] == "Bearer k"
        assert request.headers["idempotency-key"] == "dropship-cancel-1"
        assert json.loads(request.content) == {
            "reference": "PO-1001-1",
            "items": [{"sku": "S-RED", "quantity": 2}, {"sku": "S-BLUE", "quantity": 1}],
        }
        # Before the supplier gave its own id, ours.
        by_number = supplier.post("/orders/PO-1001-1/cancel").respond(204)
        assert await c.cancel_order(purchase_order(), "k") == CancelResult("cancelled")
        assert by_number.call_count == 1

    @pytest.mark.parametrize("code", [409, 422])
    async def test_already_shipped_by_status_code(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter, code: int
    ) -> None:
        supplier.post("/orders/S-9/cancel").respond(code, json={"error": "already shipped"})
        c = connector(http, cancel_path="/orders/{reference}/cancel")
        assert await c.cancel_order(purchase_order(supplier_reference="S-9"), "k") == (
            CancelResult(
                "already_shipped",
                f"cancelling PO-1001-1: supplier answered {code}: already shipped",
            )
        )

    async def test_already_shipped_by_the_answers_status(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        supplier.post("/c/PO-1001-1").respond(200, json={"state": "SENT"})
        c = connector(
            http,
            cancel_path="/c/{number}",
            status_field="state",
            status_map={"SENT": "shipped"},
            cancel_refused_codes=[410],
        )
        result = await c.cancel_order(purchase_order(supplier_reference="S-9"), "k")
        assert result.outcome == "already_shipped"
        supplier.post("/c/PO-1001-2").respond(410, json={"error": "gone"})
        assert (await c.cancel_order(purchase_order(number="PO-1001-2"), "k")).outcome == (
            "already_shipped"
        )

    async def test_5xx_retries_and_other_4xx_is_permanent(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        route = supplier.post("/orders/S-9/cancel")
        c = connector(http, cancel_path="/orders/{reference}/cancel")
        route.respond(503, headers={"Retry-After": "7"})
        with pytest.raises(RetryableConnectorError) as retry:
            await c.cancel_order(purchase_order(supplier_reference="S-9"), "k")
        assert retry.value.retry_after == 7.0
        route.respond(400, json={"error": "unknown order"})
        with pytest.raises(PermanentConnectorError) as caught:
            await c.cancel_order(purchase_order(supplier_reference="S-9"), "k")
        assert caught.value.message == "cancelling PO-1001-1: supplier answered 400: unknown order"

    async def test_not_configured(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        with pytest.raises(CancelUnsupported) as caught:
            await connector(http).cancel_order(purchase_order(supplier_reference="S-9"), "k")
        assert caught.value.message == "rest_json suppliers cannot cancel through the connector"
        assert supplier.calls.call_count == 0

    @pytest.mark.parametrize("codes", [[200], "409", [True], list(range(400, 421))])
    def test_refused_codes_are_checked(self, codes: Any) -> None:
        with pytest.raises(ConnectorConfigError) as caught:
            RestJsonConnector.validate_config(
                {"base_url": "https://s.example", "cancel_refused_codes": codes}
            )
        assert caught.value.field == "cancel_refused_codes"


class TestFetchStock:
    ROWS: list[Any] = [
        {"sku": "A", "quantity": 3, "unit_cost": "1.50"},
        {"sku": "B", "quantity": 0},
        {"sku": "C", "unit_cost": 2},
        "junk",
    ]

    async def test_not_configured(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        assert await connector(http).fetch_stock(("A",)) == ()
        assert supplier.calls.call_count == 0

    async def test_rows(self, http: httpx.AsyncClient, supplier: respx.MockRouter) -> None:
        route = supplier.get("/stock").respond(200, json=self.ROWS)
        c = connector(http, stock_path="/stock", auth_header="X-Key", auth_value="k")
        assert await c.fetch_stock(("A", "B", "Z")) == (
            StockLevel(sku="A", quantity=3, unit_cost=Decimal("1.50")),
            StockLevel(sku="B", quantity=0, unit_cost=None),
        )
        assert sent(route).headers["x-key"] == "k"
        # No SKUs named: every row.
        assert await c.fetch_stock(()) == (
            StockLevel(sku="A", quantity=3, unit_cost=Decimal("1.50")),
            StockLevel(sku="B", quantity=0, unit_cost=None),
            StockLevel(sku="C", quantity=0, unit_cost=Decimal("2")),
        )

    async def test_not_a_list_is_no_stock(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        supplier.get("/stock").respond(200, json={"A": 3})
        assert await connector(http, stock_path="/stock").fetch_stock(()) == ()

    async def test_not_json_is_permanent(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        supplier.get("/stock").respond(200, text="A,3")
        with pytest.raises(PermanentConnectorError) as caught:
            await connector(http, stock_path="/stock").fetch_stock(())
        assert caught.value.message == "stock: supplier answered something other than JSON"

    async def test_a_row_without_a_sku_is_skipped(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        supplier.get("/stock").respond(200, json=[{"quantity": 3}, {"sku": "A", "quantity": 1}])
        assert await connector(http, stock_path="/stock").fetch_stock(()) == (
            StockLevel(sku="A", quantity=1, unit_cost=None),
        )

    @pytest.mark.parametrize(
        ("row", "message"),
        [
            ({"sku": "A", "quantity": "lots"}, "stock: [1].quantity: 'lots' is not a whole number"),
            (
                {"sku": "A", "quantity": 1, "unit_cost": "cheap"},
                "stock: [1].unit_cost: 'cheap' is not an amount",
            ),
        ],
    )
    async def test_malformed_rows_are_connector_errors(
        self,
        http: httpx.AsyncClient,
        supplier: respx.MockRouter,
        row: dict[str, Any],
        message: str,
    ) -> None:
        supplier.get("/stock").respond(200, json=[{"sku": "B", "quantity": 1}, row])
        with pytest.raises(PermanentConnectorError) as caught:
            await connector(http, stock_path="/stock").fetch_stock(())
        assert caught.value.message == message


class TestValidateConfig:
    def test_normalised_and_unchanged_input(self) -> None:
        given = {"base_url": "https://api.supplier.test/v2/", "auth_value": "k", "timeout": 120}
        out = RestJsonConnector.validate_config(given)
        assert out == {
            "base_url": "https://api.supplier.test/v2",
            "auth_value": "k",
            "timeout": 120,
        }
        assert given["base_url"] == "https://api.supplier.test/v2/"
        for timeout in (0.1, 1, 120):
            cfg = RestJsonConnector.validate_config(
                {"base_url": "http://x.test", "timeout": timeout}
            )
            assert cfg["timeout"] == timeout
        full = {
            "base_url": "http://x.test",
            "order_path": "/o",
            "status_path": "/o/{reference}",
            "cancel_path": "/o/{reference}/cancel",
            "stock_path": "/s",
            "field_map": {},
            "status_map": {"A": "accepted"},
        }
        assert RestJsonConnector.validate_config(full) == full

    @pytest.mark.parametrize(
        ("config", "field", "message"),
        [
            ({"base_url": None}, "base_url", "an http(s) URL is required"),
            ({"base_url": "api.supplier.test"}, "base_url", "an http(s) URL is required"),
            ({"base_url": "ftp://api.supplier.test"}, "base_url", "an http(s) URL is required"),
            ({"base_url": "javascript:alert(1)"}, "base_url", "an http(s) URL is required"),
            ({"order_path": "orders"}, "order_path", "must be a path starting with /"),
            ({"status_path": ""}, "status_path", "must be a path starting with /"),
            ({"cancel_path": 3}, "cancel_path", "must be a path starting with /"),
            ({"stock_path": ["/s"]}, "stock_path", "must be a path starting with /"),
            ({"field_map": "lines=items"}, "field_map", "must be an object"),
            ({"status_map": []}, "status_map", "must be an object"),
            ({"timeout": 0}, "timeout", "seconds from 0.1 to 120"),
            ({"timeout": -1}, "timeout", "seconds from 0.1 to 120"),
            ({"timeout": 120.5}, "timeout", "seconds from 0.1 to 120"),
            ({"timeout": "10"}, "timeout", "seconds from 0.1 to 120"),
            ({"timeout": None}, "timeout", "seconds from 0.1 to 120"),
        ],
    )
    def test_refused(self, config: dict[str, Any], field: str, message: str) -> None:
        with pytest.raises(ConnectorConfigError) as caught:
            RestJsonConnector.validate_config({"base_url": "https://x.test", **config})
        assert (caught.value.field, str(caught.value)) == (field, f"{field}: {message}")

    def test_a_boolean_timeout_is_refused(self) -> None:
        with pytest.raises(ConnectorConfigError):
            RestJsonConnector.validate_config({"base_url": "https://x.test", "timeout": True})

    def test_secret_fields(self) -> None:
        assert RestJsonConnector.secret_fields() == frozenset({"auth_value"})
        assert RestJsonConnector.kind == "rest_json"
        assert RestJsonConnector.pull_based is False
