"""Helpers for tests that route orders to suppliers through the merchant API."""

from __future__ import annotations

import json
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import SHOPIFY_SECRET, MerchantHandle
from tests.support.shopify import order_payload, webhook_headers
from tests.support.wait import eventually

Client = AsyncTestClient[Litestar]
SHOP = "route-shop.myshopify.com"


async def create_supplier(client: Client, shop: MerchantHandle, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/suppliers", json=body, headers=shop.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def import_catalog(client: Client, shop: MerchantHandle, rows: list[str]) -> dict[str, Any]:
    header = "sku,supplier,supplier_sku,unit_cost,currency,stock,lead_time_days,ships_to,priority"
    r = await client.post(
        "/api/v1/supplier-products/import",
        content="\n".join([header, *rows]).encode(),
        headers={**shop.headers, "Content-Type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def send_order(client: Client, **overrides: Any) -> None:
    payload = order_payload(**overrides)
    body = json.dumps(payload).encode()
    r = await client.post(
        "/webhooks/shopify",
        content=body,
        headers=webhook_headers(body, secret=SHOPIFY_SECRET, shop=SHOP),
    )
    assert r.status_code == 200, r.text


async def purchase_orders(
    client: Client, shop: MerchantHandle, **params: Any
) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/purchase-orders", params=params, headers=shop.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def wait_pos(
    client: Client, shop: MerchantHandle, predicate: Any, wait: float = 45
) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        pos = await purchase_orders(client, shop)
        return pos if predicate(pos) else None

    return await eventually(probe, timeout=wait)
