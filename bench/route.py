"""Webhook to supplier: purchase orders placed per second and webhook-to-placed latency at a
steady webhook rate, beside the ingest-only figure of the same run.

    uv run python bench/route.py [--rate 5] [--duration 20] [--worker-threads 8]
                                 [--worker-threads 8,16] [--relay-interval 0.2,0.02] [--profile]
                                 [--workers 1,2] [--backlog N] [--no-floor] [--floor-jobs 3000]

The floor (bench/floor.py: the same worker running no-op and one-UPDATE jobs) runs first on the
same servers, and the report ends with the pipeline as ratios to it. ``--backlog N`` adds, per
configuration, N orders stored with no worker running and then drained (rate, arrival order
kept: bench/ordering.py). ``--workers`` runs each phase with that many worker processes.

Self-contained, like bench/ingest.py (whose helpers it reuses): a throwaway durable PostgreSQL and
Redis (tests/support/services.py), migrations, one merchant (auto-route on, the product default),
two suppliers and a catalog so that every order routes to both:

* ``RestCo`` (``rest_json``) offers IPOD2008GREEN and IPOD2008RED. Its API is bench/supplier.py,
  a local asyncio server on 127.0.0.1 answering every ``POST /orders`` after ``--latency``
  (50 ms) and keeping orders by ``Idempotency-Key``;
* ``PortalCo`` (``portal``, pull-based: placing is a status change, no HTTP) offers
  IPOD2008BLACK.

Each ``orders/create`` webhook (Shopify's fixture order with its 3 lines, bench/payloads.py, 10%
byte-for-byte redeliveries) therefore becomes one order and two purchase orders: one accepted by
the REST supplier, one placed in the portal. Stock is large, so nothing runs out.

The API runs as a subprocess the way production runs it (bench/server.py, 1 uvicorn process);
the workers as ONE ``dropship worker`` process (``python -m dropship.cli worker``) with
``DROPSHIP_WORKER_THREADS`` threads. Per worker configuration (a fresh worker process each):

1. warm-up: ``--warmup`` s of webhooks at the rate, waited until placed, then every order table
   truncated and the supplier's counters cleared;
2. measured: an open loop (bench/loadgen.py) sends webhooks at ``--rate`` per second for
   ``--duration`` s; the load generator's own figures (POST latency from the scheduled send time,
   accepted/s) are the *ingest-only* figure of the same run;
3. drain: wait (at most ``--drain-timeout`` s) until every order is routed and no purchase order
   is pending;
4. figures from the database timestamps: purchase orders placed per second in the steady window
   (from ``--ramp`` s after the first webhook to the last webhook), webhook ``received_at`` ->
   purchase order ``placed_at`` p50/p95/p99 (and per stage: received -> processed -> validated ->
   routed -> at the supplier -> placed), the drain time after the last webhook, CPU per process;
5. checks: every accepted webhook stored once and made exactly one order, every order routed with
   one purchase order per supplier, none pending or failed, no exception opened, and the supplier
   holding exactly one order per REST purchase order (distinct idempotency keys = purchase
   orders; repeated POSTs, i.e. retries, are counted).

Prints a table and writes ``bench/results/route-<timestamp>.json`` (with the worker log). Exit
status 1 when a check fails. ``--code-ref REV`` benchmarks a clean ``git archive`` export of a
revision (bench/ingest.py's mechanism). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/route.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from app import migrate  # noqa: E402
from app.db import Database  # noqa: E402
from app.merchants.service import create_merchant  # noqa: E402
from app.security import SecretBox  # noqa: E402
from app.suppliers.service import ProductInput, create_supplier, upsert_product  # noqa: E402
from bench import floor, loadgen, ordering  # noqa: E402
from bench.ingest import (  # noqa: E402
    PG_EXTRA,
    RESULTS,
    SECRET,
    _cpu,
    _cpu_model,
    _git_state,
    _machine,
    _shown,
    _tree,
    _without_code_ref,
    bench_server,
    count_log_errors,
    run_on_snapshot,
    server_env,
    wait_for_quiet,
)
from bench.payloads import SHOP, WebhookRequest, generate  # noqa: E402
from bench.profile_summary import parse as parse_collapsed  # noqa: E402
from tests.support import services as svc  # noqa: E402

INGEST = "/webhooks/shopify"
REST, PORTAL = "RestCo", "PortalCo"
SUPPLIER_AUTH = "Bearer bench-supplier"
#: Which supplier offers which SKU of the fixture order (its three lines).
CATALOG = (("IPOD2008GREEN", REST), ("IPOD2008RED", REST), ("IPOD2008BLACK", PORTAL))
POS_PER_ORDER = len({name for _, name in CATALOG})  # one purchase order per supplier
STOCK = 100_000_000
PROFILE_RATE = 100  # py-spy samples per second (the profile covers the whole measured phase)
DB_NAME = "dropship_bench"


# ----------------------------------------------------------------------------- processes


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _http_json(port: int, method: str, path: str) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@contextmanager
def supplier_server(port: int, latency: float, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.supplier",
                "--port",
                str(port),
                "--latency",
                str(latency),
                "--auth",
                SUPPLIER_AUTH,
            ],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _http_json(port, "GET", "/stats")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"supplier did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield proc
    finally:
        _stop(proc, 10)


@contextmanager
def worker_processes(
    env: dict[str, str], logs: Sequence[Path]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``len(logs)`` ``dropship worker`` processes, as many hosts would run them."""
    with ExitStack() as stack:
        yield [stack.enter_context(worker_process(env, log)) for log in logs]


@contextmanager
def worker_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``dropship worker`` (``python -m dropship.cli worker``), ready once it printed its banner."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dropship.cli", "worker"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "dropship worker:" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        _stop(proc, 60)


# ----------------------------------------------------------------------------------- setup


async def setup_merchant(url: str, secret_key: str, supplier_port: int) -> None:
    """The merchant (auto-route on by default), its two suppliers and the catalog."""
    db = Database(url)
    box = SecretBox(secret_key)
    try:
        async with db.transaction() as session:
            merchant, _ = await create_merchant(session, SHOP, "owner@example.com")
            suppliers = {}
            suppliers[REST], _ = await create_supplier(
                session,
                box,
                merchant.id,
                name=REST,
                connector="rest_json",
                config={
                    "base_url": f"http://127.0.0.1:{supplier_port}",
                    "auth_value": SUPPLIER_AUTH,
                },
            )
            suppliers[PORTAL], _ = await create_supplier(
                session, box, merchant.id, name=PORTAL, connector="portal"
            )
            for sku, name in CATALOG:
                await upsert_product(
                    session,
                    merchant.id,
                    suppliers[name].id,
                    ProductInput(
                        sku=sku,
                        supplier_sku=f"{name[:2].upper()}-{sku}",
                        unit_cost=Decimal("80.00"),
                        currency="USD",
                        stock=STOCK,
                        lead_time_days=3,
                        ships_to=["*"],
                        priority=1,
                    ),
                )
    finally:
        await db.dispose()


