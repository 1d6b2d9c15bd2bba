"""Proof under faults: the whole pipeline under load, one real component broken mid-run, and
afterwards the ledger exact (tests/support/ledger.py): nothing lost, nothing doubled.

Each test runs the API (``dropship serve``) and two ``dropship worker`` processes on PostgreSQL
+ Redis against loopback simulators (tests/support/faults.py), sends 40 signed orders (3 lines:
2 purchase orders each, one REST, one portal) with 10% redeliveries, waits for the state that
makes the fault bite, breaks the component, repairs it, waits (bounded, generously) until every
order is placed, shipped, synced to Shopify, emailed and, for the orders paid through Stripe,
refunded, and checks the ledger. PostgreSQL + Redis only (these faults do not exist on the
embedded SQLite backend); skipped without the servers like the other production-backend tests.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis as redis_lib

from app import migrate
from tests.support import services as svc
from tests.support.faults import Sender, World, make_hooks, outside_world
from tests.support.wait import eventually

N_ORDERS = 40
RATE = 10.0
SETTLE_TIMEOUT = 180.0
_dbs = itertools.count(1)

Fault = Callable[[World, Sender], Awaitable[None]]


@pytest.fixture(scope="module")
def template_db(pg_server: svc.Postgres) -> str:
    pg_server.psql("CREATE DATABASE faults_template")
    migrate.upgrade(pg_server.url("faults_template"))
    return "faults_template"


@pytest.fixture
async def world(
    pg_server: svc.Postgres, redis_server: svc.Redis, template_db: str, tmp_path: Path
) -> AsyncIterator[World]:
    name = f"faults_{next(_dbs)}"
    pg_server.psql(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    redis_server.start()
    redis_lib.Redis.from_url(redis_server.url).flushall()
    with outside_world() as (supplier, shopify, stripe, inbox):
        w = World(
            pg_url=pg_server.url(name),
            redis_url=redis_server.url,
            tmp=tmp_path,
            supplier=supplier,
            shopify=shopify,
            stripe=stripe,
            inbox=inbox,
        )
        try:
            await w.setup(workers=2)
            yield w
        finally:
            w.stop_bots()
            await asyncio.to_thread(w.stop_all)
            redis_server.start()


async def run(world: World, fault: Fault | None) -> None:
    hooks = make_hooks(N_ORDERS, world.shopify, world.stripe, world.stripe_account)
    sender = Sender(world.base_url, RATE)
    bots = [
        asyncio.create_task(world.portal_bot()),
        asyncio.create_task(world.refund_bot()),
        asyncio.create_task(world.sweeper()),
    ]
    sending = asyncio.create_task(sender.run(hooks))
    try:
        if fault is not None:
            await fault(world, sender)
        await sending
        counts = await world.settled(N_ORDERS, timeout=SETTLE_TIMEOUT)
    finally:
        world.stop_bots()
        await asyncio.gather(*bots, return_exceptions=True)
        if not sending.done():
            sending.cancel()
    assert len(sender.accepted) == N_ORDERS, (sender.refused, counts)
    ledger = await world.ledger(sender.accepted)
    assert ledger.ok, f"{ledger}\ncounts: {counts}\n{world.log_tail(1500)}"
    assert ledger.counts["orders"] == N_ORDERS
    assert ledger.counts["routable_lines"] == 3 * N_ORDERS
    assert ledger.counts["shipments"] == N_ORDERS  # the portal half ships; REST does not here
    assert ledger.counts["refunds"] == N_ORDERS // 10


async def orders_at_least(world: World, n: int) -> bool:
    try:
        return (await world.counts())["pos_placed"] >= n
    except Exception:
        return False


# --------------------------------------------------------------------------------- faults


async def test_redis_killed_and_restarted(world: World, redis_server: svc.Redis) -> None:
    async def fault(w: World, sender: Sender) -> None:
        async def processing() -> bool:
            try:
                return (await w.counts())["orders"] >= 10
            except Exception:
                return False

        await eventually(processing, timeout=90, interval=0.1)
        redis_server.stop()  # SIGKILL; no persistence: every queued job is gone
        try:
            # Work goes on piling up in the outbox (PostgreSQL) that the relay cannot hand over.
            async def stuck() -> bool:
                return (await w.counts())["outbox"] >= 5

            await eventually(stuck, timeout=60, interval=0.1)
        finally:
            redis_server.start()

    await run(world, fault)


async def test_worker_sigkilled_mid_placement(world: World) -> None:
    async def fault(w: World, sender: Sender) -> None:
        await eventually(lambda: orders_at_least(w, 8), timeout=60, interval=0.2)
        sim = w.supplier.sim
        sim.hold.set()  # the supplier makes the orders and holds its answers
        try:
            await eventually(lambda: _true(sim.holding >= 2), timeout=60, interval=0.05)
            victim = w.workers[0]
            await asyncio.to_thread(w.kill_worker, victim)  # SIGKILL: no cleanup, no commit
        finally:
            sim.hold.clear()
        await w.worker_ready(w.start_worker())

    await run(world, fault)


async def test_postgres_restarted(world: World, pg_server: svc.Postgres) -> None:
    async def fault(w: World, sender: Sender) -> None:
        await eventually(lambda: orders_at_least(w, 8), timeout=60, interval=0.2)
        await asyncio.to_thread(
            subprocess.run,
            [
                *pg_server.run_as,
                str(pg_server.bindir / "pg_ctl"),
                "-D",
                str(pg_server.datadir),
                "-l",
                str(pg_server.datadir.parent / "log"),
                "-m",
                "fast",
                "-w",
                "restart",
            ],
            check=True,
            capture_output=True,
        )

    await run(world, fault)


async def test_supplier_500s_and_timeouts(world: World) -> None:
    async def fault(w: World, sender: Sender) -> None:
        await eventually(lambda: orders_at_least(w, 8), timeout=60, interval=0.2)
        sim = w.supplier.sim
        sim.mode = "500"
        try:
            errors = sim.errors
            await eventually(lambda: _true(sim.errors >= errors + 10), timeout=60, interval=0.1)
            sim.mode = "timeout"
            errors = sim.errors
            await eventually(lambda: _true(sim.errors >= errors + 5), timeout=60, interval=0.1)
        finally:
            sim.mode = None

    await run(world, fault)


async def test_shopify_429_and_503(world: World) -> None:
    async def fault(w: World, sender: Sender) -> None:
        async def shipping() -> bool:
            try:
                return (await w.counts())["shipments"] >= 5
            except Exception:
                return False

        await eventually(shipping, timeout=90, interval=0.2)
        w.shopify.outage = (429, 503)
        try:
            await eventually(lambda: _true(w.shopify.refused >= 20), timeout=60, interval=0.1)
        finally:
            w.shopify.outage = ()

    await run(world, fault)


async def _true(value: bool) -> bool:
    return value
