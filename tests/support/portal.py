"""Helpers for the supplier API tests: portal suppliers and catalog rows made through the
merchant API, and manual orders routed to them by the workers."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import MerchantHandle
from tests.support.orders import order_body
from tests.support.routing import create_supplier
from tests.support.wait import eventually

Client = AsyncTestClient[Litestar]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def portal_supplier(client: Client, shop: MerchantHandle, name: str) -> dict[str, Any]:
    """A portal supplier without email notices: ``{"supplier": ..., "api_key": ...}``."""
    return await create_supplier(
        client, shop, name=name, connector="portal", config={"email_notice": False}
    )


async def offer(
    client: Client,
    shop: MerchantHandle,
    supplier_id: str,
    sku: str,
    *,
    supplier_sku: str | None = None,
    unit_cost: str = "3.10",
    stock: int = 5,
    priority: int = 1,
) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/supplier-products",
        json={
            "supplier_id": supplier_id,
            "sku": sku,
            "supplier_sku": supplier_sku or f"{sku}-S",
            "unit_cost": unit_cost,
            "currency": "USD",
            "stock": stock,
            "priority": priority,
        },
        headers=shop.headers,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def order_pos(
    client: Client, shop: MerchantHandle, order_id: str, **params: Any
) -> list[dict[str, Any]]:
    """The purchase orders of one order, as the merchant sees them (oldest first)."""
    r = await client.get("/api/v1/purchase-orders", params=params, headers=shop.headers)
    assert r.status_code == 200, r.text
    return sorted(
        (p for p in r.json()["items"] if p["order_id"] == order_id), key=lambda p: p["created_at"]
    )


async def wait_order_pos(
    client: Client, shop: MerchantHandle, order_id: str, predicate: Any, wait: float = 45
) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        pos = await order_pos(client, shop, order_id)
        return pos if predicate(pos) else None

    return await eventually(probe, timeout=wait)


async def routed_order(
    client: Client,
    shop: MerchantHandle,
    reference: str,
    lines: list[dict[str, Any]],
    *,
    expect: int = 1,
) -> tuple[str, list[dict[str, Any]]]:
    """A manual order routed (by the workers; the merchant has ``auto_route``) and placed:
    its id and its ``expect`` purchase orders, none of them still pending."""
    r = await client.post(
        "/api/v1/orders", json=order_body(reference, lines=lines), headers=shop.headers
    )
    assert r.status_code == 201, r.text
    order_id = str(r.json()["id"])
    pos = await wait_order_pos(
        client,
        shop,
        order_id,
        lambda p: len(p) == expect and all(x["status"] != "pending" for x in p),
    )
    return order_id, pos


def line(sku: str, quantity: int = 1, price: str = "10.50") -> dict[str, Any]:
    return {"sku": sku, "quantity": quantity, "price": price}