TRUNCATE = (
    "TRUNCATE webhook_deliveries, outbox, orders, customers, exception_cases, idempotency_keys "
    "CASCADE"
)


def reset(pg: svc.Postgres, supplier_port: int) -> None:
    """Empty every order table (orders cascade to lines, events, purchase orders) and the
    supplier's counters; catalog, suppliers and merchant stay. Statement statistics restart."""
    # The worker may still be running the warm-up's follow-up jobs (event dispatch), whose row
    # locks can deadlock with TRUNCATE: wait for the outbox to empty, retry a few times.
    for attempt in range(10):
        try:
            if attempt < 9 and pg.psql("SELECT count(*) FROM outbox", DB_NAME).strip() != "0":
                raise subprocess.CalledProcessError(1, "outbox not empty")
            pg.psql(TRUNCATE, DB_NAME)
            break
        except subprocess.CalledProcessError:
            if attempt == 9:
                raise
            time.sleep(1)
    pg.psql("CHECKPOINT", DB_NAME)
    pg.psql("SELECT pg_stat_statements_reset()", DB_NAME)
    _http_json(supplier_port, "POST", "/reset")


def statements(pg: svc.Postgres, orders: int, top: int = 40) -> dict[str, Any]:
    """What the database ran during the phase (pg_stat_statements, API and worker together):
    statements per order, and the statements called most."""
    where = (
        "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
        f"WHERE d.datname = '{DB_NAME}'"
    )
    calls, ms = (
        float(v)
        for v in pg.psql(
            f"SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) {where}", DB_NAME
        )
        .strip()
        .split("|")
    )
    rows = pg.psql(
        "SELECT s.calls, round(s.total_exec_time::numeric, 1), "
        f"regexp_replace(left(s.query, 160), '\\s+', ' ', 'g') {where} "
        f"ORDER BY s.calls DESC LIMIT {top}",
        DB_NAME,
    )
    kinds: dict[str, float] = {}
    for line in pg.psql(
        "SELECT upper(split_part(ltrim(s.query), ' ', 1)), sum(s.calls) "
        f"{where} GROUP BY 1 ORDER BY 2 DESC",
        DB_NAME,
    ).splitlines():
        kind, n = line.split("|", 1)
        kinds[kind or "?"] = round(float(n) / max(1, orders), 2)
    listed = []
    for line in rows.splitlines():
        n, t, q = line.split("|", 2)
        per = round(int(n) / max(1, orders), 2)
        listed.append({"calls": int(n), "per_order": per, "exec_ms": float(t), "query": q})
    return {
        "statements": int(calls),
        "statements_per_order": round(calls / max(1, orders), 1),
        "exec_ms_total": round(ms, 1),
        "per_order_by_kind": kinds,
        "top_by_calls": listed,
    }


# ------------------------------------------------------------------------------ measuring


class Meter:
    """CPU seconds of named process trees, of this process, and of the machine."""

    def __init__(self, roots: dict[str, Sequence[int]]) -> None:
        self.roots = roots
        self.start_state: dict[str, Any] = {}

    def _now(self) -> dict[str, Any]:
        return {
            **{k: _cpu([p for r in pids for p in _tree(r)]) for k, pids in self.roots.items()},
            "machine": _machine(),
            "self": time.process_time(),
            "wall": time.monotonic(),
        }

    def start(self) -> None:
        self.start_state = self._now()

    def read(self) -> dict[str, Any]:
        now, then = self._now(), self.start_state
        out: dict[str, Any] = {"wall_s": now["wall"] - then["wall"]}
        known = 0.0
        for k in self.roots:
            used = sum(v - then[k].get(pid, 0.0) for pid, v in now[k].items())
            out[f"{k}_s"] = used
            known += used
        out["generator_s"] = now["self"] - then["self"]
        busy0, _, total0 = then["machine"]
        busy1, _, total1 = now["machine"]
        ticks = os.sysconf("SC_CLK_TCK")
        out["machine_busy"] = (busy1 - busy0) / max(1, total1 - total0)
        out["other_s"] = max(0.0, (busy1 - busy0) / ticks - known - out["generator_s"])
        return out


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread (tid) of one process."""
    out = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def busiest_threads(before: dict[int, float], after: dict[int, float]) -> list[float]:
    """CPU seconds of the worker's threads over the phase, busiest first."""
    used = sorted((v - before.get(t, 0.0) for t, v in after.items()), reverse=True)
    return [round(v, 2) for v in used if v >= 0.01]


def drain_state(pg: svc.Postgres) -> dict[str, int]:
    row = pg.psql(
        "SELECT (SELECT count(*) FROM webhook_deliveries),"
        " (SELECT count(*) FROM webhook_deliveries WHERE processed_at IS NULL),"
        " (SELECT count(*) FROM orders),"
        " (SELECT count(*) FROM orders WHERE status IN ('received', 'ready_to_route')),"
        " (SELECT count(*) FROM purchase_orders),"
        " (SELECT count(*) FROM purchase_orders WHERE status = 'pending')",
        DB_NAME,
    )
    keys = ("deliveries", "unprocessed", "orders", "unrouted", "pos", "pending")
    return dict(zip(keys, (int(v) for v in row.strip().split("|")), strict=True))


def wait_drained(pg: svc.Postgres, expected_orders: int, timeout: float) -> tuple[bool, float]:
    """Wait until every expected order exists and is routed and no purchase order is pending."""
    t0 = time.monotonic()
    while True:
        s = drain_state(pg)
        if (
            s["orders"] >= expected_orders
            and s["unprocessed"] == 0
            and s["unrouted"] == 0
            and s["pending"] == 0
        ):
            return True, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            print(f"  drain timed out after {timeout:g} s: {s}", flush=True)
            return False, time.monotonic() - t0
        time.sleep(0.25)


def send(port: int, reqs: Sequence[WebhookRequest], rate: float) -> loadgen.Result:
    import uvloop

    host = f"127.0.0.1:{port}"
    raw = [r.raw(INGEST, host) for r in reqs]
    return uvloop.run(
        loadgen.open_loop("127.0.0.1", port, raw, rate=rate, duration=(len(raw) + 0.5) / rate)
    )


