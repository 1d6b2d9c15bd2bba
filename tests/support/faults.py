"""The end-to-end world for fault tests (tests/test_faults.py) and bench/e2e.py.

Real processes on PostgreSQL + Redis: the API as ``dropship serve`` (with Redis it runs no
workers) and ``dropship worker`` processes, all subprocesses of this one. Around them, on
loopback, the outside world with its fault switches:

* ``RestSupplier``: the REST supplier (bench/supplier.py's server) that can answer 500s, time
  out (the order made, the answer never sent), or hold its answers (to kill a worker while a
  placement is at the supplier);
* ``ShopifyAdminSim`` (dropship/simulators.py) whose ``outage`` answers 429/503;
* ``StripeSim`` served on loopback, and an SMTP sink (tests/support/smtp.py);
* a portal supplier worked by ``portal_bot`` through the supplier API (accept, ship);
* ``refund_bot`` asking a refund of each order paid through Stripe once it is placed.

``Sender`` sends signed ``orders/create`` webhooks at a rate, every tenth a redelivery, and
retries what is not answered 2xx as Shopify does, so every order is eventually accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from app.db import Database
from app.merchants.service import create_merchant
from app.security import SecretBox
from app.suppliers.service import ProductInput, create_supplier, upsert_product
from bench import supplier as bench_supplier
from bench.payloads import _base_order
from connectors.stripe_payments import to_stripe_amount
from dropship.simulators import ShopifyAdminSim, StripeSim
from tests.support import services as svc
from tests.support.ledger import Ledger, Outside, check
from tests.support.shopify import webhook_headers
from tests.support.smtp import Inbox, smtp_inbox
from tests.support.wait import eventually

REPO = Path(__file__).resolve().parents[2]
SHOP = "fault-store.myshopify.com"
SHOPIFY_SECRET = "fault-shopify-secret"
SECRET_KEY = "fault-secret-key-0123456789abcdef"
SUPPLIER_AUTH = "Bearer fault-supplier"
STRIPE_PLATFORM_KEY = "sk_test_51FaultPlatformKey00000000"
REST, PORTAL = "RestCo", "PortalCo"
CATALOG = (("IPOD2008GREEN", REST), ("IPOD2008RED", REST), ("IPOD2008BLACK", PORTAL))
ROUTABLE = {sku for sku, _ in CATALOG}
DUPLICATE_EVERY = 10
#: Every n-th order is paid through Stripe (its PaymentIntent in note_attributes): refunded.
STRIPE_EVERY = 10


# ------------------------------------------------------------------------ REST supplier


class FaultySupplier(bench_supplier.Supplier):
    """bench/supplier.py's supplier with faults: ``mode`` ``"500"`` answers 500 without making
    the order; ``"timeout"`` makes the order and then never answers in time (the caller's
    timeout fires: the worst case for a retry). ``hold`` set: every answer waits until it is
    cleared (the order is made first), ``holding`` counts requests waiting."""

    def __init__(self, latency: float, auth: str | None) -> None:
        super().__init__(latency, auth)
        self.mode: str | None = None
        self.errors = 0
        self.hold = threading.Event()
        self.holding = 0
        self.per_key: dict[str, int] = {}

    async def place(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        if self.mode == "500":
            self.posts += 1
            self.errors += 1
            return 500, {"error": "internal error"}
        status, answer = await super().place(headers, body)
        if status == 201:
            key = headers["idempotency-key"]
            self.per_key[key] = self.per_key.get(key, 0) + 1
        if self.mode == "timeout":
            self.errors += 1
            await asyncio.sleep(30)  # past the connector's timeout: the answer is lost
        while self.hold.is_set():
            self.holding += 1
            try:
                await asyncio.sleep(0.05)
            finally:
                self.holding -= 1
        return status, answer


class RestSupplier:
    """The supplier served on loopback in its own thread and event loop."""

    def __init__(self, latency: float = 0.02) -> None:
        self.sim = FaultySupplier(latency, SUPPLIER_AUTH)
        self.port = svc.free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            server = await asyncio.start_server(
                lambda r, w: bench_supplier.handle(self.sim, r, w), "127.0.0.1", self.port
            )
            self._ready.set()
            async with server:
                await server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            self._loop.run_until_complete(main())

    def __enter__(self) -> RestSupplier:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.sim.hold.clear()
        self.sim.mode = None
        for t in asyncio.all_tasks(self._loop):
            self._loop.call_soon_threadsafe(t.cancel)
        self._thread.join(10)


# ------------------------------------------------------------------------------ webhooks


@dataclass
class Hook:
    webhook_id: str
    body: bytes
    headers: dict[str, str]
    order_id: int
    duplicate: bool


def make_hooks(
    n_orders: int, shopify: ShopifyAdminSim, stripe: StripeSim, account: str
) -> list[Hook]:
    """``n_orders`` new orders (3 lines each) plus one redelivery per 9: 10% duplicates.
    Every order is also made in the Shopify store; every ``STRIPE_EVERY``-th is paid through
    Stripe."""
    base = _base_order(3)
    hooks: list[Hook] = []
    uniques: list[Hook] = []
    i = 0
    while len(uniques) < n_orders:
        if len(hooks) % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:
            o = uniques[-1 - (len(hooks) % min(7, len(uniques)))]
            hooks.append(Hook(o.webhook_id, o.body, o.headers, o.order_id, duplicate=True))
            continue
        order_id = 7_000_000_000 + i
        number = 2001 + i
        payload = dict(
            base,
            id=order_id,
            admin_graphql_api_id=f"gid://shopify/Order/{order_id}",
            name=f"#{number}",
            number=number,
            order_number=number,
            token=uuid.uuid4().hex,
        )
        if i % STRIPE_EVERY == 0:
            pi = f"pi_3Fault{order_id}Pay"
            payload["note_attributes"] = [{"name": "stripe_payment_intent", "value": pi}]
            total = to_stripe_amount(Decimal(str(payload["total_price"])), "USD")
            stripe.add_payment(pi, total, "usd", scope=account)
        shopify.add_order(
            order_id,
            [(int(li["id"]), li.get("sku"), int(li["quantity"])) for li in base["line_items"]],  # type: ignore[index, union-attr]
        )
        body = json.dumps(payload).encode()
        webhook_id = str(uuid.uuid4())
        headers = webhook_headers(body, secret=SHOPIFY_SECRET, shop=SHOP, webhook_id=webhook_id)
        hook = Hook(webhook_id, body, headers, order_id, duplicate=False)
        uniques.append(hook)
        hooks.append(hook)
        i += 1
    return hooks


@dataclass
class Sender:
    """Open loop at ``rate`` per second; what is not answered 2xx is sent again after
    ``retry_after`` s (Shopify retries for hours), until ``give_up`` s."""

    base_url: str
    rate: float
    retry_after: float = 1.0
    give_up: float = 300.0
    accepted: set[str] = field(default_factory=set)
    first_latency: list[float] = field(default_factory=list)
    #: (time.time() of the 2xx, webhook id): the answer time of each new order.
    accepted_at: dict[str, float] = field(default_factory=dict)
    refused: int = 0
    sent: int = 0

    async def _one(self, http: httpx.AsyncClient, hook: Hook) -> None:
        t0 = time.monotonic()
        first = True
        while True:
            try:
                self.sent += 1
                r = await http.post("/webhooks/shopify", content=hook.body, headers=hook.headers)
                ok = 200 <= r.status_code < 300
            except httpx.HTTPError:
                ok = False
            if first:
                self.first_latency.append(time.monotonic() - t0)
                first = False
            if ok:
                self.accepted.add(hook.webhook_id)
                self.accepted_at.setdefault(hook.webhook_id, time.time())
                return
            self.refused += 1
            if time.monotonic() - t0 > self.give_up:
                return
            await asyncio.sleep(self.retry_after)

    async def run(self, hooks: list[Hook]) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits) as http:
            start = time.monotonic()
            tasks = []
            for k, hook in enumerate(hooks):
                delay = start + k / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self._one(http, hook)))
            await asyncio.gather(*tasks)


# ------------------------------------------------------------------------------- the world


@dataclass
class World:
    pg_url: str
    redis_url: str
    tmp: Path
    supplier: RestSupplier
    shopify: ShopifyAdminSim
    stripe: StripeSim
    inbox: Inbox
    #: Work idle this long is enqueued again by the sweeper (small: faults recover in seconds;
    #: not so small that the sweeps of a busy run flood the queues with repeats).
    stale_after: int = 10
    worker_threads: int = 4
    api_port: int = field(default_factory=svc.free_port)
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    merchant_token: str = ""
    portal_key: str = ""
    stripe_account: str = ""
    refunds_asked: set[str] = field(default_factory=set)
    portal_errors: int = 0
    _logs: list[Path] = field(default_factory=list)
    _log_of: dict[int, Path] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_") or k in _KEEP_ENV
        }
        env.update(
            DROPSHIP_DATABASE_URL=self.pg_url,
            DROPSHIP_REDIS_URL=self.redis_url,
            DROPSHIP_SECRET_KEY=SECRET_KEY,
            DROPSHIP_SHOPIFY_API_KEY="fault-client-id",
            DROPSHIP_SHOPIFY_API_SECRET=SHOPIFY_SECRET,
            DROPSHIP_SHOPIFY_ADMIN_URL=self.shopify.admin_url,
            DROPSHIP_SMTP_URL=self.inbox.url,
            DROPSHIP_MAIL_FROM="orders@fault-store.example",
            DROPSHIP_STRIPE_API_BASE=self.stripe.api_base,
            DROPSHIP_STRIPE_SECRET_KEY=STRIPE_PLATFORM_KEY,
            DROPSHIP_PUBLIC_URL="http://127.0.0.1:9",
            DROPSHIP_VAR_DIR=str(self.tmp / "var"),
            DROPSHIP_LOG_LEVEL="WARNING",
            DROPSHIP_RELAY_INTERVAL="0.05",
            DROPSHIP_WORKER_IDLE_POLL_MS="100",
            DROPSHIP_WORKER_THREADS=str(self.worker_threads),
            DROPSHIP_STALE_AFTER=str(self.stale_after),
            PYTHONPATH=str(REPO),
        )
        return env

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}-{len(self._logs)}.log"
        self._logs.append(log)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dropship.cli", *args],
                cwd=REPO,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._log_of[proc.pid] = log
        return proc

    def start_api(self) -> None:
        self.api = self._spawn("api", "serve", "--port", str(self.api_port))

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = self._spawn("worker", "worker")
        self.workers.append(proc)
        return proc

    async def worker_ready(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:  # noqa: ASYNC109
        """Once the worker printed its banner (connected, consuming)."""
        log = self._log_of[proc.pid]
        deadline = time.monotonic() + timeout
        while "dropship worker:" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not start:\n" + self.log_tail())
            await asyncio.sleep(0.1)

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.workers.remove(proc)

    def stop_all(self) -> None:
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.workers.clear()
        self.api = None

    def log_tail(self, n: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}" for p in self._logs)

    # ------------------------------------------------------------------------- set-up

    async def setup(self, workers: int = 2) -> None:
        """The merchant (Shopify token, auto-route, only the shipped email, refunds not booked
        on Shopify: the store simulator does not know that call), its two suppliers, the
        catalog; then the API and ``workers`` worker processes, and Stripe connected."""
        db = Database(self.pg_url)
        box = SecretBox(SECRET_KEY)
        try:
            async with db.transaction() as session:
                merchant, self.merchant_token = await create_merchant(
                    session,
                    SHOP,
                    "owner@fault-store.example",
                    access_token="shpat_" + "0f" * 16,
                    box=box,
                )
                merchant.settings = {
                    "routing": {"auto_route": True},
                    "notifications": {
                        k: k == "shipped"
                        for k in (
                            "order_confirmation",
                            "shipped",
                            "out_for_delivery",
                            "delivered",
                            "delayed",
                            "cancelled",
                            "refund_issued",
                        )
                    },
                    "shopify": {"record_refunds": False},
                }
                suppliers = {}
                suppliers[REST], _ = await create_supplier(
                    session,
                    box,
                    merchant.id,
                    name=REST,
                    connector="rest_json",
                    config={
                        "base_url": self.supplier.base_url,
                        "auth_value": SUPPLIER_AUTH,
                        "timeout": 2,
                    },
                )
                suppliers[PORTAL], self.portal_key = await create_supplier(
                    session,
                    box,
                    merchant.id,
                    name=PORTAL,
                    connector="portal",
                    config={"email_notice": False},
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
                            stock=100_000_000,
                            lead_time_days=3,
                            ships_to=["*"],
                            priority=1,
                        ),
                    )
        finally:
            await db.dispose()
        self.start_api()
        started = [self.start_worker() for _ in range(workers)]
        async with self.http() as http:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/health/live")).status_code == 200:
                        break
                if time.monotonic() > deadline or (self.api and self.api.poll() is not None):
                    raise RuntimeError("the API did not start:\n" + self.log_tail())
                await asyncio.sleep(0.2)
            key = "rk_test_51FaultRestricted000000abcd"
            self.stripe_account = self.stripe.add_key(key)
            r = await http.put(
                "/api/v1/settings/stripe", json={"secret_key": key}, headers=self.merchant
            )
            assert r.status_code == 200, r.text
        for proc in started:
            await self.worker_ready(proc)

    @property
    def merchant(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.merchant_token}"}

    @contextlib.asynccontextmanager
    async def http(self) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            yield http

    # ---------------------------------------------------------------------------- bots

    async def portal_bot(self) -> None:
        """The portal supplier: accepts every purchase order routed to it and ships it whole
        (one parcel, a tracking number of its own). Trouble (a restarting database) is retried
        on the next round; what to do is read from each order's status, so nothing ships twice."""
        supplier = {"Authorization": f"Bearer {self.portal_key}"}
        async with self.http() as http:
            while not self._stop.is_set():
                try:
                    r = await http.get(
                        "/supplier/v1/orders",
                        params={"status": "open", "limit": 100},
                        headers=supplier,
                    )
                    items = r.json()["items"] if r.status_code == 200 else []
                    for po in items:
                        if po["status"] == "placed":
                            a = await http.post(
                                f"/supplier/v1/orders/{po['id']}/accept",
                                json={"supplier_reference": f"P-{po['id'][:8]}"},
                                headers=supplier,
                            )
                            if a.status_code != 200:
                                self.portal_errors += 1
                                continue
                        if po["status"] in ("placed", "accepted"):
                            s = await http.post(
                                f"/supplier/v1/orders/{po['id']}/shipments",
                                json={"tracking_number": f"1ZFAULT{po['id'][:8].upper()}"},
                                headers=supplier,
                            )
                            if s.status_code not in (200, 201):
                                self.portal_errors += 1
                    if len(items) == 100:
                        continue
                except (httpx.HTTPError, ValueError, KeyError):
                    self.portal_errors += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.3)

    async def refund_bot(self) -> None:
        """Asks one refund (1.00) of every order paid through Stripe once it is routed, with an
        Idempotency-Key so that a lost answer is asked again safely."""
        db = Database(self.pg_url)
        try:
            async with self.http() as http:
                while not self._stop.is_set():
                    # The database or the API may be restarting: the next round asks again.
                    with contextlib.suppress(Exception):
                        await self._ask_refunds(db, http)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), 0.5)
        finally:
            await db.dispose()

    async def _ask_refunds(self, db: Database, http: httpx.AsyncClient) -> None:
        from sqlalchemy import text

        async with db.sessionmaker() as session:
            ids = [
                str(r[0])
                for r in await session.execute(
                    text(
                        "SELECT id FROM orders WHERE stripe_payment_reference LIKE 'pi_3Fault%' "
                        "AND status NOT IN ('received', 'ready_to_route')"
                    )
                )
            ]
        for oid in ids:
            if oid in self.refunds_asked:
                continue
            r = await http.post(
                f"/api/v1/orders/{oid}/refunds",
                json={"amount": "1.00", "reason": "fault test"},
                headers={**self.merchant, "Idempotency-Key": f"refund-{oid}"},
            )
            if r.status_code in (200, 201):
                self.refunds_asked.add(oid)

    async def sweeper(self, every: float = 5.0) -> None:
        """``maintenance.sweep`` every ``every`` s (the workers' scheduler sweeps once a minute;
        the interval is not a setting): work idle for ``stale_after`` s is enqueued again."""
        from app.jobs.task import TaskContext
        from app.settings import Settings
        from workers.maintenance import sweep

        settings = Settings(
            database_url=self.pg_url, secret_key=SECRET_KEY, stale_after=self.stale_after
        )
        db = Database(self.pg_url)
        try:
            while not self._stop.is_set():
                with contextlib.suppress(Exception):  # the database may be restarting
                    await sweep(TaskContext(settings=settings, db=db, box=SecretBox(SECRET_KEY)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), every)
        finally:
            await db.dispose()

    def stop_bots(self) -> None:
        self._stop.set()

    # --------------------------------------------------------------------------- state

    async def counts(self) -> dict[str, int]:
        db = Database(self.pg_url)
        try:
            from sqlalchemy import text

            async with db.sessionmaker() as session:
                row = (
                    await session.execute(
                        text(
                            "SELECT (SELECT count(*) FROM orders),"
                            " (SELECT count(*) FROM purchase_orders WHERE status <> 'pending'),"
                            " (SELECT count(*) FROM purchase_orders WHERE status = 'pending'),"
                            " (SELECT count(*) FROM shipments),"
                            " (SELECT count(*) FROM shopify_fulfillments WHERE state='created'),"
                            " (SELECT count(*) FROM emails WHERE status = 'sent'),"
                            " (SELECT count(*) FROM refunds WHERE status = 'succeeded'),"
                            " (SELECT count(*) FROM outbox)"
                        )
                    )
                ).one()
        finally:
            await db.dispose()
        keys = ("orders", "pos_placed", "pos_pending", "shipments", "fulfillments", "emails")
        return dict(zip((*keys, "refunds", "outbox"), (int(v) for v in row), strict=True))

    async def settled(self, n_orders: int, timeout: float = 150) -> dict[str, int]:  # noqa: ASYNC109
        """Wait until every order is placed, shipped, synced, emailed and (when paid through
        Stripe) refunded; the last counts either way."""
        n_refunds = (n_orders + STRIPE_EVERY - 1) // STRIPE_EVERY
        deadline = time.monotonic() + timeout
        c: dict[str, int] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                c = await self.counts()
                if os.environ.get("FAULTS_DEBUG"):
                    print(f"{time.monotonic():.1f} {c}", flush=True)
                if (
                    c["orders"] >= n_orders
                    and c["pos_placed"] >= 2 * n_orders
                    and c["pos_pending"] == 0
                    and c["shipments"] >= n_orders
                    and c["fulfillments"] >= c["shipments"]
                    and c["emails"] >= c["shipments"]
                    and c["refunds"] >= n_refunds
                ):
                    await asyncio.sleep(1.0)  # let stragglers (a duplicate, say) show
                    return await self.counts()
            await asyncio.sleep(0.5)
        return c

    async def ledger(self, accepted: set[str]) -> Ledger:
        db = Database(self.pg_url)
        try:
            return await check(
                db,
                Outside(
                    accepted_webhooks=accepted,
                    routable_skus=ROUTABLE,
                    supplier_orders=dict(self.supplier.sim.per_key),
                    shopify_fulfillments=self.shopify.fulfillment_ids(),
                    smtp_message_ids=[str(m["Message-ID"]) for m in list(self.inbox.messages)],
                    stripe_refunds=[
                        str(r.get("metadata", {}).get("dropship_refund_id"))
                        for r in list(self.stripe.refunds.values())
                    ],
                    refunds_asked=set(self.refunds_asked),
                ),
            )
        finally:
            await db.dispose()


