"""Helpers for the merchant order API tests: request bodies, catalog rows, polling."""

from __future__ import annotations

import copy
import uuid
from decimal import Decimal
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.db import Database
from app.suppliers.models import Supplier, SupplierProduct
from tests.conftest import MerchantHandle
from tests.support.wait import eventually

Client = AsyncTestClient[Litestar]

ADDRESS: dict[str, Any] = {
    "name": "Ada Lovelace",
    "address1": "12 Congress Ave",
    "city": "Austin",
    "province_code": "TX",
    "zip": "78701",
    "country_code": "US",
}


def order_body(reference: str | None = "PO-1001", **overrides: Any) -> dict[str, Any]:
    """A valid manual order: 2 x SKU-RED at 10.50 + 1 x SKU-BLUE at 4.99."""
    body: dict[str, Any] = {
        "currency": "USD",
        "email": "ada@example.com",
        "shipping_address": copy.deepcopy(ADDRESS),
        "lines": [
            {"sku": "SKU-RED", "quantity": 2, "price": "10.50", "title": "Red mug"},
            {"sku": "SKU-BLUE", "quantity": 1, "price": "4.99"},
        ],
    }
    if reference is not None:
        body["reference"] = reference
    body.update(overrides)
    return body


async def create_order(
    client: Client, merchant: MerchantHandle, reference: str | None = "PO-1001", **overrides: Any
) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/orders", json=order_body(reference, **overrides), headers=merchant.headers
    )
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


async def add_catalog(
    db: Database, merchant: MerchantHandle, *skus: str, status: str = "active"
) -> uuid.UUID:
    """A supplier of the merchant offering ``skus`` (so validation finds them)."""
    async with db.transaction() as s:
        supplier = Supplier(
            merchant_id=merchant.id,
            name=f"Supplier {uuid.uuid4().hex[:6]}",
            connector="portal",
            status=status,
        )
        s.add(supplier)
        await s.flush()
        for sku in skus:
            s.add(
                SupplierProduct(
                    merchant_id=merchant.id,
                    supplier_id=supplier.id,
                    sku=sku,
                    supplier_sku=f"SUP-{sku}",
                    unit_cost=Decimal("3.10"),
                    currency="USD",
                    stock=100,
                )
            )
    return supplier.id


async def count(db: Database, model: Any, **where: Any) -> int:
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    async with db.sessionmaker() as session:
        return int(await session.scalar(query) or 0)


async def get_order(client: Client, merchant: MerchantHandle, order_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=merchant.headers)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def wait_for_status(
    client: Client, merchant: MerchantHandle, order_id: str, status: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        order = await get_order(client, merchant, order_id)
        return order if order["status"] == status else None

    return await eventually(probe)


async def all_pages(
    client: Client, merchant: MerchantHandle, path: str, limit: int, **params: Any
) -> list[list[dict[str, Any]]]:
    """Every page of a list endpoint; asserts the last page (only) has no next_cursor."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        r = await client.get(path, params=query, headers=merchant.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not end"