def pct(values: Sequence[float], p: float) -> float:
    return loadgen._pct(sorted(values), p)


def dist_ms(values: Sequence[float]) -> dict[str, float | int]:
    v = sorted(values)
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "p50": round(pct(v, 50) * 1e3, 1),
        "p95": round(pct(v, 95) * 1e3, 1),
        "p99": round(pct(v, 99) * 1e3, 1),
        "max": round(v[-1] * 1e3, 1),
        "mean": round(sum(v) / len(v) * 1e3, 1),
    }


# ------------------------------------------------------------------------------- analysis

PO_ROWS = """
WITH d AS (
    SELECT (payload::jsonb->>'id')::bigint AS sid, received_at, processed_at
    FROM webhook_deliveries WHERE topic = 'orders/create'
), v AS (
    SELECT order_id, min(created_at) AS at FROM order_events
    WHERE type = 'status.ready_to_route' GROUP BY order_id
)
SELECT o.id, s.connector, po.status, po.idempotency_key, po.attempts,
       extract(epoch FROM d.received_at), extract(epoch FROM d.processed_at),
       extract(epoch FROM v.at), extract(epoch FROM po.created_at),
       extract(epoch FROM po.placed_at)
FROM purchase_orders po
JOIN orders o ON o.id = po.order_id
JOIN suppliers s ON s.id = po.supplier_id
LEFT JOIN d ON d.sid = o.shopify_order_id
LEFT JOIN v ON v.order_id = o.id
"""


def _f(value: str) -> float | None:
    return float(value) if value else None


def analyze(
    pg: svc.Postgres,
    res: loadgen.Result,
    reqs: Sequence[WebhookRequest],
    supplier: dict[str, Any],
    *,
    ramp: float,
) -> dict[str, Any]:
    rows = []
    for line in pg.psql(PO_ROWS, DB_NAME).splitlines():
        oid, connector, status, key, attempts, *times = line.split("|")
        rows.append(
            {
                "order": oid,
                "connector": connector,
                "status": status,
                "key": key,
                "attempts": int(attempts),
                "received": _f(times[0]),
                "processed": _f(times[1]),
                "validated": _f(times[2]),
                "routed": _f(times[3]),
                "placed": _f(times[4]),
            }
        )
    received = [
        float(v)
        for v in pg.psql(
            "SELECT extract(epoch FROM received_at) FROM webhook_deliveries", DB_NAME
        ).split()
    ]
    counts = {
        name: dict(
            line.split("|", 1)[::-1]  # type: ignore[misc]
            for line in pg.psql(sql, DB_NAME).splitlines()
        )
        for name, sql in (
            ("orders_by_status", "SELECT count(*), status FROM orders GROUP BY 2"),
            (
                "pos_by_connector_status",
                "SELECT count(*), s.connector || ':' || po.status FROM purchase_orders po "
                "JOIN suppliers s ON s.id = po.supplier_id GROUP BY 2",
            ),
            (
                "delivery_outcomes",
                "SELECT count(*), split_part(outcome, ' ', 1) || ' ' || "
                "coalesce(split_part(outcome, ' ', 3), '') FROM webhook_deliveries GROUP BY 2",
            ),
        )
    }
    exceptions = int(pg.psql("SELECT count(*) FROM exception_cases", DB_NAME).strip())
    n_orders = int(pg.psql("SELECT count(*) FROM orders", DB_NAME).strip())
    pos_per_order = Counter(Counter(r["order"] for r in rows).values())

    # The load generator: the ingest-only figure of this run.
    lat = res.latencies
    accepted_ids = Counter(
        reqs[i].webhook_id for i, o in res.outcomes.items() if o == loadgen.ACCEPTED
    )
    failed = sum(1 for o in res.outcomes.values() if o == loadgen.FAILED) + res.late
    ingest = {
        "target_rate": res.target_rate,
        "sent": res.sent,
        "answered": len(lat),
        "accepted": sum(accepted_ids.values()),
        "duplicate_answers": sum(1 for o in res.outcomes.values() if o == loadgen.DUPLICATE),
        "failed_or_unanswered": failed,
        "non_2xx": sum(v for k, v in res.statuses.items() if not 200 <= k < 300),
        "duration_s": round(res.duration, 3),
        "requests_per_s": len(lat) / res.duration,
        "accepted_per_s": sum(accepted_ids.values()) / res.duration,
        "latency_ms": dist_ms(lat),
        "max_open_connections": res.max_open_connections,
    }

    # Steady window: from `ramp` s after the first webhook to the last one.
    t_first, t_last = (min(received), max(received)) if received else (0.0, 0.0)
    w0, w1 = t_first + ramp, t_last
    span = max(1e-9, w1 - w0)
    placed = [r for r in rows if r["placed"] is not None]
    in_window = [r for r in placed if w0 <= r["placed"] <= w1]
    pos_per_order_mean = len(rows) / max(1, n_orders)
    offered = sum(1 for t in received if w0 <= t <= w1) * pos_per_order_mean / span
    last_placed = max((r["placed"] for r in placed), default=t_last)
    by_order: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_order.setdefault(r["order"], []).append(r)
    order_done = [
        max(x["placed"] for x in rs) - rs[0]["received"]
        for rs in by_order.values()
        if all(x["placed"] is not None for x in rs) and rs[0]["received"] is not None
    ]

    def e2e(sel: list[dict[str, Any]]) -> dict[str, float | int]:
        return dist_ms([r["placed"] - r["received"] for r in sel if r["received"] is not None])

    rest = [r for r in placed if r["connector"] == "rest_json"]
    first_seen = supplier.get("first_seen", {})
    stages: dict[str, dict[str, float | int]] = {}
    one_per_order = {r["order"]: r for r in placed}  # any of the order's POs: shared stages
    seq = [("received", "processed"), ("processed", "validated"), ("validated", "routed")]
    for a, b in seq:
        stages[f"{a} -> {b}"] = dist_ms(
            [r[b] - r[a] for r in one_per_order.values() if r[a] is not None and r[b] is not None]
        )
    stages["routed -> at supplier (rest)"] = dist_ms(
        [first_seen[r["key"]] - r["routed"] for r in rest if r["key"] in first_seen]
    )
    stages["at supplier -> placed (rest)"] = dist_ms(
        [r["placed"] - first_seen[r["key"]] for r in rest if r["key"] in first_seen]
    )
    stages["routed -> placed (portal)"] = dist_ms(
        [r["placed"] - r["routed"] for r in placed if r["connector"] == "portal"]
    )

    figures = {
        "window_s": round(span, 2),
        "pos_placed_per_s": len(in_window) / span,
        "pos_offered_per_s": offered,
        "placed_vs_offered": (len(in_window) / span) / offered if offered else 0.0,
        "orders_per_s_received": sum(1 for t in received if w0 <= t <= w1) / span,
        "drain_after_last_webhook_s": round(last_placed - t_last, 3),
        "pos_not_placed_at_last_webhook": sum(
            1 for r in rows if r["placed"] is None or r["placed"] > t_last
        ),
        "webhook_to_placed_ms": e2e(placed),
        "webhook_to_placed_rest_ms": e2e(rest),
        "webhook_to_placed_portal_ms": e2e([r for r in placed if r["connector"] == "portal"]),
        "webhook_to_order_done_ms": dist_ms(order_done),
        "stages_ms": stages,
    }

    # Checks.
    rest_keys = {r["key"] for r in rows if r["connector"] == "rest_json"}
    sup_keys = set(first_seen)
    stored = len(received)
    checks = {
        "failed_or_unanswered_webhooks": failed,
        "accepted_webhooks": sum(accepted_ids.values()),
        "accepted_twice": sum(1 for v in accepted_ids.values() if v > 1),
        "stored_deliveries": stored,
        "orders": n_orders,
        "orders_not_routed": n_orders - int(counts["orders_by_status"].get("routed", 0)),
        "purchase_orders": len(rows),
        "pos_per_order": {str(k): v for k, v in sorted(pos_per_order.items())},
        "pos_pending": sum(1 for r in rows if r["status"] == "pending"),
        "pos_failed_or_other": sum(
            1
            for r in rows
            if (r["connector"], r["status"])
            not in (("rest_json", "accepted"), ("portal", "placed"))
        ),
        "pos_with_retries": sum(1 for r in rows if r["attempts"] > 1),
        "exceptions_opened": exceptions,
        "rest_pos": len(rest_keys),
        "supplier_orders": len(sup_keys),
        "supplier_posts": supplier.get("posts"),
        "supplier_repeat_posts": supplier.get("repeats"),
        "supplier_refused": supplier.get("refused"),
        "supplier_orders_without_po": len(sup_keys - rest_keys),
        "rest_pos_missing_at_supplier": len(rest_keys - sup_keys),
    }
    checks["ok"] = (
        failed == 0
        and checks["accepted_twice"] == 0
        and stored == checks["accepted_webhooks"]
        and n_orders == stored
        and checks["orders_not_routed"] == 0
        and set(pos_per_order) == {POS_PER_ORDER}
        and checks["pos_pending"] == 0
        and checks["pos_failed_or_other"] == 0
        and exceptions == 0
        and rest_keys == sup_keys
        and len(rest_keys) == n_orders
        and supplier.get("refused") == 0
    )
    return {"ingest": ingest, "figures": figures, "checks": checks, "counts": counts}