_KEEP_ENV = {"DROPSHIP_TEST_PG_USER", "DROPSHIP_FIXTURES"}


@contextlib.contextmanager
def outside_world(
    supplier_latency: float = 0.02,
) -> Iterator[tuple[RestSupplier, ShopifyAdminSim, StripeSim, Inbox]]:
    """The suppliers, store, Stripe and SMTP sink, all on loopback."""
    inbox_cm = contextlib.contextmanager(smtp_inbox)()
    with (
        RestSupplier(supplier_latency) as supplier,
        ShopifyAdminSim() as shopify,
        StripeSim(platform_key=STRIPE_PLATFORM_KEY).serving() as stripe,
        inbox_cm as inbox,
    ):
        yield supplier, shopify, stripe, inbox


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -------------------------------------------------------------------------------- faults
# Each waits for the state in which the fault bites, breaks the component, and repairs it.


async def _at_least(world: World, what: str, n: int) -> bool:
    try:
        return (await world.counts())[what] >= n
    except Exception:  # the database may be restarting
        return False


async def redis_killed(world: World, redis: svc.Redis) -> None:
    """Redis SIGKILLed once orders are being processed (no persistence: every queued job is
    gone), restarted once work piles up in the outbox that the relay cannot hand over."""
    await eventually(lambda: _at_least(world, "orders", 10), timeout=90, interval=0.1)
    redis.stop()
    try:
        await eventually(lambda: _at_least(world, "outbox", 5), timeout=60, interval=0.1)
    finally:
        redis.start()


