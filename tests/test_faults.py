"""Proof under faults: the whole pipeline under load, one real component broken mid-run, and
afterwards the ledger exact (tests/support/ledger.py): nothing lost, nothing doubled.

Each test runs the API (``dropship serve``) and two ``dropship worker`` processes on PostgreSQL
+ Redis against loopback simulators (tests/support/faults.py), sends 30 signed orders (3 lines:
2 purchase orders each, one REST, one portal) with 10% redeliveries, waits for the state that
makes the fault bite, breaks the component, repairs it, waits (bounded, generously) until every
order is placed, shipped, synced to Shopify, emailed and, for the orders paid through Stripe,
refunded, and checks the ledger. PostgreSQL + Redis only (these faults do not exist on the
embedded SQLite backend); skipped without the servers like the other production-backend tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy import text

from app import migrate
from app.db import Database
from app.fulfillment import refunds as shopify_refunds
from app.fulfillment import service as fulfillment
from app.mail import tasks as mail
from app.refunds import service as refunds
from tests.support import faults
from tests.support import services as svc
from tests.support.faults import Sender, World, make_hooks, outside_world

N_ORDERS = 30
RATE = 10.0
SETTLE_TIMEOUT = 180.0
#: A job cut off while it holds a claim (an email being sent, a fulfillment being pushed to
#: Shopify, a refund being asked of Stripe) is taken over by the sweeper once the claim's lease
#: runs out, never sooner (a slow sender may still be alive). A fault that can strand a claim
#: (a worker killed, every connection cut) therefore settles within that much more.
CLAIM_RECOVERY = max(m.LEASE.total_seconds() for m in (mail, fulfillment, shopify_refunds, refunds))
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


async def run(
    world: World, fault: Fault | None, *, settle_timeout: float = SETTLE_TIMEOUT
) -> Sender:
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
        counts = await world.settled(N_ORDERS, timeout=settle_timeout)
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
    return sender


# --------------------------------------------------------------------------------- faults


async def test_redis_killed_and_restarted(world: World, redis_server: svc.Redis) -> None:
    await run(world, lambda w, sender: faults.redis_killed(w, redis_server))


async def test_worker_sigkilled_mid_placement(world: World) -> None:
    await run(
        world,
        lambda w, sender: faults.worker_killed(w),
        settle_timeout=SETTLE_TIMEOUT + CLAIM_RECOVERY,
    )


async def test_postgres_restarted(world: World, pg_server: svc.Postgres) -> None:
    await run(
        world,
        lambda w, sender: faults.postgres_restarted(w, pg_server),
        settle_timeout=SETTLE_TIMEOUT + CLAIM_RECOVERY,
    )


async def test_supplier_500s_and_timeouts(world: World) -> None:
    sender = await run(world, lambda w, sender: faults.supplier_failing(w))

    # The ledger does see what is lost or doubled: spoil four things, get four findings.
    key = next(iter(world.supplier.sim.per_key))
    world.supplier.sim.per_key[key] += 1
    store = world.shopify.fulfillment_ids()
    world.shopify.fulfillment_ids = lambda: [*store, store[0]]  # type: ignore[method-assign]
    db = Database(world.pg_url)
    try:
        async with db.transaction() as session:
            await session.execute(
                text(
                    "UPDATE purchase_orders SET status = 'pending' WHERE id = "
                    "(SELECT id FROM purchase_orders ORDER BY id LIMIT 1)"
                )
            )
    finally:
        await db.dispose()
    spoiled = await world.ledger(set(sorted(sender.accepted)[1:]))
    assert set(spoiled.problems) == {
        "supplier_order_twice",
        "fulfillment_twice_in_store",
        "po_line_not_placed",
        "delivery_not_accepted",
    }, str(spoiled)
    assert spoiled.problems["supplier_order_twice"] == ["1 in all", key]


async def test_shopify_429_and_503(world: World) -> None:
    await run(world, lambda w, sender: faults.shopify_refusing(w))


# ---------------------------------------------------------------------------- memory soak

SOAK_RATE = 2.0  # webhooks per second
SOAK_SECONDS = 50.0
SOAK_WARMUP = 15.0
#: Generous: a leak of a few KB per order over 100 orders is not what this catches; a leak
#: per job (every message, every session) is.
RSS_GROWTH_BOUND_MB = 30.0


async def test_worker_memory_stays_flat_under_load(world: World) -> None:
    """A short soak (``bench/e2e.py --soak 3600`` is the long one): the RSS of each worker
    after the warm-up and at the end of a steady load differ by less than the bound."""
    n = int(SOAK_RATE * SOAK_SECONDS * 0.9)
    hooks = make_hooks(n, world.shopify, world.stripe, world.stripe_account)
    sender = Sender(world.base_url, SOAK_RATE)
    bots = [
        asyncio.create_task(world.portal_bot()),
        asyncio.create_task(world.refund_bot()),
        asyncio.create_task(world.sweeper()),
    ]
    sending = asyncio.create_task(sender.run(hooks))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    rss: dict[int, list[tuple[float, float]]] = {p.pid: [] for p in world.workers}
    try:
        while not sending.done():
            for proc in world.workers:
                rss[proc.pid].append((loop.time() - t0, faults.rss_mb(proc.pid)))
            await asyncio.sleep(2.0)
        await sending
    finally:
        world.stop_bots()
        await asyncio.gather(*bots, return_exceptions=True)
    for pid, series in rss.items():
        warm = [mb for t, mb in series if t >= SOAK_WARMUP]
        assert len(warm) >= 5, series
        growth = warm[-1] - warm[0]
        assert growth < RSS_GROWTH_BOUND_MB, (pid, series)