# --------------------------------------------------------------------------------- profile

_HTTP = ("httpx/", "httpcore/", "h11/")
_THREADING = ("threading.py", "queue.py", "selectors.py")
#: Innermost frame's file -> component (first match wins; checked innermost frame outwards).
COMPONENTS: list[tuple[str, Any]] = [
    ("asyncpg", lambda p: "asyncpg/" in p),
    ("SQLAlchemy", lambda p: "sqlalchemy/" in p),
    ("httpx/httpcore/h11 (supplier calls)", lambda p: any(x in p for x in _HTTP)),
    ("redis-py (broker, rate limits)", lambda p: "redis/" in p),
    ("dramatiq (consumer, worker threads, middleware)", lambda p: "dramatiq/" in p),
    ("cryptography (SecretBox: supplier config)", lambda p: "cryptography/" in p),
    ("structlog/logging", lambda p: "structlog/" in p or p.startswith("logging/")),
    ("json", lambda p: p.startswith("json/")),
    ("connectors/", lambda p: "connectors/" in p),
    ("app/ (own lines)", lambda p: "app/" in p and "site-packages" not in p),
    ("workers/ (relay, broker glue)", lambda p: "workers/" in p and "site-packages" not in p),
    ("asyncio (Python parts)", lambda p: p.startswith("asyncio/") or "/asyncio/" in p),
    ("threading/queue/selectors", lambda p: p.rsplit("/", 1)[-1] in _THREADING),
]
#: Inclusive: a stack counts for every piece it passes through.
PIECES: list[tuple[str, str, str]] = [
    ("webhook.process", "webhooks/tasks.py", "process_delivery"),
    ("order.validate", "orders/tasks.py", "validate_order"),
    ("order.route", "routing/tasks.py", "route_order"),
    ("purchase_order.place", "purchasing/tasks.py", "place"),
    ("  rest_json place_order (HTTP)", "connectors/rest_json.py", "place_order"),
    ("  decrypt_config", "suppliers/service.py", "decrypt_config"),
    ("outbox relay (relay_once)", "workers/relay.py", "relay_once"),
    ("SQLAlchemy flush (unit of work)", "orm/unitofwork.py", ""),
    ("SQLAlchemy ORM row loading (incl. selectinload)", "orm/loading.py", ""),
    ("SQLAlchemy statement cache keys", "sql/cache_key.py", ""),
    ("SQLAlchemy compile (statement cache misses)", "sql/compiler.py", ""),
    ("SQLAlchemy pool checkout/return", "sqlalchemy/pool/base.py", ""),
    ("pool pre-ping (BEGIN; ';'; ROLLBACK)", "postgresql/asyncpg.py", "_async_ping"),
    ("scheduler", "workers/scheduler.py", ""),
    ("dramatiq consumer threads", "dramatiq/worker.py", "_ConsumerThread"),
    ("dramatiq worker threads", "dramatiq/worker.py", "_WorkerThread"),
]