async def worker_killed(world: World) -> None:
    """The supplier makes the orders and holds its answers; once as many placements wait there
    as there are workers, every worker is SIGKILLed (no cleanup, no commit), so whichever
    holds them dies mid-placement, and as many new ones are started."""
    await eventually(lambda: _at_least(world, "pos_placed", 8), timeout=90, interval=0.2)
    sim = world.supplier.sim
    n = len(world.workers)
    sim.hold.set()
    try:
        await eventually(lambda: _true(sim.holding >= n), timeout=60, interval=0.05)
        for proc in list(world.workers):
            await asyncio.to_thread(world.kill_worker, proc)
    finally:
        sim.hold.clear()
    for proc in [world.start_worker() for _ in range(n)]:
        await world.worker_ready(proc)


async def postgres_restarted(world: World, pg: svc.Postgres) -> None:
    """``pg_ctl restart -m fast`` while purchase orders are being placed: every connection of
    the API and the workers is cut."""
    await eventually(lambda: _at_least(world, "pos_placed", 8), timeout=90, interval=0.2)
    await asyncio.to_thread(
        subprocess.run,
        [
            *pg.run_as,
            str(pg.bindir / "pg_ctl"),
            "-D",
            str(pg.datadir),
            "-l",
            str(pg.datadir.parent / "log"),
            "-m",
            "fast",
            "-w",
            "restart",
        ],
        check=True,
        capture_output=True,
    )


async def supplier_failing(world: World, errors: int = 10, timeouts: int = 5) -> None:
    """The REST supplier answers 500 (``errors`` times), then times out after making the order
    (``timeouts`` times), then recovers."""
    await eventually(lambda: _at_least(world, "pos_placed", 8), timeout=90, interval=0.2)
    sim = world.supplier.sim
    try:
        sim.mode = "500"
        seen = sim.errors
        await eventually(lambda: _true(sim.errors >= seen + errors), timeout=90, interval=0.1)
        sim.mode = "timeout"
        seen = sim.errors
        await eventually(lambda: _true(sim.errors >= seen + timeouts), timeout=90, interval=0.1)
    finally:
        sim.mode = None


async def shopify_refusing(world: World, refusals: int = 20) -> None:
    """Once parcels ship, Shopify answers 429 (Retry-After: 1) and 503 in turn to ``refusals``
    calls, then recovers."""
    await eventually(lambda: _at_least(world, "shipments", 5), timeout=120, interval=0.2)
    world.shopify.outage = (429, 503)
    try:
        await eventually(lambda: _true(world.shopify.refused >= refusals), timeout=90, interval=0.1)
    finally:
        world.shopify.outage = ()


async def _true(value: bool) -> bool:
    return value
