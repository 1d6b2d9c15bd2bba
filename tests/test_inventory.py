"""``PUT /supplier/v1/inventory``: a supplier reports stock (and cost) by SKU, set-based, for
its own catalog only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import event, insert, select

from app.db import Database
from app.main import create_app
from app.settings import Settings
from app.suppliers.models import SupplierProduct
from tests.conftest import MerchantHandle
from tests.support.portal import bearer, offer, portal_supplier

Client = AsyncTestClient[Litestar]
PATH = "/supplier/v1/inventory"


@pytest.fixture
def app(settings: Settings) -> Litestar:
    # No workers: every statement on the engine during a request is the request's own.
    return create_app(settings, configure_logs=False)


@pytest.fixture
async def suppliers(client: Client, merchant: MerchantHandle) -> dict[str, Any]:
    """A offers RED (A-RED) and BLUE (A-BLUE); B offers RED under the same supplier SKU."""
    a = await portal_supplier(client, merchant, "A")
    b = await portal_supplier(client, merchant, "B")
    for s, sku, theirs in ((a, "RED", "A-RED"), (a, "BLUE", "A-BLUE"), (b, "RED", "A-RED")):
        await offer(
            client, merchant, s["supplier"]["id"], sku, supplier_sku=theirs, unit_cost="3.10"
        )
    return {"a": a, "b": b}


async def levels(db: Database) -> dict[tuple[str, str], tuple[int, Decimal]]:
    async with db.sessionmaker() as session:
        rows = (await session.execute(select(SupplierProduct))).scalars().all()
    return {(str(p.supplier_id), p.sku): (p.stock, p.unit_cost) for p in rows}


async def put(client: Client, supplier: dict[str, Any], rows: list[dict[str, Any]]) -> Any:
    return await client.put(PATH, json=rows, headers=bearer(supplier["api_key"]))


class TestInventory:
    async def test_by_supplier_sku_and_by_merchant_sku(
        self, client: Client, db: Database, suppliers: dict[str, Any]
    ) -> None:
        a, b = suppliers["a"]["supplier"]["id"], suppliers["b"]["supplier"]["id"]
        r = await put(
            client,
            suppliers["a"],
            [{"sku": "A-RED", "quantity": 7}, {"sku": "BLUE", "quantity": 0, "unit_cost": "2.50"}],
        )
        assert (r.status_code, r.json()) == (200, {"updated": 2, "unknown": []})
        assert await levels(db) == {
            (a, "RED"): (7, Decimal("3.10")),  # stock only: the cost stays
            (a, "BLUE"): (0, Decimal("2.50")),  # with a cost: updated
            (b, "RED"): (5, Decimal("3.10")),  # same SKUs, other supplier: untouched
        }
        # Our SKU for the same offer works too, and B's own report touches only B.
        r = await put(client, suppliers["b"], [{"sku": "RED", "quantity": 1, "unit_cost": "9"}])
        assert r.json() == {"updated": 1, "unknown": []}
        assert await levels(db) == {
            (a, "RED"): (7, Decimal("3.10")),
            (a, "BLUE"): (0, Decimal("2.50")),
            (b, "RED"): (1, Decimal("9.00")),
        }

    async def test_several_rows_for_one_product_the_last_wins(
        self, client: Client, db: Database, suppliers: dict[str, Any]
    ) -> None:
        a = suppliers["a"]["supplier"]["id"]
        r = await put(
            client,
            suppliers["a"],
            [
                {"sku": "A-RED", "quantity": 5},
                {"sku": "RED", "quantity": 1, "unit_cost": "2.00"},  # the same offer, later
                {"sku": "BLUE", "quantity": 4, "unit_cost": "1.00"},
                {"sku": "A-BLUE", "quantity": 2},  # stock only: the cost above stays
            ],
        )
        assert (r.status_code, r.json()) == (200, {"updated": 2, "unknown": []})
        got = await levels(db)
        assert (got[(a, "RED")], got[(a, "BLUE")]) == (
            (1, Decimal("2.00")),
            (2, Decimal("1.00")),
        )

    async def test_unknown_skus_are_listed_in_order(
        self, client: Client, db: Database, suppliers: dict[str, Any]
    ) -> None:
        before = await levels(db)
        r = await put(
            client,
            suppliers["b"],
            # A-BLUE is A's, not B's.
            [{"sku": "NOPE", "quantity": 1}, {"sku": "A-BLUE", "quantity": 2}],
        )
        assert (r.status_code, r.json()) == (200, {"updated": 0, "unknown": ["NOPE", "A-BLUE"]})
        assert await levels(db) == before

    async def test_empty_report_changes_nothing(
        self, client: Client, db: Database, suppliers: dict[str, Any]
    ) -> None:
        before = await levels(db)
        r = await put(client, suppliers["a"], [])
        assert (r.status_code, r.json()) == (200, {"updated": 0, "unknown": []})
        assert await levels(db) == before

    async def test_updated_at_moves(
        self, client: Client, merchant: MerchantHandle, suppliers: dict[str, Any]
    ) -> None:
        params = {"supplier_id": suppliers["a"]["supplier"]["id"], "sku": "RED"}
        get = await client.get("/api/v1/supplier-products", params=params, headers=merchant.headers)
        [before] = get.json()["items"]
        await put(client, suppliers["a"], [{"sku": "RED", "quantity": 3}])
        get = await client.get("/api/v1/supplier-products", params=params, headers=merchant.headers)
        [after] = get.json()["items"]
        assert after["stock"] == 3
        assert after["updated_at"] > before["updated_at"]

    async def test_at_most_10000_rows(
        self, client: Client, db: Database, suppliers: dict[str, Any]
    ) -> None:
        before = await levels(db)
        unknown = [{"sku": f"X{i}", "quantity": 1} for i in range(9_999)]
        rows = [{"sku": "A-RED", "quantity": 8}, *unknown]
        r = await put(client, suppliers["a"], rows)
        assert r.status_code == 200, r.text
        assert (r.json()["updated"], len(r.json()["unknown"])) == (1, 9_999)
        r = await put(client, suppliers["a"], [*rows, {"sku": "A-BLUE", "quantity": 9}])
        assert r.status_code == 400
        assert r.json()["detail"] == "body: at most 10000 rows per call, got 10001"
        assert r.json()["extra"]["field"] == "body"
        a = suppliers["a"]["supplier"]["id"]
        assert (await levels(db))[(a, "RED")] == (8, before[(a, "RED")][1])
        assert (await levels(db))[(a, "BLUE")] == before[(a, "BLUE")]


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


class TestSetBased:
    async def test_a_constant_number_of_statements_for_1000_rows(
        self, client: Client, db: Database, merchant: MerchantHandle, suppliers: dict[str, Any]
    ) -> None:
        a = suppliers["a"]["supplier"]["id"]
        async with db.transaction() as session:
            await session.execute(
                insert(SupplierProduct),
                [
                    {
                        "merchant_id": merchant.id,
                        "supplier_id": uuid.UUID(a),
                        "sku": f"BULK-{i}",
                        "supplier_sku": f"A-BULK-{i}",
                        "unit_cost": Decimal("1.00"),
                        "currency": "USD",
                        "stock": 0,
                    }
                    for i in range(1_000)
                ],
            )
        app_db: Database = client.app.state.services.db

        async def run(n: int) -> list[str]:
            rows = [
                {"sku": f"A-BULK-{i}", "quantity": n + i}
                | ({"unit_cost": f"{i}.25"} if i % 2 else {})
                for i in range(n)
            ]
            with statements(app_db) as seen:
                r = await put(client, suppliers["a"], rows)
            assert (r.status_code, r.json()) == (200, {"updated": n, "unknown": []})
            return seen

        few = await run(10)
        many = await run(1_000)
        # The key check, one read of the supplier's catalog, one UPDATE (executemany) for the
        # rows with a cost and one for the rest: the same four for 10 rows or 1,000.
        assert [" ".join(s.split()[:2]).upper() for s in many] == [
            "SELECT SUPPLIERS.MERCHANT_ID,",
            "SELECT SUPPLIER_PRODUCTS.ID,",
            "UPDATE SUPPLIER_PRODUCTS",
            "UPDATE SUPPLIER_PRODUCTS",
        ]
        assert len(few) == len(many) == 4
        got = await levels(db)
        assert got[(a, "BULK-0")] == (1_000, Decimal("1.00"))
        assert got[(a, "BULK-999")] == (1_999, Decimal("999.25"))
        assert got[(a, "BULK-998")] == (1_998, Decimal("1.00"))
