"""End to end under load, optionally under one fault, then the ledger: nothing lost or doubled.

    uv run python bench/e2e.py [--rate 10] [--duration 30] [--rise 5] [--workers 2]
                               [--fault redis|worker|postgres|supplier|shopify] [--soak SECONDS]

The world of tests/test_faults.py (tests/support/faults.py) at the scale asked: a durable
throwaway PostgreSQL and Redis (tests/support/services.py), the API as ``dropship serve`` and
``--workers`` ``dropship worker`` processes, the REST supplier (bench/supplier.py's server, with
fault switches), a portal supplier that accepts and ships through the supplier API, the Shopify
Admin simulator, the Stripe simulator and an SMTP sink, all on 127.0.0.1. Signed ``orders/create``
webhooks (3 lines, 2 purchase orders each; 10% redeliveries; every 10th order paid through
Stripe and refunded 1.00 once routed) are sent for ``--duration`` s, the rate rising from
``--rise`` to ``--rate`` over the first half when ``--rise`` is given. ``--fault`` breaks one
component once the load is in flight (the same injections as the tests). The sweeper runs every
``--sweep-every`` s (10) with ``stale_after`` ``--stale-after`` s (30) (the workers' own scheduler
sweeps once a minute). Under a backlog older than ``stale_after`` each sweep enqueues the
waiting work again (see the README of bench/), so keep it above the expected queueing time.

Reports: orders/s sustained (orders fully placed per second over the send window, and over
send + drain), webhook POST latency p50/p99 (from the sender, first attempt), webhook ->
placed (every purchase order), -> Shopify fulfillment created, -> shipped email sent, queue
depth over time (outbox rows, Redis queue lengths, pending purchase orders, sampled every
second), then the ledger (tests/support/ledger.py). Exit status 1 if the ledger is not exact or
the pipeline did not settle within ``--settle-timeout``.

``--soak SECONDS``: instead, a steady ``--rate`` for that long, sampling the RSS of every worker
every 5 s; prints RSS after the warm-up (the first tenth, at least 10 s) and at the end.
Results go to ``bench/results/e2e-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import redis as redis_lib  # noqa: E402
from sqlalchemy import text  # noqa: E402

from app import migrate  # noqa: E402
from app.db import Database  # noqa: E402
from bench.ingest import PG_EXTRA, RESULTS, _git_state, _shown  # noqa: E402
from bench.route import dist_ms  # noqa: E402
from tests.support import faults  # noqa: E402
from tests.support import services as svc  # noqa: E402
from tests.support.faults import Hook, Sender, World, make_hooks, outside_world  # noqa: E402

DB_NAME = "dropship_e2e"

LATENCIES = """
WITH d AS (
    SELECT (payload::jsonb->>'id')::bigint AS sid, min(received_at) AS received_at
    FROM webhook_deliveries WHERE topic = 'orders/create' GROUP BY 1
)
SELECT 'placed', extract(epoch FROM po.placed_at - d.received_at)
FROM purchase_orders po JOIN orders o ON o.id = po.order_id JOIN d ON d.sid = o.shopify_order_id
WHERE po.placed_at IS NOT NULL
UNION ALL
SELECT 'fulfillment', extract(epoch FROM f.updated_at - d.received_at)
FROM shopify_fulfillments f JOIN orders o ON o.id = f.order_id JOIN d ON d.sid = o.shopify_order_id
WHERE f.state = 'created'
UNION ALL
SELECT 'shipped_email', extract(epoch FROM e.sent_at - d.received_at)
FROM emails e JOIN orders o ON o.id = e.order_id JOIN d ON d.sid = o.shopify_order_id
WHERE e.kind = 'shipped' AND e.sent_at IS NOT NULL
UNION ALL
SELECT 'order_placed', extract(epoch FROM max(po.placed_at) - min(d.received_at))
FROM purchase_orders po JOIN orders o ON o.id = po.order_id JOIN d ON d.sid = o.shopify_order_id
GROUP BY o.id HAVING bool_and(po.placed_at IS NOT NULL)
"""


def redis_depth(url: str) -> int:
    """Messages waiting in Dramatiq's Redis queues (and their delay queues)."""
    with contextlib.suppress(Exception):
        r = redis_lib.Redis.from_url(url, socket_timeout=1)
        return sum(int(r.llen(k)) for k in r.scan_iter("dramatiq:*") if r.type(k) == b"list")
    return -1


