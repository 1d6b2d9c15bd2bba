"""The worker's hot path, from a stored Shopify ``orders/create`` webhook to purchase orders
placed, runs a known number of SQL statements: counted by kind, per job, so a regression (an
extra per-row flush, one more load of the same rows, one more job hop) fails here.

The API stores the webhook (no workers in the app); the test then plays the relay and the
broker itself, running every job the outbox holds, one at a time, in order, until none is
left: the count is exact, with no timing in it. Only the statements of the jobs are counted
(the relay's SELECT/DELETE of the outbox is not: it is per batch, not per order).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import respx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import delete, event, func, select

from app.db import Database
from app.jobs.models import OutboxMessage
from app.jobs.task import REGISTRY, TaskContext, discover
from app.main import create_app
from app.orders.models import Order
from app.purchasing.models import PurchaseOrder
from app.security import SecretBox
from app.settings import Settings
from tests.conftest import MerchantHandle, make_merchant
from tests.support.routing import SHOP, create_supplier, import_catalog, send_order
from tests.support.supplier_sim import BASE_URL, SupplierSim, rest_config

Client = AsyncTestClient[Litestar]

#: The jobs of the hot path, in the order they run.
HOT = ("webhook.process", "order.validate", "order.route", "purchase_order.place")


@contextmanager
def counting(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    def begin(conn: Any) -> None:
        seen.append("BEGIN")

    def commit(conn: Any) -> None:
        seen.append("COMMIT")

    def rollback(conn: Any) -> None:
        seen.append("ROLLBACK")

    engine = db.engine.sync_engine
    hooks = {
        "before_cursor_execute": record,
        "begin": begin,
        "commit": commit,
        "rollback": rollback,
    }
    for name, fn in hooks.items():
        event.listen(engine, name, fn)
    try:
        yield seen
    finally:
        for name, fn in hooks.items():
            event.remove(engine, name, fn)


def kind(statement: str) -> str:
    return statement.lstrip().split(None, 1)[0].upper()


@pytest.fixture
def api(settings: Settings) -> Litestar:
    return create_app(settings, configure_logs=False)  # the API only: no workers


@pytest.fixture
async def client(api: Litestar) -> Any:
    async with AsyncTestClient(api, timeout=30) as c:
        yield c


@pytest.fixture
def sim() -> Iterator[SupplierSim]:
    simulator = SupplierSim()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"{BASE_URL}/orders").mock(side_effect=simulator.place)
        yield simulator


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, SHOP, auto_route=True)


async def run_jobs(ctx: TaskContext) -> tuple[dict[str, Counter[str]], Counter[str]]:
    """Run every job of the outbox, oldest first, until it is empty: statements by kind of the
    hot-path jobs (per task) and how many jobs of each task ran."""
    registry = discover()
    per_task: dict[str, Counter[str]] = {}
    ran: Counter[str] = Counter()
    for _ in range(200):
        async with ctx.db.transaction() as session:
            row = (
                await session.execute(
                    select(OutboxMessage.id, OutboxMessage.actor, OutboxMessage.args)
                    .order_by(OutboxMessage.available_at, OutboxMessage.id)
                    .limit(1)
                )
            ).first()
            if row is None:
                return per_task, ran
            await session.execute(delete(OutboxMessage).where(OutboxMessage.id == row.id))
        task = registry.tasks[row.actor]
        ran[row.actor] += 1
        with counting(ctx.db) as seen:
            await task(ctx, *row.args)
        if row.actor in HOT:
            if os.environ.get("HOT_TRACE"):
                width = int(os.environ.get("HOT_TRACE_WIDTH", "150"))
                shown = (" ".join(x.split())[:width] for x in seen)
                print("--", row.actor, *shown, sep="\n  ")
            per_task.setdefault(row.actor, Counter()).update(kind(s) for s in seen)
    raise AssertionError("the outbox never emptied")


async def test_one_webhook_to_placed_purchase_orders(
    settings: Settings, client: Client, db: Database, shop: MerchantHandle, sim: SupplierSim
) -> None:
    await create_supplier(client, shop, name="RestCo", connector="rest_json", config=rest_config())
    await create_supplier(client, shop, name="PortalCo", connector="portal")
    report = await import_catalog(
        client,
        shop,
        [
            "IPOD2008GREEN,RestCo,RC-GREEN,80.00,USD,100,3,*,1",
            "IPOD2008RED,RestCo,RC-RED,75.50,USD,100,4,*,1",
            "IPOD2008BLACK,PortalCo,PC-BLACK,70.00,USD,100,4,*,1",
        ],
    )
    assert (report["created"], report["rejected"]) == (3, 0)
    await send_order(client)

    assert REGISTRY is discover()
    ctx = TaskContext(settings=settings, db=db, box=SecretBox(settings.resolved_secret_key()))
    try:
        per_task, ran = await run_jobs(ctx)
    finally:
        await ctx.aclose()

    async with db.sessionmaker() as session:
        statuses = sorted((await session.scalars(select(PurchaseOrder.status))).all())
        orders = await session.scalar(select(func.count()).select_from(Order))
        order_status = await session.scalar(select(Order.status))
    assert (orders, order_status, statuses) == (1, "routed", ["accepted", "placed"])
    assert len(sim.orders) == 1

    by_task = {name: dict(sorted(c.items())) for name, c in per_task.items()}
    total: Counter[str] = Counter()
    for c in per_task.values():
        total.update(c)
    print("hot path statements by task:", by_task, "total:", dict(total), "jobs:", dict(ran))
    assert {k: ran[k] for k in HOT if ran[k]} == EXPECTED_JOBS
    assert by_task == expected_by_task(db.dialect)
    assert sum(total.values()) == EXPECTED_TOTAL


#: How many jobs of the hot path one order takes: the order is validated and routed in its
#: webhook.process job (before: webhook.process, order.validate and order.route, 94 statements).
#: A purchase order is loaded with its lines in one SELECT; timeline entries go in fewer INSERTs.
#: The portal purchase order is placed where it is routed: no job of its own.
EXPECTED_JOBS = {"webhook.process": 1, "purchase_order.place": 1}
#: Statements by kind, per task (all its runs), for one 3-line order routed to two suppliers
#: (one REST, one portal). SQLite and PostgreSQL run the same statements (a row lock is a
#: clause of the SELECT, not a statement of its own).
EXPECTED_BY_TASK = {
    # 37 -> 21: the delivery and its merchant in one SELECT; the order claimed by its INSERT
    # ... ON CONFLICT DO NOTHING (no lookup, no savepoint) and updated once at the single flush
    # with its final status; the customer one upsert; the stock one UPDATE; no savepoints (the
    # payload is judged before any write, a stock conflict undoes only its reservation).
    # 21 -> 24: the portal purchase order placed here (its suppliers' SELECT, its event and
    # reactions; its row inserted as placed, its timeline in the one INSERT).
    # 24 -> 20: the order's three events (created, routed, placed) written together at the
    # end, one INSERT each for events, reactions and jobs (were three, three and two).
    "webhook.process": {
        "BEGIN": 1,
        "COMMIT": 1,
        "INSERT": 9,
        "SELECT": 6,
        "UPDATE": 3,
    },
    # 29 -> 25: the claim loads the purchase order with its supplier, the mark with its order
    # (one SELECT each, was two). 25 -> 11: only the REST purchase order has a placement job.
    "purchase_order.place": {
        "BEGIN": 2,
        "COMMIT": 2,
        "INSERT": 3,
        "SELECT": 2,
        "UPDATE": 2,
    },
}
#: 46 -> 35: the portal placement moved into the routing transaction. 35 -> 31: the webhook
#: job's events written in one batch.
EXPECTED_TOTAL = 31


def expected_by_task(dialect: str) -> dict[str, dict[str, int]]:
    """On PostgreSQL the customer is taken in by one ``WITH inserted AS (INSERT … ON CONFLICT
    DO NOTHING) SELECT …`` that reads a returning customer without locking its row; SQLite
    keeps its ``INSERT … ON CONFLICT DO UPDATE`` (its writers are serialised anyway)."""
    if dialect != "postgresql":
        return EXPECTED_BY_TASK
    process = dict(EXPECTED_BY_TASK["webhook.process"])
    process["INSERT"] -= 1
    process["WITH"] = 1
    return {**EXPECTED_BY_TASK, "webhook.process": dict(sorted(process.items()))}


async def test_the_hot_path_compiles_nothing_twice(
    settings: Settings, client: Client, db: Database, shop: MerchantHandle, sim: SupplierSim
) -> None:
    """Every statement of a second order comes from SQLAlchemy's compiled cache. A statement
    that cannot be cached (PostgreSQL's ``ON CONFLICT`` before SQLAlchemy 2.1, a type without
    ``cache_ok``) is compiled again on every order: that cost 12 % of the worker's CPU."""
    await create_supplier(client, shop, name="RestCo", connector="rest_json", config=rest_config())
    await create_supplier(client, shop, name="PortalCo", connector="portal")
    await import_catalog(
        client,
        shop,
        [
            "IPOD2008GREEN,RestCo,RC-GREEN,80.00,USD,100,3,*,1",
            "IPOD2008RED,RestCo,RC-RED,75.50,USD,100,4,*,1",
            "IPOD2008BLACK,PortalCo,PC-BLACK,70.00,USD,100,4,*,1",
        ],
    )
    seen: list[tuple[str, str]] = []

    def record(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any
    ) -> None:
        seen.append((context.cache_hit.name, " ".join(statement.split())[:100]))

    ctx = TaskContext(settings=settings, db=db, box=SecretBox(settings.resolved_secret_key()))
    try:
        await send_order(client, id=450789470, name="#1001", order_number=1001)
        await run_jobs(ctx)  # the first order fills the cache
        event.listen(db.engine.sync_engine, "after_cursor_execute", record)
        try:
            await send_order(client, id=450789471, name="#1002", order_number=1002)
            _, ran = await run_jobs(ctx)
        finally:
            event.remove(db.engine.sync_engine, "after_cursor_execute", record)
    finally:
        await ctx.aclose()
    assert ran["webhook.process"] == 1
    assert ran["purchase_order.place"] == 1
    assert len(seen) > 20  # the whole path was watched
    assert [s for s in seen if s[0] != "CACHE_HIT"] == []