def summarize_profile(text: str, pos: int, rate: int, mode: str) -> dict[str, Any]:
    stacks = parse_collapsed(text)
    total = sum(c for _, c in stacks) or 1
    comp: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, count in stacks:
        label = "C code / no Python frame"
        for _, path, _ in reversed(frames):
            hit = next((name for name, pred in COMPONENTS if pred(path)), None)
            if hit:
                label = hit
                break
        comp[label] += count
        for name, file_suffix, func in PIECES:
            if any(p.endswith(file_suffix) and (not func or func in f) for f, p, _ in frames):
                incl[name] += count
        if frames:
            f, p, ln = frames[-1]
            leaf[f"{f} ({p}:{ln})"] += count

    def us(n: int) -> str:
        return f"{n / rate / max(1, pos) * 1e6:8.0f} µs/PO"

    lines = [f"worker profile: {total} samples at {rate} Hz ({mode}), {pos} POs placed"]
    lines.append("  by innermost component:")
    lines += [f"    {k:<50}{v / total:6.1%}{us(v)}" for k, v in comp.most_common()]
    lines.append(
        "  inclusive (pieces nest; SQLAlchemy runs in greenlets that py-spy shows apart from the"
        " task awaiting them, so the task lines leave most database work out):"
    )
    lines += [f"    {k:<50}{incl[k] / total:6.1%}{us(incl[k])}" for k, *_ in PIECES if incl[k]]
    lines.append("  top self lines:")
    lines += [f"    {v / total:6.1%}  {k}" for k, v in leaf.most_common(12)]
    return {
        "samples": total,
        "rate_hz": rate,
        "cpu_s_sampled": total / rate,
        "components": {k: v / total for k, v in comp.most_common()},
        "inclusive": {k: incl[k] / total for k, *_ in PIECES if incl[k]},
        "self_top": {k: v / total for k, v in leaf.most_common(30)},
        "text": "\n".join(lines),
    }


def start_profile(pid: int, out: Path, mode: str) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy not found: `uv pip install py-spy` to profile", flush=True)
        return None
    cmd = [py_spy, "record", "--pid", str(pid), "--rate", str(PROFILE_RATE), "--nonblocking"]
    cmd += ["--format", "raw", "--output", str(out), *(["--gil"] if mode == "gil" else [])]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attach
    return spy


def stop_profile(spy: subprocess.Popen[bytes]) -> str:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        _, err = spy.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    return err.decode(errors="replace")[-2000:]


# ------------------------------------------------------------------------------------ phase


def run_config(
    args: argparse.Namespace,
    *,
    threads: int,
    relay: float,
    workers: int,
    base_env: dict[str, str],
    pg: svc.Postgres,
    pg_pid: int,
    api_pid: int,
    api_port: int,
    supplier_proc: subprocess.Popen[bytes],
    supplier_port: int,
    warm: Sequence[WebhookRequest],
    measured: Sequence[WebhookRequest],
    backlog: Sequence[WebhookRequest],
    tmp: Path,
    stamp: str,
) -> dict[str, Any]:
    name = f"{workers}w-{threads}t-relay{relay:g}"
    env = worker_env(args, base_env, threads, relay)
    logs = [tmp / f"worker-{name}-{j}.log" for j in range(workers)]
    log = logs[0]
    print(
        f"\n== {workers} worker process(es): {threads} threads, relay interval {relay:g} s",
        flush=True,
    )
    out: dict[str, Any] = {"workers": workers, "worker_threads": threads, "relay_interval_s": relay}
    with worker_processes(env, logs) as procs:
        worker = procs[0]
        if warm:
            print(f"  warm-up: {len(warm)} webhooks at {args.rate:g}/s ...", flush=True)
            wres = send(api_port, warm, args.rate)
            n_warm = sum(1 for o in wres.outcomes.values() if o == loadgen.ACCEPTED)
            ok, secs = wait_drained(pg, n_warm, 60)
            print(f"  warm-up drained in {secs:.1f} s" + ("" if ok else " (TIMED OUT)"))
        reset(pg, supplier_port)
        idle = wait_for_quiet(args.quiet_limit, args.quiet_wait) if args.quiet_wait > 0 else None
        meter = Meter(
            {
                "worker": [w.pid for w in procs],
                "api": [api_pid],
                "postgres": [pg_pid],
                "supplier": [supplier_proc.pid],
            }
        )
        spy = None
        profile_file = RESULTS / f"profile-route-{stamp}-{name}.txt"
        if args.profile:
            RESULTS.mkdir(parents=True, exist_ok=True)
            spy = start_profile(worker.pid, profile_file, args.profile)
        print(
            f"  measured: {len(measured)} webhooks at {args.rate:g}/s ({args.duration:g} s) ...",
            flush=True,
        )
        meter.start()
        threads0 = thread_cpu(worker.pid)
        res = send(api_port, measured, args.rate)
        cpu_send = meter.read()
        accepted = sum(1 for o in res.outcomes.values() if o == loadgen.ACCEPTED)
        drained, drain_s = wait_drained(pg, accepted, args.drain_timeout)
        cpu_total = meter.read()
        cpu_total["worker_threads_s"] = busiest_threads(threads0, thread_cpu(worker.pid))
        if spy is not None:
            err = stop_profile(spy)
            if profile_file.exists():
                out["profile"] = {"file": _shown(profile_file)}
            else:
                out["profile"] = {"error": err}
        supplier = _http_json(supplier_port, "GET", "/stats")
        analysis = analyze(pg, res, measured, supplier, ramp=args.ramp)
        analysis["db_statements"] = statements(pg, analysis["checks"]["orders"])
        if backlog:
            reset(pg, supplier_port)  # while the workers run, so the outbox empties first
    pos = analysis["checks"]["purchase_orders"]
    for cpu in (cpu_send, cpu_total):
        cpu["worker_us_per_po"] = cpu["worker_s"] / max(1, pos) * 1e6
        cpu["worker_cores"] = cpu["worker_s"] / max(1e-9, cpu["wall_s"])
    if "file" in out.get("profile", {}):
        out["profile"].update(
            summarize_profile(
                profile_file.read_text(),
                pos,
                PROFILE_RATE,
                "thread holding the GIL" if args.profile == "gil" else "every active thread",
            )
        )
        print(out["profile"]["text"])
    analysis["checks"]["drained"] = drained
    analysis["checks"]["ok"] = analysis["checks"]["ok"] and drained
    kept = RESULTS / f"worker-{stamp}-{name}.log"
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(log, kept)
    supplier.pop("first_seen", None)
    out.update(
        analysis,
        drain_wait_s=round(drain_s, 2),
        cpu_during_send=cpu_send,
        cpu_send_and_drain=cpu_total,
        supplier=supplier,
        machine_use_before=idle,
        worker_log=_shown(kept),
        worker_log_errors=count_log_errors(log),
    )
    c = analysis["checks"]
    print(f"  checks: {'OK' if c['ok'] else 'FAILED'} " + _fmt(c), flush=True)
    if backlog:
        out["backlog"] = run_backlog(
            args,
            env=env,
            workers=workers,
            pg=pg,
            pg_pid=pg_pid,
            api_pid=api_pid,
            api_port=api_port,
            supplier_port=supplier_port,
            reqs=backlog,
            logs=[tmp / f"worker-{name}-backlog-{j}.log" for j in range(workers)],
        )
        steady = out["figures"]["pos_placed_per_s"]
        out["backlog"]["figures"]["vs_steady"] = (
            out["backlog"]["figures"]["pos_per_s_middle"] / steady if steady else 0.0
        )
    return out


