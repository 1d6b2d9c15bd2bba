"""The OpenAPI document is complete and exact (ids, descriptions, security, error answers, the
bodies handlers read themselves), and the docs page at /schema works offline."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
METHODS = ("get", "post", "put", "patch", "delete")

#: The operation ids clients generate code from: stable, whatever the handlers are called.
OPERATION_IDS = {
    ("get", "/health/live"): "healthLive",
    ("get", "/health/ready"): "healthReady",
    ("post", "/webhooks/shopify"): "receiveShopifyWebhook",
    ("post", "/webhooks/tracking/aftership"): "receiveAfterShipWebhook",
    ("post", "/webhooks/stripe"): "receiveStripeWebhook",
    ("put", "/api/v1/settings/stripe"): "setStripeConnection",
    ("delete", "/api/v1/settings/stripe"): "deleteStripeConnection",
    ("post", "/api/v1/orders/{order_id}/refunds"): "createRefund",
    ("get", "/api/v1/refunds"): "listRefunds",
    ("get", "/api/v1/refunds/{refund_id}"): "getRefund",
    ("get", "/api/v1/orders"): "listOrders",
    ("post", "/api/v1/orders"): "createOrder",
    ("get", "/api/v1/orders/{order_id}"): "getOrder",
    ("post", "/api/v1/orders/import"): "importOrders",
    ("post", "/api/v1/orders/{order_id}/reroute"): "rerouteOrder",
    ("post", "/api/v1/orders/{order_id}/cancel"): "cancelOrder",
    ("get", "/api/v1/orders/{order_id}/cancellation"): "getOrderCancellation",
    ("post", "/api/v1/purchase-orders/{po_id}/cancellation"): "answerPurchaseOrderCancellation",
    ("get", "/api/v1/supplier-credits"): "listSupplierCredits",
    ("post", "/api/v1/supplier-credits/{credit_id}/settle"): "settleSupplierCredit",
    ("get", "/api/v1/exceptions"): "listExceptions",
    ("get", "/api/v1/suppliers"): "listSuppliers",
    ("post", "/api/v1/suppliers"): "createSupplier",
    ("get", "/api/v1/suppliers/{supplier_id}"): "getSupplier",
    ("patch", "/api/v1/suppliers/{supplier_id}"): "updateSupplier",
    ("post", "/api/v1/suppliers/{supplier_id}/rotate-key"): "rotateSupplierKey",
    ("get", "/api/v1/supplier-products"): "listSupplierProducts",
    ("post", "/api/v1/supplier-products"): "upsertSupplierProduct",
    ("delete", "/api/v1/supplier-products/{product_id}"): "deleteSupplierProduct",
    ("post", "/api/v1/supplier-products/import"): "importSupplierProducts",
    ("get", "/api/v1/routing/settings"): "getRoutingSettings",
    ("put", "/api/v1/routing/settings"): "updateRoutingSettings",
    ("put", "/api/v1/settings/shopify-token"): "setShopifyToken",
    ("delete", "/api/v1/settings/shopify-token"): "deleteShopifyToken",
    ("get", "/api/v1/settings"): "getSettings",
    ("put", "/api/v1/settings"): "putSettings",
    ("get", "/api/v1/notifications/templates/{event}"): "getNotificationTemplate",
    ("put", "/api/v1/notifications/templates/{event}"): "putNotificationTemplate",
    ("delete", "/api/v1/notifications/templates/{event}"): "resetNotificationTemplate",
    ("post", "/api/v1/notifications/templates/{event}/preview"): "previewNotificationTemplate",
    ("get", "/api/v1/routing/rules"): "listRoutingRules",
    ("post", "/api/v1/routing/rules"): "createRoutingRule",
    ("patch", "/api/v1/routing/rules/{rule_id}"): "updateRoutingRule",
    ("delete", "/api/v1/routing/rules/{rule_id}"): "deleteRoutingRule",
    ("post", "/api/v1/routing/simulate"): "simulateRouting",
    ("get", "/api/v1/purchase-orders"): "listPurchaseOrders",
    ("get", "/api/v1/purchase-orders/{po_id}"): "getPurchaseOrder",
    ("get", "/supplier/v1/orders"): "supplierListOrders",
    ("get", "/supplier/v1/orders/{po_id}"): "supplierGetOrder",
    ("post", "/supplier/v1/orders/{po_id}/accept"): "supplierAcceptOrder",
    ("post", "/supplier/v1/orders/{po_id}/reject"): "supplierRejectOrder",
    ("post", "/supplier/v1/orders/{po_id}/cancellation"): "supplierAnswerCancellation",
    ("post", "/supplier/v1/orders/{po_id}/shipments"): "supplierCreateShipment",
    ("post", "/supplier/v1/shipments/{shipment_id}/events"): "supplierAddTrackingEvent",
    ("put", "/supplier/v1/inventory"): "supplierUpdateInventory",
    ("get", "/track/{token}"): "getTrackingPage",
    ("post", "/api/v1/orders/{order_id}/returns"): "createReturn",
    ("get", "/api/v1/returns"): "listReturns",
    ("get", "/api/v1/returns/{return_id}"): "getReturn",
    ("post", "/api/v1/returns/{return_id}/approve"): "approveReturn",
    ("post", "/api/v1/returns/{return_id}/reject"): "rejectReturn",
    ("post", "/api/v1/returns/{return_id}/receive"): "receiveReturn",
    ("get", "/supplier/v1/returns"): "supplierListReturns",
    ("post", "/supplier/v1/returns/{return_id}/receive"): "supplierReceiveReturn",
    ("post", "/track/{token}/returns"): "requestReturnFromTrackingPage",
    ("post", "/track/{token}/cancel"): "cancelFromTrackingPage",
    ("get", "/api/v1/webhook-endpoints"): "listWebhookEndpoints",
    ("post", "/api/v1/webhook-endpoints"): "createWebhookEndpoint",
    ("get", "/api/v1/webhook-endpoints/{endpoint_id}"): "getWebhookEndpoint",
    ("patch", "/api/v1/webhook-endpoints/{endpoint_id}"): "updateWebhookEndpoint",
    ("delete", "/api/v1/webhook-endpoints/{endpoint_id}"): "deleteWebhookEndpoint",
    (
        "post",
        "/api/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
    ): "rotateWebhookEndpointSecret",
    ("get", "/api/v1/webhook-endpoints/{endpoint_id}/deliveries"): "listWebhookDeliveries",
    (
        "post",
        "/api/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry",
    ): "retryWebhookDelivery",
}

#: Operations that check a state and answer 409 for it (besides an Idempotency-Key in use).
STATE_CONFLICTS = {
    "createOrder",
    "rerouteOrder",
    "cancelOrder",
    "answerPurchaseOrderCancellation",
    "settleSupplierCredit",
    "supplierAnswerCancellation",
    "cancelFromTrackingPage",
    "supplierAcceptOrder",
    "supplierRejectOrder",
    "supplierCreateShipment",
    "supplierAddTrackingEvent",
    "createWebhookEndpoint",
    "retryWebhookDelivery",
    "createReturn",
    "approveReturn",
    "rejectReturn",
    "receiveReturn",
    "supplierReceiveReturn",
    "requestReturnFromTrackingPage",
    "createRefund",
}
#: Beyond the common ones: Stripe refusing (422) or failing (502, 503) while a connection is
#: saved; Stripe's webhook answers a forged signature with a 400 (Stripe's own advice), not a 401.
EXTRA_STATUSES = {"setStripeConnection": {422, 502, 503}, "receiveStripeWebhook": {503}}
NO_401 = {"receiveStripeWebhook"}
#: Operations that take no input but a path id (a malformed one is a 404): no 400.
NO_INPUT = {
    "healthLive",
    "healthReady",
    "getRoutingSettings",
    "getSettings",
    "listRoutingRules",
    "getOrder",
    "getSupplier",
    "deleteSupplierProduct",
    "deleteRoutingRule",
    "deleteShopifyToken",
    "deleteStripeConnection",
    "getRefund",
    "getPurchaseOrder",
    "supplierGetOrder",
    "getTrackingPage",
    "getOrderCancellation",
    "getWebhookEndpoint",
    "deleteWebhookEndpoint",
    "getReturn",
}
#: A 404 for a row named in the body rather than the path.
BODY_REFERENCES = {"upsertSupplierProduct", "simulateRouting", "receiveShopifyWebhook"}


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the document does not depend on the database: one run is enough


@pytest.fixture
async def document(client: Client) -> dict[str, Any]:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def statuses(op: dict[str, Any]) -> set[int]:
    return {int(s) for s in op["responses"]}


async def test_every_operation_has_its_stable_id_and_a_description(
    document: dict[str, Any],
) -> None:
    ops = operations(document)
    assert {key: op["operationId"] for key, op in ops.items()} == OPERATION_IDS
    for key, op in ops.items():
        assert len(op.get("description", "")) > 20, key
        assert op["summary"], key


async def test_security_schemes_and_which_operation_needs_which(
    document: dict[str, Any],
) -> None:
    assert document["components"]["securitySchemes"] == {
        "merchantToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The merchant's API token (`dropship merchant create` prints it "
            "once): `Authorization: Bearer <token>`. Every `/api/v1` operation needs it.",
        },
        "supplierKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "A supplier's API key (shown once when the supplier is created or "
            "its key rotated): `Authorization: Bearer <key>`. Every `/supplier/v1` operation "
            "needs it.",
        },
        "shopifyHmac": {
            "type": "apiKey",
            "name": "X-Shopify-Hmac-Sha256",
            "in": "header",
            "description": "Base64 HMAC-SHA256 of the raw body with the Shopify app's client "
            "secret (`DROPSHIP_SHOPIFY_API_SECRET`, or the previous one while a rotation rolls "
            "out).",
        },
    }
    assert "security" not in document  # nothing is authenticated by default
    for (method, path), op in operations(document).items():
        expected = (
            [{"merchantToken": []}]
            if path.startswith("/api/v1/")
            else [{"supplierKey": []}]
            if path.startswith("/supplier/v1/")
            else [{"shopifyHmac": []}]
            if path == "/webhooks/shopify"
            else None
        )
        assert op.get("security") == expected, (method, path)


async def test_error_schema_is_the_one_every_error_has(document: dict[str, Any]) -> None:
    assert document["components"]["schemas"]["ErrorBody"] == {
        "type": "object",
        "properties": {
            "status_code": {"type": "integer"},
            "detail": {"type": "string"},
            "extra": {"type": "object", "additionalProperties": {}},
        },
        "required": ["detail", "extra", "status_code"],
        "title": "ErrorBody",
    }


async def test_a_malformed_path_id_is_a_404(client: Client, document: dict[str, Any]) -> None:
    # Why operations whose only input is a path id document no 400.
    r = await client.get("/api/v1/orders/not-a-uuid", headers={"Authorization": "Bearer x"})
    assert r.status_code == 404
    assert r.json() == {"status_code": 404, "detail": "Not Found", "extra": {}}


async def test_every_error_status_each_operation_can_answer(document: dict[str, Any]) -> None:
    for (method, path), op in operations(document).items():
        op_id = op["operationId"]
        success = {int(s) for s in op["responses"] if s.startswith("2")}
        expected = set(success)
        if op_id == "requestReturnFromTrackingPage":
            expected.add(303)  # the page's form is answered by a redirect back to the page
        if op_id not in NO_INPUT:
            expected.add(400)
        if path.startswith(("/api/", "/supplier/", "/webhooks/")) and op_id not in NO_401:
            expected.add(401)
        expected |= EXTRA_STATUSES.get(op_id, set())
        if "{" in path or op_id in BODY_REFERENCES:
            expected.add(404)
        keyed = method == "post" and path.startswith(("/api/", "/supplier/"))
        if keyed or op_id in STATE_CONFLICTS:
            expected.add(409)
        if method in ("post", "put", "patch"):
            expected.add(413)
        if keyed:
            expected.add(422)
        if op_id in ("receiveShopifyWebhook", "receiveAfterShipWebhook", "healthReady"):
            expected.add(503)
        if op_id == "cancelFromTrackingPage":
            expected.add(303)  # a browser's form post goes back to the page
        assert statuses(op) == expected, (method, path)
        for status, response in op["responses"].items():
            if int(status) >= 400 and op_id != "healthReady":
                assert response["content"] == {"application/json": {"schema": ERROR_REF}}, (
                    method,
                    path,
                    status,
                )
                assert response["description"], (method, path, status)


async def test_posts_document_idempotency_key_and_replay_header(
    document: dict[str, Any],
) -> None:
    for (method, path), op in operations(document).items():
        params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "header"}
        success = next(r for s, r in op["responses"].items() if s.startswith("2"))
        keyed = method == "post" and path.startswith(("/api/", "/supplier/"))
        if keyed:
            assert params["Idempotency-Key"]["required"] is False
            assert params["Idempotency-Key"]["schema"] == {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
            }
            assert success["headers"]["Idempotent-Replayed"]["schema"] == {
                "type": "string",
                "enum": ["true"],
            }
            assert "Idempotency-Key" in op["responses"]["422"]["description"]
            assert "Idempotency-Key" in op["responses"]["409"]["description"]
        else:
            assert "Idempotency-Key" not in params, (method, path)
            assert "Idempotent-Replayed" not in (success.get("headers") or {}), (method, path)


@pytest.mark.parametrize(
    ("path", "header"),
    [
        (
            "/api/v1/orders/import",
            "reference,currency,name,address1,city,country_code,sku,quantity,price,email,"
            "financial_status,address2,company,province_code,zip,phone,shipping_method,"
            "shipping_price,tax,title,note",
        ),
        (
            "/api/v1/supplier-products/import",
            "sku,supplier,supplier_sku,unit_cost,currency,stock,lead_time_days,ships_to,priority",
        ),
    ],
)
async def test_csv_imports_document_both_body_forms(
    document: dict[str, Any], path: str, header: str
) -> None:
    body = document["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"text/csv", "multipart/form-data"}
    assert body["content"]["text/csv"]["schema"]["type"] == "string"
    form = body["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]
    assert form["properties"]["file"]["type"] == "string"
    assert form["properties"]["file"]["contentMediaType"] == "text/csv"
    assert f"`{header}`" in body["description"]


async def test_shopify_webhook_documents_body_headers_and_answers(
    document: dict[str, Any],
) -> None:
    op = document["paths"]["/webhooks/shopify"]["post"]
    assert op["requestBody"]["content"] == {
        "application/json": {"schema": {"type": "object", "additionalProperties": {}}}
    }
    for topic in (
        "orders/create",
        "orders/updated",
        "orders/cancelled",
        "app/uninstalled",
        "customers/data_request",
        "customers/redact",
        "shop/redact",
    ):
        assert f"`{topic}`" in op["description"]
    headers = {p["name"]: p["required"] for p in op["parameters"] if p["in"] == "header"}
    assert headers == {
        "X-Shopify-Topic": True,
        "X-Shopify-Webhook-Id": True,
        "X-Shopify-Shop-Domain": True,
        "X-Shopify-Event-Id": False,
    }
    ack = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert document["components"]["schemas"][ack["$ref"].rsplit("/", 1)[1]]["properties"] == {
        "status": {"type": "string", "enum": ["accepted", "duplicate", "ignored"]}
    }


_EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)
_FROM_CDN = re.compile(r"""(?:src|href|url)\s*[=:]\s*["'][^"']*cdn""", re.IGNORECASE)
_ASSET_URLS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
async def test_docs_page_works_offline(client: Client, page: str) -> None:
    r = await client.get(page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "SwaggerUIBundle(" in html
    assert not _EXTERNAL.search(html), _EXTERNAL.search(html)
    # No asset from a CDN (the page embeds the whole OpenAPI document, whose text may say
    # anything: only where the page loads from counts).
    assert not _FROM_CDN.search(html), _FROM_CDN.search(html)
    assets = sorted(set(_ASSET_URLS.findall(html)))
    assert assets == [
        "/schema/assets/favicon-32x32.png",
        "/schema/assets/swagger-ui-bundle.js",
        "/schema/assets/swagger-ui-standalone-preset.js",
        "/schema/assets/swagger-ui.css",
    ]


@pytest.mark.parametrize(
    ("name", "content_type", "starts"),
    [
        ("swagger-ui-bundle.js", "text/javascript; charset=utf-8", b""),
        ("swagger-ui-standalone-preset.js", "text/javascript; charset=utf-8", b""),
        ("swagger-ui.css", "text/css; charset=utf-8", b""),
        ("favicon-32x32.png", "image/png", b"\x89PNG"),
    ],
)
async def test_docs_assets_are_served_locally(
    client: Client, name: str, content_type: str, starts: bytes
) -> None:
    r = await client.get(f"/schema/assets/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert len(r.content) > 1000
    assert r.content.startswith(starts)


async def test_swagger_ui_is_version_5(client: Client) -> None:
    # Swagger UI 5 is the first to render OpenAPI 3.1, which Litestar 2 emits.
    r = await client.get("/schema/assets/swagger-ui-bundle.js")
    version = re.search(rb'PACKAGE_VERSION:"(\d+)\.\d+\.\d+"', r.content)
    assert version is not None
    assert version.group(1) == b"5"


async def test_no_other_file_of_the_package_is_served(client: Client) -> None:
    for name in ("swagger-editor-bundle.js", "index.css", "..%2F__init__.py", "LICENSE"):
        r = await client.get(f"/schema/assets/{name}")
        assert r.status_code == 404, name
