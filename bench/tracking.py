"""One tracking poll cycle over a supplier holding 100,000 open shipments.

    uv run python bench/tracking.py [--shipments 100000] [--latency 0.05] [--rate 20]
                                    [--batch 100] [--worker-threads 8] [--database-url URL]

Starts bench/tracking_supplier.py (a local tracking API: ``--latency`` per request, a batch
endpoint of ``--batch`` numbers, more than ``--rate`` requests in a clock second answered 429),
seeds the shipments set-based (a merchant, a ``rest_json`` supplier whose tracking is that batch
endpoint and whose rate limit is ``--rate``/s, one shipped purchase order per parcel, each with
its ``in_transit`` event already recorded), then runs ONE worker in this process, the way
``dropship serve`` runs it without Redis (``WorkerRuntime``: the in-process broker, the outbox
relay, the scheduler, ``--worker-threads`` threads). The scheduler's first tick enqueues
``tracking.poll``, which adopts the shipments and enqueues the ``tracking.poll_batch`` jobs: the
real tasks through the real code path. The cycle ends when every shipment has been checked.

Prints shipments checked per second, the cycle time, and beside it the floor the rate limit
allows (ceil(shipments / batch) requests at ``--rate``/s), with their ratio; the supplier's own
counters (requests, 429s, the most requests it answered in one second) and the checks: every
shipment checked once, the changed tenth recorded once. Exit status 1 if a check fails or the
cycle misses ``--deadline`` (600 s). SQLite in a temporary directory by default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, insert, select

from app import migrate
from app.db import Database, uuid7
from app.logging import configure_logging
from app.merchants.service import create_merchant
from app.orders.models import Order
from app.purchasing.models import POStatus, PurchaseOrder, Shipment, TrackingEvent
from app.security import SecretBox
from app.settings import Settings
from app.suppliers.models import Supplier
from app.suppliers.service import encrypt_config
from app.tracking.models import TrackingPoll
from tests.support.services import free_port

SECRET = "bench-secret-key"
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
CHUNK = 5_000


def http_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


async def seed(url: str, n: int, port: int, rate: float, batch: int) -> None:
    db = Database(url)
    box = SecretBox(SECRET)
    try:
        async with db.transaction() as session:
            merchant, _ = await create_merchant(session, "bench-store.myshopify.com", "o@e.com")
            config = {
                "base_url": f"http://127.0.0.1:{port}",
                "tracking": {"batch": {"path": "/tracking", "max_numbers": batch}},
            }
            supplier = Supplier(
                merchant_id=merchant.id,
                name="TrackCo",
                connector="rest_json",
                config_encrypted=encrypt_config(box, config),
                rate_limit_per_second=rate,
            )
            order = Order(
                merchant_id=merchant.id,
                source="api",
                name="#BENCH",
                currency="USD",
                subtotal_price=Decimal("1"),
                total_tax=Decimal("0"),
                total_shipping=Decimal("0"),
                total_discounts=Decimal("0"),
                total_price=Decimal("1"),
                tracking_token=uuid.uuid4().hex,
            )
            session.add_all([supplier, order])
            await session.flush()
            mid, sid, oid = merchant.id, supplier.id, order.id
        for start in range(0, n, CHUNK):
            pos, ships, events = [], [], []
            for i in range(start, min(n, start + CHUNK)):
                po_id, ship_id = uuid7(), uuid7()
                pos.append(
                    {
                        "id": po_id,
                        "merchant_id": mid,
                        "order_id": oid,
                        "supplier_id": sid,
                        "number": f"B-{i}",
                        "status": POStatus.SHIPPED,
                        "idempotency_key": f"bench-{po_id}",
                        "currency": "USD",
                        "total_cost": Decimal("1"),
                        "ship_to": {},
                        "placed_at": T0,
                        "shipped_at": T0,
                    }
                )
                ships.append(
                    {
                        "id": ship_id,
                        "purchase_order_id": po_id,
                        "merchant_id": mid,
                        "carrier": "UPS",
                        "tracking_number": f"TN{i}",
                        "status": "in_transit",
                        "shipped_at": T0,
                    }
                )
                events.append({"shipment_id": ship_id, "status": "in_transit", "occurred_at": T0})
            async with db.transaction() as session:
                await session.execute(insert(PurchaseOrder), pos)
                await session.execute(insert(Shipment), ships)
                await session.execute(insert(TrackingEvent), events)
    finally:
        await db.dispose()


async def checked_since(db: Database, t0: datetime) -> tuple[int, datetime | None]:
    async with db.transaction() as session:
        row = (
            await session.execute(
                select(func.count(), func.max(TrackingPoll.last_checked_at)).where(
                    TrackingPoll.last_checked_at >= t0
                )
            )
        ).one()
    return int(row[0]), row[1]


async def cycle(settings: Settings, n: int, deadline: float) -> dict[str, Any]:
    from workers.runtime import WorkerRuntime

    db = Database(settings.database_url, pool_size=5)
    runtime = WorkerRuntime(settings, db)
    cpu0 = time.process_time()
    t0 = datetime.now(UTC)
    started = time.monotonic()
    await runtime.start()  # the scheduler's first tick enqueues tracking.poll
    done, last = 0, None
    try:
        while time.monotonic() - started < deadline:
            # The end is read from the rows (last_checked_at), so a slow probe loses nothing;
            # it scans the schedule table, so it stays rare to leave the worker the CPU.
            await asyncio.sleep(2.0)
            done, last = await checked_since(db, t0)
            if done >= n:
                break
    finally:
        await runtime.stop()
    cpu = time.process_time() - cpu0
    async with db.transaction() as session:
        events = int(await session.scalar(select(func.count()).select_from(TrackingEvent)) or 0)
        out_for_delivery = int(
            await session.scalar(
                select(func.count())
                .select_from(Shipment)
                .where(Shipment.status == "out_for_delivery")
            )
            or 0
        )
    await db.dispose()
    return {
        "checked": done,
        "cycle_s": (last - t0).total_seconds() if last and done >= n else None,
        "elapsed_s": (last - t0).total_seconds() if last else None,
        "events": events,
        "out_for_delivery": out_for_delivery,
        "process_cpu_s": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shipments", type=int, default=100_000)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--rate", type=int, default=20)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--worker-threads", type=int, default=8)
    p.add_argument("--database-url", default=None, help="default: SQLite in a temp directory")
    p.add_argument("--deadline", type=float, default=600.0)
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    url = args.database_url or f"sqlite+aiosqlite:///{tmp / 'dropship.db'}"
    port = free_port()
    log = (tmp / "supplier.log").open("wb")
    sim = subprocess.Popen(
        [sys.executable, "-m", "bench.tracking_supplier", "--port", str(port),
         "--latency", str(args.latency), "--rate", str(args.rate), "--batch", str(args.batch)],
        stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                http_json(port, "/stats")
                break
            except OSError:
                time.sleep(0.1)
        print(f"database {url.split('://')[0]}, {args.shipments} open shipments", flush=True)
        migrate.upgrade(url)
        t = time.monotonic()
        asyncio.run(seed(url, args.shipments, port, args.rate, args.batch))
        print(f"seeded in {time.monotonic() - t:.1f} s", flush=True)
        settings = Settings(
            database_url=url,
            redis_url=None,
            secret_key=SECRET,
            var_dir=tmp / "var",
            worker_threads=args.worker_threads,
            log_level="WARNING",
        )
        configure_logging(settings)
        fig = asyncio.run(cycle(settings, args.shipments, args.deadline))
        stats = http_json(port, "/stats")
    finally:
        sim.terminate()
        sim.wait(10)
        log.close()

    n = args.shipments
    requests_needed = math.ceil(n / args.batch)
    floor = requests_needed / args.rate
    cycle_s = fig["cycle_s"] or float("inf")
    rate_s = fig["checked"] / (fig["cycle_s"] or fig["elapsed_s"] or float("inf"))
    changed = len(range(0, n, 10))
    supplier_span = stats["last"] - stats["first"] if stats["first"] else 0.0
    print(
        f"\nsupplier: {args.latency * 1e3:g} ms per request, batch {args.batch}, "
        f"{args.rate} requests/s; 1 worker process, {args.worker_threads} threads\n"
        f"shipments checked      {fig['checked']:>10} of {n}\n"
        f"cycle time             {cycle_s:>10.1f} s   (scheduler start -> last shipment checked)\n"
        f"shipments checked/s    {rate_s:>10.0f}\n"
        f"rate-limit floor       {floor:>10.1f} s   ({requests_needed} requests at "
        f"{args.rate}/s = {n / floor:.0f} shipments/s)\n"
        f"cycle / floor          {cycle_s / floor:>10.2f}x\n"
        f"supplier: {stats['requests']} requests answered over {supplier_span:.1f} s, "
        f"{stats['limited_429']} answered 429, at most {stats['max_answered_per_second']} "
        f"in one second, {stats['distinct_numbers']} distinct numbers\n"
        f"worker process CPU     {fig['process_cpu_s']:>10.1f} s"
    )
    checks = {
        "every shipment checked": fig["checked"] == n,
        "each number asked once": stats["numbers"] == n == stats["distinct_numbers"],
        "the changed tenth recorded once": fig["events"] == n + changed
        and fig["out_for_delivery"] == changed,
        "rate limit held": stats["max_answered_per_second"] <= args.rate,
        f"inside {args.deadline:g} s": cycle_s <= args.deadline,
    }
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    print(f"(files in {tmp})")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("DROPSHIP_ENV", "production")
    sys.exit(main())