def worker_env(
    args: argparse.Namespace, base_env: dict[str, str], threads: int, relay: float
) -> dict[str, str]:
    env = dict(base_env, DROPSHIP_WORKER_THREADS=str(threads), DROPSHIP_RELAY_INTERVAL=str(relay))
    env.update(dict(kv.split("=", 1) for kv in args.worker_env))
    return env


ORDER_DONE = """
WITH d AS (
    SELECT (payload::jsonb->>'id')::bigint AS sid, received_at
    FROM webhook_deliveries WHERE topic = 'orders/create'
)
SELECT extract(epoch FROM d.received_at), extract(epoch FROM max(po.placed_at))
FROM orders o JOIN d ON d.sid = o.shopify_order_id
JOIN purchase_orders po ON po.order_id = o.id
GROUP BY o.id, d.received_at
HAVING count(*) = count(po.placed_at)
"""


def run_backlog(
    args: argparse.Namespace,
    *,
    env: dict[str, str],
    workers: int,
    pg: svc.Postgres,
    pg_pid: int,
    api_pid: int,
    api_port: int,
    supplier_port: int,
    reqs: Sequence[WebhookRequest],
    logs: Sequence[Path],
) -> dict[str, Any]:
    """Webhooks stored while no worker runs (the API alone), then the workers started: how fast
    and in which order the backlog drains."""
    print(
        f"  backlog: {len(reqs)} webhooks at {args.backlog_rate:g}/s with no worker running ...",
        flush=True,
    )
    res = send(api_port, reqs, args.backlog_rate)
    accepted = sum(1 for o in res.outcomes.values() if o == loadgen.ACCEPTED)
    outbox = int(pg.psql("SELECT count(*) FROM outbox", DB_NAME).strip())
    print(f"  backlog stored: {accepted} orders, {outbox} outbox jobs; workers start", flush=True)
    t_start = time.time()
    with worker_processes(env, logs) as procs:
        t_ready = time.time()  # every worker printed its banner (imported, schema checked)
        meter = Meter({"worker": [w.pid for w in procs], "api": [api_pid], "postgres": [pg_pid]})
        meter.start()
        drained, drain_s = wait_drained(pg, accepted, args.backlog_timeout)
        cpu = meter.read()
        supplier = _http_json(supplier_port, "GET", "/stats")
    analysis = analyze(pg, res, reqs, supplier, ramp=0.0)
    analysis["checks"]["drained"] = drained
    analysis["checks"]["ok"] = analysis["checks"]["ok"] and drained
    placed = [
        float(v)
        for v in pg.psql(
            "SELECT extract(epoch FROM placed_at) FROM purchase_orders WHERE placed_at IS NOT NULL",
            DB_NAME,
        ).split()
    ]
    pairs = [
        (float(a), float(b))
        for a, b in (line.split("|") for line in pg.psql(ORDER_DONE, DB_NAME).splitlines())
    ]
    pos = len(placed)
    last = max(placed, default=t_start)
    figures = {
        "orders": accepted,
        "outbox_jobs_at_start": outbox,
        "pos_placed": pos,
        "start_to_ready_s": round(t_ready - t_start, 2),
        "start_to_last_placed_s": round(last - t_start, 2),
        "start_to_first_placed_s": round(min(placed, default=t_start) - t_start, 2),
        "pos_per_s_overall": pos / max(1e-9, last - t_start),
        "pos_per_s_middle": ordering.middle_rate(placed),
        "orders_per_s_middle": ordering.middle_rate([b for _, b in pairs]),
        "order_kept": ordering.order_kept([a for a, _ in pairs], [b - t_start for _, b in pairs]),
    }
    cpu["worker_us_per_po"] = cpu["worker_s"] / max(1, pos) * 1e6
    cpu["worker_cores"] = cpu["worker_s"] / max(1e-9, cpu["wall_s"])
    c = analysis["checks"]
    print(f"  backlog checks: {'OK' if c['ok'] else 'FAILED'} " + _fmt(c), flush=True)
    return {
        "ingest": analysis["ingest"],
        "checks": c,
        "figures": figures,
        "drain_wait_s": round(drain_s, 2),
        "cpu": cpu,
        "worker_log_errors": [count_log_errors(log) for log in logs],
    }


