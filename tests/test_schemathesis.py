"""Every operation of the OpenAPI document, fuzzed by schemathesis against the app over ASGI: no
answer is a 5xx, and every answer (status, content type, body) is one the document describes.

SQLite only (the document and the handlers are the same on both backends; this keeps the run
short). The database is seeded with a supplier, a product, an order and a purchase order, so path
ids often hit real rows; the merchant and supplier credentials go with the security scheme each
operation names.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from litestar.testing import AsyncTestClient
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from app.db import Database
from app.idempotency.middleware import MAX_KEY_LENGTH
from app.settings import Settings
from dropship.asgi import create_app
from dropship.simulators import StripeSim
from tests.conftest import SHOPIFY_SECRET, MerchantHandle, make_merchant
from tests.support.routing import SHOP, create_supplier, import_catalog, send_order, wait_pos
from tests.support.shopify import order_payload, sign

#: Failures found by this test whose fix belongs to another change in flight (see each reason).
#: Listed operations are skipped here; empty this set once those fixes are merged.
KNOWN_FAILURES: dict[str, str] = {}

#: Small for CI (the whole run in about two minutes); raise it locally for a deeper search.
MAX_EXAMPLES = int(os.environ.get("DROPSHIP_SCHEMATHESIS_EXAMPLES", "8"))
JSON = "application/json"


@pytest.fixture
def backend() -> str:
    return "sqlite"  # overrides conftest's two-backend parametrisation: this test runs once


@pytest.fixture
def stripe_api() -> Iterator[StripeSim]:
    with StripeSim(platform_key="sk_test_schemathesis0000").serving() as sim:
        yield sim


@pytest.fixture
def settings(settings: Settings, stripe_api: StripeSim) -> Settings:
    """Every optional inbound channel configured, as a deployment that uses it would be (an
    unconfigured one answers 503, which the fuzzer rightly counts as a server error)."""
    return settings.model_copy(
        update={
            "aftership_webhook_secret": "schemathesis-aftership",
            # Stripe is the local simulator: a fuzzed key of the right shape is refused (422).
            "stripe_api_base": stripe_api.api_base,
            "stripe_secret_key": "sk_test_schemathesis0000",
            "stripe_webhook_secret": "whsec_schemathesis",
        }
    )


@pytest.fixture
async def seeded(settings: Settings, db: Database) -> dict[str, Any]:
    """Real rows to aim at, made the way users make them (API, webhook, workers)."""
    shop: MerchantHandle = await make_merchant(db, SHOP, auto_route=True)
    app = create_app(settings, run_workers=True, configure_logs=False)
    async with AsyncTestClient(app, timeout=30) as client:
        supplier = await create_supplier(client, shop, name="PortalCo", connector="portal")
        # The one the merchant API's supplier ids aim at: rotating its key (rotate-key is
        # fuzzed too) must not lock the supplier API's own credential out.
        spare = await create_supplier(client, shop, name="SpareCo", connector="portal")
        await import_catalog(client, shop, ["IPOD2008RED,PortalCo,PC-RED,75.50,USD,50,4,*,1"])
        payload = order_payload()
        await send_order(client, line_items=[dict(payload["line_items"][1], quantity=2)])
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "placed")
        key = {"Authorization": f"Bearer {supplier['api_key']}"}
        shipped = await client.post(
            f"/supplier/v1/orders/{po['id']}/shipments",
            json={
                "carrier": "UPS",
                "tracking_number": "1Z999",
                "lines": [{"sku": "PC-RED", "quantity": 1}],
            },
            headers=key,
        )
        assert shipped.status_code == 201, shipped.text
        products = (await client.get("/api/v1/supplier-products", headers=shop.headers)).json()
        rules = await client.post(
            "/api/v1/routing/rules", json={"name": "default"}, headers=shop.headers
        )
        assert rules.status_code == 201, rules.text
    return {
        "merchant_token": shop.token,
        "supplier_key": supplier["api_key"],
        "supplier_id": spare["supplier"]["id"],
        "order_id": po["order_id"],
        "po_id": po["id"],
        "shipment_id": shipped.json()["id"],
        "product_id": products["items"][0]["id"],
        "rule_id": rules.json()["id"],
    }


@pytest.fixture
def api_schema(request: pytest.FixtureRequest, settings: Settings, seeded: dict[str, Any]) -> Any:
    # schemathesis 4.32's lazy schema renames the test node through ``_nodeid``, which pytest 9
    # no longer has (the id lives in ``_id``): give it the attribute it reads and writes.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    ids = {name: seeded[name] for name in seeded if name.endswith("_id")}
    config = SchemathesisConfig.from_dict(
        {
            "seed": 20261201,
            # The checks are about conformance, not latency: on a loaded CI box one answer once took
            # longer than schemathesis's default 10 s, and the same case answered at once on replay.
            "request-timeout": 60,
            # Half the cases aim at the seeded rows, the others at ids that do not exist.
            "dictionaries": {
                "shop": {"values": [SHOP]},
                "topic": {"values": ["orders/create", "orders/updated", "app/uninstalled"]},
                **{name: {"values": [value]} for name, value in ids.items()},
            },
            "parameters": {
                "header.X-Shopify-Shop-Domain": {"dictionary": "shop", "probability": 0.5},
                "header.X-Shopify-Topic": {"dictionary": "topic", "probability": 0.5},
                **{f"path.{name}": {"dictionary": name, "probability": 0.5} for name in ids},
            },
            "auth": {
                "openapi": {
                    "merchantToken": {"bearer": seeded["merchant_token"]},
                    "supplierKey": {"bearer": seeded["supplier_key"]},
                }
            },
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
            },
            "generation": {"max-examples": MAX_EXAMPLES},
            "phases": {"stateful": {"enabled": False}},
        }
    )
    # With its in-process workers, as `dropship serve` runs it (and as /health/ready expects).
    app = create_app(settings, run_workers=True, configure_logs=False)
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app, config=config)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")
if KNOWN_FAILURES:
    schema = schema.exclude(operation_id=sorted(KNOWN_FAILURES))


@schema.parametrize()
@hypothesis_settings(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    max_examples=MAX_EXAMPLES,
    derandomize=True,
)
def test_api_conforms_to_its_openapi_document(case: Case) -> None:
    headers = case.headers
    if headers and len(headers.get("Idempotency-Key", "")) in range(1, MAX_KEY_LENGTH + 1):
        # Generated keys repeat across cases with other bodies: every one after the first would
        # be a 422 and never reach the handler. A fresh key still goes through the middleware.
        headers["Idempotency-Key"] = uuid.uuid4().hex
    if case.operation.path == "/webhooks/shopify" and (raw := _json_bytes(case.body)) is not None:
        # Signed as Shopify signs, so the fuzzed headers and bodies get past the HMAC check
        # (``data`` takes precedence over the ``json`` schemathesis would send).
        signed = {"X-Shopify-Hmac-Sha256": sign(raw, SHOPIFY_SECRET), "Content-Type": JSON}
        case.validate_response(case.call(headers=signed, data=raw))
        return
    case.call_and_validate()


def _json_bytes(body: Any) -> bytes | None:
    try:
        return json.dumps(body).encode()
    except (TypeError, ValueError):  # not JSON (a negative case's raw bytes, NOT_SET)
        return None