async def sample(world: World, series: list[dict[str, Any]], stop: asyncio.Event) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(Exception):
            c = await world.counts()
            c["redis_queued"] = await asyncio.to_thread(redis_depth, world.redis_url)
            c["t"] = round(time.monotonic() - t0, 1)
            c["worker_rss_mb"] = round(sum(faults.rss_mb(p.pid) for p in world.workers), 1)
            series.append(c)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def schedule(hooks: list[Hook], rate: float, rise: float | None, duration: float) -> list[float]:
    """Send offsets (s): a constant ``rate``, or rising linearly from ``rise`` to ``rate`` over
    the first half of ``duration`` and steady after."""
    if not rise:
        return [k / rate for k in range(len(hooks))]
    out, t = [], 0.0
    for _ in hooks:
        out.append(t)
        r = rise + (rate - rise) * min(1.0, t / (duration / 2))
        t += 1 / r
    return out


class PacedSender(Sender):
    offsets: list[float]

    async def run(self, hooks: list[Hook]) -> None:
        import httpx

        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits) as http:
            start = time.monotonic()
            tasks = []
            for hook, at in zip(hooks, self.offsets, strict=True):
                delay = start + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self._one(http, hook)))
            await asyncio.gather(*tasks)


async def scenario(
    args: argparse.Namespace, pg: svc.Postgres, rds: svc.Redis, tmp: Path
) -> dict[str, Any]:
    rise = args.rise if args.rise else None
    duration = args.soak or args.duration
    mean_rate = args.rate if not rise else (rise + args.rate) / 2 * 0.5 + args.rate * 0.5
    n_orders = max(1, int(mean_rate * duration * 0.9))  # 10% of the requests are redeliveries
    with outside_world(args.latency) as (supplier, shopify, stripe, inbox):
        world = World(
            pg_url=pg.url(DB_NAME),
            redis_url=rds.url,
            tmp=tmp,
            supplier=supplier,
            shopify=shopify,
            stripe=stripe,
            inbox=inbox,
            worker_threads=args.worker_threads,
            stale_after=args.stale_after,
        )
        report: dict[str, Any] = {}
        try:
            await world.setup(workers=args.workers)
            hooks = make_hooks(n_orders, shopify, stripe, world.stripe_account)
            sender = PacedSender(world.base_url, args.rate)
            sender.offsets = schedule(hooks, args.rate, rise, duration)
            series: list[dict[str, Any]] = []
            stop_sampling = asyncio.Event()
            bots = [
                asyncio.create_task(world.portal_bot()),
                asyncio.create_task(world.refund_bot()),
                asyncio.create_task(world.sweeper(args.sweep_every)),
                asyncio.create_task(sample(world, series, stop_sampling)),
            ]
            print(
                f"sending {len(hooks)} webhooks ({n_orders} orders) over {duration:g} s"
                + (f", rate rising {rise:g} -> {args.rate:g}/s" if rise else f" at {args.rate:g}/s")
                + (f", fault: {args.fault}" if args.fault else ""),
                flush=True,
            )
            t_send = time.monotonic()
            sending = asyncio.create_task(sender.run(hooks))
            if args.fault:
                await inject(args.fault, world, pg, rds)
                print(f"fault {args.fault} injected and repaired", flush=True)
            await sending
            send_s = time.monotonic() - t_send
            counts = await world.settled(n_orders, timeout=args.settle_timeout)
            total_s = time.monotonic() - t_send
            world.stop_bots()
            stop_sampling.set()
            await asyncio.gather(*bots, return_exceptions=True)
            ledger = await world.ledger(sender.accepted)
            db = Database(world.pg_url)
            try:
                async with db.sessionmaker() as session:
                    rows = (await session.execute(text(LATENCIES))).all()
            finally:
                await db.dispose()
            lat: dict[str, list[float]] = {}
            for kind, secs in rows:
                lat.setdefault(kind, []).append(float(secs))
            settled = (
                counts.get("orders", 0) >= n_orders
                and counts.get("pos_pending", 1) == 0
                and counts.get("shipments", 0) >= n_orders
            )
            placed_orders = len(lat.get("order_placed", []))
            rss = [s["worker_rss_mb"] for s in series if s.get("worker_rss_mb")]
            warm = max(1, len(rss) // 10)
            report = {
                "orders": n_orders,
                "webhooks_sent": len(hooks),
                "send_s": round(send_s, 1),
                "send_and_drain_s": round(total_s, 1),
                "orders_per_s_offered": round(n_orders / send_s, 2),
                "orders_placed_per_s_sustained": round(placed_orders / total_s, 2),
                "webhook_post_ms": dist_ms(sender.first_latency),
                "webhook_refused_answers": sender.refused,
                "webhook_to_placed_ms": dist_ms(lat.get("placed", [])),
                "webhook_to_order_placed_ms": dist_ms(lat.get("order_placed", [])),
                "webhook_to_fulfillment_ms": dist_ms(lat.get("fulfillment", [])),
                "webhook_to_shipped_email_ms": dist_ms(lat.get("shipped_email", [])),
                "queue_depth": series,
                "settled": settled,
                "counts": counts,
                "supplier": {k: v for k, v in supplier.sim.stats().items() if k != "first_seen"},
                "shopify_refused": shopify.refused,
                "portal_bot_errors": world.portal_errors,
                "ledger": ledger.as_dict(),
                "worker_rss_mb": {
                    "after_warmup": rss[warm - 1] if rss else None,
                    "end": rss[-1] if rss else None,
                    "max": max(rss) if rss else None,
                },
            }
            print_report(report, str(ledger))
        finally:
            world.stop_bots()
            await asyncio.to_thread(world.stop_all)
    return report


async def inject(kind: str, world: World, pg: svc.Postgres, rds: svc.Redis) -> None:
    if kind == "redis":
        await faults.redis_killed(world, rds)
    elif kind == "worker":
        await faults.worker_killed(world)
    elif kind == "postgres":
        await faults.postgres_restarted(world, pg)
    elif kind == "supplier":
        await faults.supplier_failing(world, errors=50, timeouts=20)
    elif kind == "shopify":
        await faults.shopify_refusing(world, refusals=100)
    else:
        raise ValueError(kind)


def print_report(r: dict[str, Any], ledger: str) -> None:
    def d(x: dict[str, Any]) -> str:
        if not x.get("n"):
            return "-"
        return f"p50 {x['p50']:.0f} / p95 {x['p95']:.0f} / p99 {x['p99']:.0f} ms (n={x['n']})"

    print(
        f"\norders: {r['orders']} ({r['webhooks_sent']} webhooks, 10% redeliveries) in "
        f"{r['send_s']} s, offered {r['orders_per_s_offered']}/s; placed "
        f"{r['orders_placed_per_s_sustained']} orders/s over send + drain "
        f"({r['send_and_drain_s']} s); settled: {r['settled']}"
    )
    print(f"  webhook POST           {d(r['webhook_post_ms'])}")
    print(f"  webhook -> PO placed   {d(r['webhook_to_placed_ms'])}")
    print(f"  webhook -> order placed (its last PO) {d(r['webhook_to_order_placed_ms'])}")
    print(f"  webhook -> fulfillment {d(r['webhook_to_fulfillment_ms'])}")
    print(f"  webhook -> shipped email {d(r['webhook_to_shipped_email_ms'])}")
    print("  queue depth (t s: outbox rows / Redis queued / POs pending; worker RSS MB):")
    step = max(1, len(r["queue_depth"]) // 20)
    for s in r["queue_depth"][::step]:
        print(
            f"    {s['t']:>6}: {s['outbox']:>6} / {s['redis_queued']:>6} / {s['pos_pending']:>6};"
            f" {s['worker_rss_mb']}"
        )
    print(f"  worker RSS MB: {r['worker_rss_mb']}")
    print(f"  supplier: {r['supplier']}; Shopify refused: {r['shopify_refused']}")
    print(ledger)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=10.0, help="webhooks per second (steady)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of webhooks")
    p.add_argument("--rise", type=float, default=0.0, help="start rate of a rising ramp")
    p.add_argument("--workers", type=int, default=2, help="dropship worker processes")
    p.add_argument("--worker-threads", type=int, default=4)
    p.add_argument("--latency", type=float, default=0.05, help="REST supplier seconds per order")
    p.add_argument(
        "--fault", choices=["redis", "worker", "postgres", "supplier", "shopify"], default=None
    )
    p.add_argument("--stale-after", type=int, default=30, help="DROPSHIP_STALE_AFTER (s)")
    p.add_argument("--sweep-every", type=float, default=10.0, help="seconds between sweeps")
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--settle-timeout", type=float, default=600.0)
    args = p.parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    with (
        tempfile.TemporaryDirectory(prefix="dropship-e2e-") as tmp_name,
        svc.postgres(durable=True, extra=PG_EXTRA) as pg,
        svc.redis() as rds,
    ):
        pg.psql(f"CREATE DATABASE {DB_NAME}")
        migrate.upgrade(pg.url(DB_NAME))
        report = asyncio.run(scenario(args, pg, rds, Path(tmp_name)))
    report.update(
        command=" ".join(["bench/e2e.py", *(argv if argv is not None else sys.argv[1:])]),
        code=_git_state(),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"e2e-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults: {_shown(out)}")
    ok = bool(report.get("settled")) and bool(report.get("ledger", {}).get("ok"))
    if not ok:
        print(
            "FAILED: " + ("not settled; " if not report.get("settled") else "") + "see the ledger"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