def print_floor_and_ratios(report: dict[str, Any], args: argparse.Namespace) -> None:
    """The floor of the same run, the backlog drain, and the pipeline as ratios to them."""
    floors = report["floor"]
    for f in floors.values():
        floor.print_floor(f)
    backlogs = {n: r["backlog"] for n, r in report["runs"].items() if "backlog" in r}
    if backlogs:
        print(
            f"\nbacklog: {args.backlog} webhooks stored at {args.backlog_rate:g}/s with no worker"
            " running, then the workers started (middle: between 10 % and 90 % of the POs placed)"
        )
        head = (
            f"{'worker config':<22}{'orders':>7}{'ready s':>8}{'first PO s':>11}{'drain s':>9}"
            f"{'POs/s middle':>13}{'vs steady':>10}{'µs/PO':>7}{'spearman':>9}"
            f"{'moved >10%':>11}{'same decile':>12}"
        )
        print(head)
        print("-" * len(head))
        for name, b in backlogs.items():
            fig, kept = b["figures"], b["figures"]["order_kept"]
            print(
                f"{name:<22}{fig['orders']:>7}{fig.get('start_to_ready_s', 0):>8.1f}"
                f"{fig['start_to_first_placed_s']:>11.1f}"
                f"{fig['start_to_last_placed_s']:>9.1f}{fig['pos_per_s_middle']:>13.1f}"
                f"{fig.get('vs_steady', 0):>9.2f}x{b['cpu']['worker_us_per_po']:>7.0f}"
                f"{kept.get('spearman', 0):>9.3f}{kept.get('moved_far', 0):>11.1%}"
                f"{kept.get('same_decile', 0):>12.1%}"
            )
            med = kept.get("decile_done_median") or []
            print(
                "  median s from worker start to an order's last PO placed, by arrival decile: "
                + " ".join("-" if m is None else f"{m:.1f}" for m in med)
            )
        print(
            "ready, first PO s, drain s: from starting the worker processes to their banner,\n"
            "to the first PO placed, to the last. vs steady: POs/s middle over the steady\n"
            "phase's POs placed/s of the same config (the offered rate when that phase kept up:\n"
            "run it near the ceiling). spearman: rank correlation of arrival and done order\n"
            "(1 = kept); moved >10%: orders done more than a tenth of the backlog away from\n"
            "their arrival place."
        )
    if not floors:
        return
    print("\npipeline / floor of the same run (same worker threads):")
    head = (
        f"{'worker config':<22}{'phase':<9}{'POs/s':>8}{'/ no-op':>9}{'/ UPDATE':>9}"
        f"{'/ Core UPDATE':>14}{'µs/PO':>8}{'x no-op':>9}{'x UPDATE':>9}{'x Core':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, r in report["runs"].items():
        f = floors.get(str(r["worker_threads"]))
        if f is None:
            continue
        rows = [("steady", r["figures"]["pos_placed_per_s"], r["cpu_send_and_drain"])]
        if "backlog" in r:
            b = r["backlog"]
            rows.append(("backlog", b["figures"]["pos_per_s_middle"], b["cpu"]))
        for phase, rate, cpu in rows:
            per_worker = rate / max(1, r["workers"])  # the floor is one process
            us = cpu["worker_us_per_po"]

            def ratio(x: float, y: float) -> str:
                return f"{x / y:.3f}" if y else "-"

            print(
                f"{name:<22}{phase:<9}{rate:>8.1f}"
                + "".join(
                    f"{ratio(per_worker, f[k]['jobs_per_s']):>{w}}"
                    for k, w in (("noop", 9), ("update", 9), ("update_core", 14))
                    if k in f
                )
                + f"{us:>8.0f}"
                + "".join(
                    f"{ratio(us, f[k]['cpu_us_per_job']):>{w}}"
                    for k, w in (("noop", 9), ("update", 9), ("update_core", 8))
                    if k in f
                )
            )
    print(
        "/ no-op etc.: POs placed per second per worker process over the floor's jobs/s (the\n"
        "steady phase's POs/s is the offered rate when it kept up). x no-op etc.: worker CPU per\n"
        "PO over the floor's CPU per job: how many floor jobs' worth of CPU one PO costs."
    )


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if k != "ok")


# ----------------------------------------------------------------------------------- output


def print_report(runs: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nwebhooks at {args.rate:g}/s for {args.duration:g} s (10% redeliveries), supplier "
        f"latency {args.latency * 1e3:g} ms, 1 API process, worker processes per config; steady "
        f"window starts {args.ramp:g} s after the first webhook"
    )
    head = (
        f"{'worker config':<22}{'ingest acc/s':>13}{'ingest p50/p95 ms':>19}"
        f"{'POs placed/s':>13}{'vs offered':>11}{'webhook->placed p50/p95/p99 ms':>32}"
        f"{'drain s':>8}{'worker cores':>13}{'µs/PO':>7}"
    )
    print(head)
    print("-" * len(head))
    for name, r in runs.items():
        ing, fig = r["ingest"], r["figures"]
        e2e = fig["webhook_to_placed_ms"]
        cpu = r["cpu_send_and_drain"]
        print(
            f"{name:<22}{ing['accepted_per_s']:>13.1f}"
            f"{ing['latency_ms']['p50']:>11.1f} / {ing['latency_ms']['p95']:<5.1f}"
            f"{fig['pos_placed_per_s']:>13.1f}{fig['placed_vs_offered']:>10.2f}x"
            f"{e2e.get('p50', 0):>14.0f} / {e2e.get('p95', 0):.0f} / {e2e.get('p99', 0):<6.0f}"
            f"{fig['drain_after_last_webhook_s']:>8.2f}{cpu['worker_cores']:>13.2f}"
            f"{cpu['worker_us_per_po']:>7.0f}"
        )
    print(
        "ingest: the load generator's figures for the same webhooks (accepted = new orders per\n"
        "second; POST latency from the scheduled send time). POs placed/s: placed_at inside the\n"
        "steady window; vs offered: divided by (new orders received in the window x POs per\n"
        "order), 1.00x = keeping up. webhook->placed: webhook received_at -> purchase order\n"
        "placed_at, every PO. drain: last placed_at - last received_at. worker cores, µs/PO:\n"
        "worker process CPU over send + drain."
    )
    for name, r in runs.items():
        fig, cpu = r["figures"], r["cpu_send_and_drain"]
        print(f"\n{name}: latency by stage, ms (p50 / p95 / p99)")
        show = {
            "webhook -> PO placed (REST, 50 ms supplier)": fig["webhook_to_placed_rest_ms"],
            "webhook -> PO placed (portal)": fig["webhook_to_placed_portal_ms"],
            "webhook -> order's last PO placed": fig["webhook_to_order_done_ms"],
            **{f"  {k}": v for k, v in fig["stages_ms"].items()},
        }
        for label, d in show.items():
            if d.get("n"):
                print(f"  {label:<46}{d['p50']:>8.0f}{d['p95']:>8.0f}{d['p99']:>8.0f}")
        print(
            f"  CPU over send + drain ({cpu['wall_s']:.1f} s): worker {cpu['worker_s']:.1f} s, "
            f"API {cpu['api_s']:.1f} s, PostgreSQL {cpu['postgres_s']:.1f} s, supplier "
            f"{cpu['supplier_s']:.1f} s, generator {cpu['generator_s']:.1f} s, other "
            f"{cpu['other_s']:.1f} s; machine busy {cpu['machine_busy']:.0%}"
        )
        print(f"  worker CPU by thread, s (busiest first): {cpu['worker_threads_s'][:8]}")
        st = r["db_statements"]
        print(
            f"  database: {st['statements']} statements ({st['statements_per_order']} per order, "
            "API + worker); per order by kind: "
            + ", ".join(f"{k} {v:g}" for k, v in st["per_order_by_kind"].items())
            + "; most called, per order:"
        )
        for q in st["top_by_calls"][:25]:
            print(f"    {q['per_order']:>6}  {q['query'][:100]}")
        print(f"  supplier: {_fmt(r['supplier'])}")


