"""The catalog (``/api/v1/supplier-products``): upsert on (supplier, sku), filters and
pagination, deletion, and tenant isolation. (The CSV import and value checks have their own
tests.)"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.db import Database
from app.suppliers.models import SupplierProduct
from tests.conftest import MerchantHandle
from tests.support.orders import count
from tests.support.routing import create_supplier

Client = AsyncTestClient[Litestar]
PATH = "/api/v1/supplier-products"


async def supplier_id(client: Client, shop: MerchantHandle, name: str) -> str:
    created = await create_supplier(client, shop, name=name, connector="portal")
    return str(created["supplier"]["id"])


async def post(client: Client, shop: MerchantHandle, **body: Any) -> Any:
    return await client.post(PATH, json={"currency": "USD", **body}, headers=shop.headers)


async def listed(client: Client, shop: MerchantHandle, **params: Any) -> list[tuple[str, str]]:
    r = await client.get(PATH, params=params, headers=shop.headers)
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return [(p["supplier_id"], p["sku"]) for p in r.json()["items"]]


class TestUpsert:
    async def test_created_then_updated_in_place(
        self, client: Client, db: Database, merchant: MerchantHandle
    ) -> None:
        sid = await supplier_id(client, merchant, "Acme")
        r = await post(client, merchant, supplier_id=sid, sku="MUG-RED", unit_cost="3.10")
        assert r.status_code == 201, r.text
        first = r.json()
        assert first == {
            "id": first["id"],
            "supplier_id": sid,
            "sku": "MUG-RED",
            "supplier_sku": "MUG-RED",  # their SKU defaults to ours
            "unit_cost": "3.10",
            "currency": "USD",
            "stock": 0,
            "lead_time_days": 0,
            "ships_to": ["*"],
            "priority": 1,
            "updated_at": first["updated_at"],
        }
        r = await post(
            client,
            merchant,
            supplier_id=sid,
            sku="MUG-RED",
            supplier_sku="AC-991",
            unit_cost="2.95",
            currency="EUR",
            stock=40,
            lead_time_days=3,
            ships_to=["CA", "US"],
            priority=2,
        )
        assert r.status_code == 201, r.text
        second = r.json()
        assert second == {
            "id": first["id"],  # the same row
            "supplier_id": sid,
            "sku": "MUG-RED",
            "supplier_sku": "AC-991",
            "unit_cost": "2.95",
            "currency": "EUR",
            "stock": 40,
            "lead_time_days": 3,
            "ships_to": ["CA", "US"],
            "priority": 2,
            "updated_at": second["updated_at"],
        }
        assert second["updated_at"] >= first["updated_at"]
        assert await count(db, SupplierProduct) == 1
        r = await client.get(PATH, headers=merchant.headers)
        assert r.json() == {"items": [second], "next_cursor": None}

    async def test_the_same_sku_at_another_supplier_is_another_offer(
        self, client: Client, db: Database, merchant: MerchantHandle
    ) -> None:
        a = await supplier_id(client, merchant, "A")
        b = await supplier_id(client, merchant, "B")
        ra = await post(client, merchant, supplier_id=a, sku="MUG", unit_cost="1.00")
        rb = await post(client, merchant, supplier_id=b, sku="MUG", unit_cost="2.00")
        assert ra.json()["id"] != rb.json()["id"]
        assert await count(db, SupplierProduct) == 2
        assert await listed(client, merchant, sku="MUG") == [(a, "MUG"), (b, "MUG")]

    async def test_another_merchants_supplier_is_404_and_nothing_is_written(
        self, client: Client, db: Database, merchant: MerchantHandle, other_merchant: MerchantHandle
    ) -> None:
        theirs = await supplier_id(client, other_merchant, "Theirs")
        r = await post(client, merchant, supplier_id=theirs, sku="MUG", unit_cost="1.00")
        assert (r.status_code, r.json()) == (
            404,
            {"status_code": 404, "detail": f"supplier {theirs} not found", "extra": {}},
        )
        missing = str(uuid.uuid4())
        r = await post(client, merchant, supplier_id=missing, sku="MUG", unit_cost="1.00")
        assert (r.status_code, r.json()["detail"]) == (404, f"supplier {missing} not found")
        assert await count(db, SupplierProduct) == 0

    async def test_supplier_id_must_be_a_uuid(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        r = await post(client, merchant, supplier_id="acme", sku="MUG", unit_cost="1.00")
        assert (r.status_code, r.json()["extra"]["field"]) == (400, "supplier_id")


class TestList:
    @pytest.fixture
    async def catalog(self, client: Client, merchant: MerchantHandle) -> dict[str, str]:
        a = await supplier_id(client, merchant, "A")
        b = await supplier_id(client, merchant, "B")
        for sid, sku in ((a, "RED"), (b, "RED"), (a, "BLUE"), (b, "GREEN"), (a, "GREEN")):
            r = await post(client, merchant, supplier_id=sid, sku=sku, unit_cost="1.00")
            assert r.status_code == 201, r.text
        return {"a": a, "b": b}

    async def test_filters(
        self, client: Client, merchant: MerchantHandle, catalog: dict[str, str]
    ) -> None:
        a, b = catalog["a"], catalog["b"]
        # Oldest first.
        assert await listed(client, merchant) == [
            (a, "RED"),
            (b, "RED"),
            (a, "BLUE"),
            (b, "GREEN"),
            (a, "GREEN"),
        ]
        assert await listed(client, merchant, supplier_id=a) == [
            (a, "RED"),
            (a, "BLUE"),
            (a, "GREEN"),
        ]
        assert await listed(client, merchant, sku="GREEN") == [(b, "GREEN"), (a, "GREEN")]
        assert await listed(client, merchant, supplier_id=b, sku="RED") == [(b, "RED")]
        assert await listed(client, merchant, sku="red") == []  # SKUs are exact
        assert await listed(client, merchant, supplier_id=str(uuid.uuid4())) == []
        r = await client.get(PATH, params={"supplier_id": "nope"}, headers=merchant.headers)
        assert (r.status_code, r.json()["extra"]["field"]) == (400, "supplier_id")

    async def test_pagination(
        self, client: Client, merchant: MerchantHandle, catalog: dict[str, str]
    ) -> None:
        a, b = catalog["a"], catalog["b"]
        pages: list[list[tuple[str, str]]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            r = await client.get(PATH, params=params, headers=merchant.headers)
            assert r.status_code == 200, r.text
            pages.append([(p["supplier_id"], p["sku"]) for p in r.json()["items"]])
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert pages == [[(a, "RED"), (b, "RED")], [(a, "BLUE"), (b, "GREEN")], [(a, "GREEN")]]
        # A filter holds across pages.
        r = await client.get(PATH, params={"supplier_id": a, "limit": 2}, headers=merchant.headers)
        assert [p["sku"] for p in r.json()["items"]] == ["RED", "BLUE"]
        r = await client.get(
            PATH,
            params={"supplier_id": a, "limit": 2, "cursor": r.json()["next_cursor"]},
            headers=merchant.headers,
        )
        assert ([p["sku"] for p in r.json()["items"]], r.json()["next_cursor"]) == (["GREEN"], None)

    async def test_another_merchants_catalog_is_not_listed(
        self,
        client: Client,
        merchant: MerchantHandle,
        other_merchant: MerchantHandle,
        catalog: dict[str, str],
    ) -> None:
        assert await listed(client, other_merchant) == []
        assert await listed(client, other_merchant, supplier_id=catalog["a"]) == []
        assert await listed(client, other_merchant, sku="RED") == []


class TestDelete:
    async def test_delete_then_404(
        self, client: Client, db: Database, merchant: MerchantHandle
    ) -> None:
        sid = await supplier_id(client, merchant, "A")
        keep = (await post(client, merchant, supplier_id=sid, sku="KEEP", unit_cost="1")).json()
        gone = (await post(client, merchant, supplier_id=sid, sku="GONE", unit_cost="1")).json()
        r = await client.delete(f"{PATH}/{gone['id']}", headers=merchant.headers)
        assert (r.status_code, r.content) == (204, b"")
        assert await listed(client, merchant) == [(sid, "KEEP")]
        r = await client.delete(f"{PATH}/{gone['id']}", headers=merchant.headers)
        assert r.json() == {
            "status_code": 404,
            "detail": f"supplier product {gone['id']} not found",
            "extra": {},
        }
        assert await count(db, SupplierProduct, id=uuid.UUID(keep["id"])) == 1

    async def test_another_merchants_offer_is_404_and_kept(
        self, client: Client, db: Database, merchant: MerchantHandle, other_merchant: MerchantHandle
    ) -> None:
        theirs = await supplier_id(client, other_merchant, "Theirs")
        product = (
            await post(client, other_merchant, supplier_id=theirs, sku="MUG", unit_cost="1")
        ).json()
        r = await client.delete(f"{PATH}/{product['id']}", headers=merchant.headers)
        assert (r.status_code, r.json()["detail"]) == (
            404,
            f"supplier product {product['id']} not found",
        )
        assert await count(db, SupplierProduct, id=uuid.UUID(product["id"])) == 1
        assert await listed(client, other_merchant) == [(theirs, "MUG")]