# ------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Purchase orders placed per second and webhook-to-placed latency at a steady "
        "webhook rate, beside the ingest-only figure of the same run."
    )
    p.add_argument("--rate", type=float, default=5.0, help="webhooks per second (open loop)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of webhooks measured")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up webhooks")
    p.add_argument("--ramp", type=float, default=5.0, help="seconds excluded from the window")
    p.add_argument("--latency", type=float, default=0.05, help="supplier seconds per order")
    p.add_argument(
        "--worker-threads", default="8", help="DROPSHIP_WORKER_THREADS; a comma list runs each"
    )
    p.add_argument(
        "--relay-interval",
        default="0.2",
        help="DROPSHIP_RELAY_INTERVAL (the app default is 0.2 s); a comma list runs each",
    )
    p.add_argument(
        "--workers", default="1", help="dropship worker processes; a comma list (1,2) runs each"
    )
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument(
        "--backlog",
        type=int,
        default=0,
        metavar="N",
        help="after each steady phase, N orders stored with no worker running, then drained",
    )
    p.add_argument("--backlog-rate", type=float, default=300.0, help="webhooks/s of the backlog")
    p.add_argument("--backlog-timeout", type=float, default=600.0, help="seconds to drain it")
    p.add_argument(
        "--floor-jobs", type=int, default=3000, help="jobs per kind of the floor (bench/floor.py)"
    )
    p.add_argument("--no-floor", action="store_true", help="skip the floor")
    p.add_argument(
        "--profile",
        nargs="?",
        const="gil",
        default="",
        choices=["gil", "active"],
        help="py-spy on the worker during the measured phase: samples of the thread holding the "
        "GIL (gil, the default: Python CPU time) or of every running thread (active)",
    )
    p.add_argument(
        "--worker-env", action="append", default=[], metavar="NAME=VALUE", help="worker env"
    )
    p.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="API env"
    )
    p.add_argument("--code-ref", default="", metavar="REV", help="benchmark a clean export")
    p.add_argument("--quiet-wait", type=float, default=45.0)
    p.add_argument("--quiet-limit", type=float, default=0.15)
    args = p.parse_args(argv)
    args.ramp = min(args.ramp, args.duration / 2)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])
    if args.code_ref:
        return run_on_snapshot(args.code_ref, _without_code_ref(argv), "route.py")
    configs = list(
        itertools.product(
            [int(x) for x in args.workers.split(",") if x.strip()],
            [int(x) for x in args.worker_threads.split(",") if x.strip()],
            [float(x) for x in args.relay_interval.split(",") if x.strip()],
        )
    )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    n_warm, n_meas = int(args.rate * args.warmup), int(args.rate * args.duration)
    report: dict[str, Any] = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["bench/route.py", *argv]),
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model()},
        "code": _git_state(),
        "config": {
            k: getattr(args, k)
            for k in (
                "rate",
                "duration",
                "warmup",
                "ramp",
                "latency",
                "backlog",
                "backlog_rate",
                "worker_env",
                "server_env",
            )
        },
        "floor": {},
        "runs": {},
    }
    code = report["code"]
    print(
        f"code: commit {code['commit']}"
        + (f", uncommitted changes in {len(code['dirty'])} file(s)" if code["dirty"] else ""),
        flush=True,
    )
    per = n_warm + n_meas + args.backlog
    print(f"generating {per * len(configs)} signed 3-line orders/create webhooks ...", flush=True)
    reqs = generate(per * len(configs), secret=SECRET, lines=3)
    ok = True
    with tempfile.TemporaryDirectory(prefix="dropship-route-") as tmp_name:
        tmp = Path(tmp_name)
        pg_extra = (*PG_EXTRA, "-c shared_preload_libraries=pg_stat_statements")
        with svc.postgres(durable=True, extra=pg_extra) as pg, svc.redis() as rds:
            pg.psql(f"CREATE DATABASE {DB_NAME}")
            url = pg.url(DB_NAME)
            migrate.upgrade(url)
            pg.psql("CREATE EXTENSION pg_stat_statements", DB_NAME)
            pg_pid = int((pg.datadir / "postmaster.pid").read_text().split()[0])
            report["postgres"] = {
                n: pg.psql(f"SHOW {n}").strip()
                for n in ("server_version", "fsync", "synchronous_commit", "full_page_writes")
            }
            api_port, supplier_port = svc.free_port(), svc.free_port()
            env = server_env(
                url,
                rds.url,
                tmp / "var",
                api_port,
                dict(kv.split("=", 1) for kv in args.server_env),
            )
            asyncio.run(setup_merchant(url, env["DROPSHIP_SECRET_KEY"], supplier_port))
            if not args.no_floor:
                # The floor of every thread count measured, on the same servers, before the
                # pipeline (and with nothing else of ours running).
                for threads in sorted({t for _, t, _ in configs}):
                    relay = configs[0][2]
                    print(f"\n== floor: one worker process, {threads} threads", flush=True)
                    report["floor"][str(threads)] = floor.measure(
                        lambda sql: pg.psql(sql, DB_NAME),
                        worker_env(args, env, threads, relay),
                        rds.url,
                        threads=threads,
                        jobs=args.floor_jobs,
                        log=tmp / f"floor-{threads}t.log",
                    )
            with (
                supplier_server(supplier_port, args.latency, tmp / "supplier.log") as sup,
                bench_server(api_port, 1, env, tmp / "api.log") as api,
            ):
                for k, (workers, threads, relay) in enumerate(configs):
                    chunk = reqs[k * per : (k + 1) * per]
                    run = run_config(
                        args,
                        threads=threads,
                        relay=relay,
                        workers=workers,
                        base_env=env,
                        pg=pg,
                        pg_pid=pg_pid,
                        api_pid=api.pid,
                        api_port=api_port,
                        supplier_proc=sup,
                        supplier_port=supplier_port,
                        warm=chunk[:n_warm],
                        measured=chunk[n_warm : n_warm + n_meas],
                        backlog=chunk[n_warm + n_meas :],
                        tmp=tmp,
                        stamp=stamp,
                    )
                    report["runs"][f"{workers}w, {threads} thr, relay {relay:g}"] = run
                    ok = ok and run["checks"]["ok"]
                    ok = ok and run.get("backlog", {}).get("checks", {}).get("ok", True)
            api_errors = count_log_errors(tmp / "api.log")
            if api_errors:
                print(f"API server logged errors: {api_errors}")
            report["api_log_errors"] = api_errors
    print_report(report["runs"], args)
    print_floor_and_ratios(report, args)
    report["ok"] = ok
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"route-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults: {_shown(out)}")
    if not ok:
        print("CHECK FAILED (see 'checks' above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
