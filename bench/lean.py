"""EXPERIMENT, bench-only: the webhook receiver with the suggested hot-path changes applied.

Not product code and not used by the default benchmark: ``bench/ingest.py --lean`` measures it
next to the real endpoint, so each suggestion made for app/webhooks/{controllers,ingest}.py and
app/main.py comes with a number. Same contract as the real receiver: same checks and answers, a
2xx only after the row and its outbox job are durably committed, duplicates stored once.

Three mounts of the same logic:

* ``POST /bench/lean``: a normal Litestar route handler taking ``Request`` (behind the app's
  middlewares, like the real receiver);
* ``POST /bench/lean-asgi``: a Litestar ``@asgi`` route (routing and the app's middlewares, but
  no Request, signature model, DI or Response objects);
* ``POST /bench/lean-raw``: answered by a thin ASGI wrapper in front of Litestar (no routing,
  no middlewares), what a dedicated raw-ASGI mount of the webhook would cost.

Changes against the real path:

1. HMAC checked directly on the raw body with ``hmac.digest`` (the algorithm shopifyapp uses:
   base64 HMAC-SHA256 of the body with the client secret, then the old secret), instead of
   ``verify_webhook_req``, which validates and copies the request, copies and lower-cases the
   headers, builds a log object and re-encodes the body (since app/webhooks/shopify_verify.py
   no longer lets it round-trip the body through ``json``, this is ~20 µs, not ~200 µs);
2. the group-commit writer holds dedicated asyncpg connections and sends each batch as ONE
   statement in autocommit (a single statement is its own transaction; with
   ``synchronous_commit=on`` it returns only once its commit record is flushed), instead of a
   pooled SQLAlchemy session: pre-ping (BEGIN; SELECT; ROLLBACK), BEGIN, the statement, COMMIT
   and the reset-on-return ROLLBACK, seven round trips;
3. each batch is sorted by webhook id (and inserted in that order) so two concurrent batches
   take the unique-index locks in the same order (the real writer can deadlock: two writers, a
   delivery and its redelivery in two batches in opposite order), and a deadlock or
   serialization failure is retried rather than failing the whole batch with 500s;
4. the shop lookup is single-flight and serves the stale entry while one task refreshes it,
   instead of every concurrent request querying the database when the 5 s entry expires.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
import structlog
from litestar import Litestar, Request, asgi, post
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    NotFoundException,
)
from litestar.response import Response

from app.merchants.models import MerchantStatus
from app.merchants.service import MerchantError, ShopEntry, normalize_shop_domain
from app.services import Services
from app.webhooks.ingest import IncomingWebhook
from app.webhooks.tasks import process_delivery
from app.webhooks.topics import HANDLED_TOPICS, INACTIVE_SHOP_TOPICS

log = structlog.get_logger(__name__)

_ACCEPTED = b'{"status":"accepted"}'
_DUPLICATE = b'{"status":"duplicate"}'
_IGNORED = b'{"status":"ignored"}'

# The real statement, with positional parameters, rows inserted in webhook-id order.
_INGEST_SQL = """
WITH incoming AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::timestamptz[]
    ) AS t(id, source, merchant_id, topic, webhook_id, event_id, payload, received_at)
), inserted AS (
    INSERT INTO webhook_deliveries
        (id, source, merchant_id, topic, webhook_id, event_id, payload, received_at)
    SELECT id, source, merchant_id, topic, webhook_id, event_id, payload, received_at
    FROM incoming
    ORDER BY source, webhook_id
    ON CONFLICT DO NOTHING
    RETURNING id
), jobs AS (
    INSERT INTO outbox (id, actor, args, available_at, attempts, created_at)
    SELECT gen_random_uuid(), $9, jsonb_build_array(CAST(id AS text)), now(), 0, now()
    FROM inserted
)
SELECT id FROM inserted
"""

_RETRY = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


class LeanWriter:
    """Group commit on dedicated connections, one round trip per batch."""

    def __init__(self, dsn: str, *, writers: int = 2, max_batch: int = 256) -> None:
        self.dsn = dsn
        self.writers = writers
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[IncomingWebhook, asyncio.Future[bool]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        self.retries = 0

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.writers)]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def submit(self, webhook: IncomingWebhook) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((webhook, future))
        return await future

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch.sort(key=lambda item: (item[0].source, item[0].webhook_id))
            rows = [w for w, _ in batch]
            args = (
                [w.id for w in rows],
                [w.source for w in rows],
                [w.merchant_id for w in rows],
                [w.topic for w in rows],
                [w.webhook_id for w in rows],
                [w.event_id for w in rows],
                [w.payload for w in rows],
                [w.received_at for w in rows],
                process_delivery.name,
            )
            stored: set[uuid.UUID] | None = None
            error: BaseException | None = None
            for attempt in range(3):
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self.dsn)
                    stored = {r[0] for r in await conn.fetch(_INGEST_SQL, *args)}
                    break
                except _RETRY as exc:  # rolled back; the statement is idempotent
                    self.retries += 1
                    error = exc
                    await asyncio.sleep(0.001 * (attempt + 1))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    error = exc
                    if conn is not None and not conn.is_closed():
                        conn.terminate()
                    conn = None
                    break
            if stored is None:
                log.error("lean.write_failed", error=repr(error), batch=len(batch))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error or RuntimeError("write failed"))
                continue
            self.batches += 1
            for w, fut in batch:
                if not fut.done():
                    fut.set_result(w.id in stored)


class LeanDirectory:
    """shop -> merchant; single-flight refresh, stale entries served while refreshing."""

    def __init__(self, dsn_conn: Callable[[], Awaitable[asyncpg.Connection]], ttl: float = 5.0):
        self._connect = dsn_conn
        self.ttl = ttl
        self._cache: dict[str, tuple[float, ShopEntry | None]] = {}
        self._inflight: dict[str, asyncio.Task[ShopEntry | None]] = {}

    async def lookup(self, shop: str) -> ShopEntry | None:
        hit = self._cache.get(shop)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self._inflight.get(shop)
        if task is None:
            task = asyncio.create_task(self._load(shop))
            self._inflight[shop] = task
            task.add_done_callback(lambda _t: self._inflight.pop(shop, None))
        if hit is not None and hit[1] is not None:
            return hit[1]  # stale while revalidating
        return await asyncio.shield(task)

    async def _load(self, shop: str) -> ShopEntry | None:
        conn = await self._connect()
        try:
            row = await conn.fetchrow(
                "SELECT id, status FROM merchants WHERE shop_domain = $1", shop
            )
        finally:
            await conn.close()
        entry = None if row is None else ShopEntry(row[0], row[1] == MerchantStatus.ACTIVE)
        self._cache[shop] = (time.monotonic() + (self.ttl if entry else 1.0), entry)
        return entry


class Lean:
    """The shared state of both lean mounts (one per server process)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        settings = services.settings
        self.secrets = tuple(
            s.encode() for s in (settings.shopify_api_secret, settings.shopify_old_api_secret) if s
        )
        self.dsn = settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.writer = LeanWriter(self.dsn, max_batch=settings.ingest_batch_max)
        self.directory = LeanDirectory(lambda: asyncpg.connect(self.dsn))

    def verify(self, raw: bytes, received: str) -> bool:
        expected = received.encode("latin-1")
        return any(
            hmac.compare_digest(base64.b64encode(hmac.digest(s, raw, "sha256")), expected)
            for s in self.secrets
        )

    async def handle(self, raw: bytes, get: Callable[[str], str | None]) -> tuple[int, bytes]:
        """(status, JSON body) for one webhook; ``get`` reads a lower-case header."""
        received = get("x-shopify-hmac-sha256")
        if not received:
            return _error(401, "missing X-Shopify-Hmac-Sha256 header")
        if not self.verify(raw, received):
            return _error(401, "X-Shopify-Hmac-Sha256 does not match the body")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "body is not UTF-8")
        topic = get("x-shopify-topic")
        webhook_id = get("x-shopify-webhook-id")
        shop = get("x-shopify-shop-domain")
        if not topic or not webhook_id or not shop:
            return _error(400, "missing header(s)")
        if topic not in HANDLED_TOPICS:
            return 200, _IGNORED
        try:
            shop_domain = normalize_shop_domain(shop)
        except MerchantError as exc:
            return _error(400, f"X-Shopify-Shop-Domain: {exc}")
        try:
            if not isinstance(msgspec.json.decode(raw), dict):
                return _error(400, "body must be a JSON object")
        except msgspec.DecodeError as exc:
            return _error(400, f"body is not valid JSON: {exc}")
        entry = await self.directory.lookup(shop_domain)
        if entry is None:
            return _error(404, f"shop {shop_domain} is not a merchant of this service")
        if not entry.active and topic not in INACTIVE_SHOP_TOPICS:
            return 200, _IGNORED
        stored = await self.writer.submit(
            IncomingWebhook(
                source="shopify",
                merchant_id=entry.merchant_id,
                topic=topic,
                webhook_id=webhook_id,
                event_id=get("x-shopify-event-id") or None,
                payload=body,
            )
        )
        return 200, _ACCEPTED if stored else _DUPLICATE


def _error(status: int, detail: str) -> tuple[int, bytes]:
    return status, msgspec.json.encode({"status_code": status, "detail": detail, "extra": {}})


_STATE: dict[str, Lean] = {}


@post("/bench/lean", status_code=200, include_in_schema=False)
async def lean_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    lean = _STATE["lean"]
    raw = await request.body()
    status, body = await lean.handle(raw, request.headers.get)
    if status == 401:
        raise NotAuthorizedException(msgspec.json.decode(body)["detail"])
    if status == 404:
        raise NotFoundException(msgspec.json.decode(body)["detail"])
    if status == 400:
        raise ClientException(msgspec.json.decode(body)["detail"])
    return Response(body, status_code=status, media_type="application/json")


async def _serve(scope: Any, receive: Any, send: Any) -> None:
    """The lean receiver as a bare ASGI app: body from ``receive``, headers from the scope."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    if scope["method"] != "POST":
        status, body = _error(405, "method not allowed")
    else:
        status, body = await _STATE["lean"].handle(b"".join(chunks), headers.get)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@asgi("/bench/lean-asgi", include_in_schema=False)
async def lean_asgi_route(scope: Any, receive: Any, send: Any) -> None:
    """Litestar routing and the app's middlewares, but no Request, DI or Response objects."""
    await _serve(scope, receive, send)


def install(app: Litestar) -> Any:
    """Add the lean routes to ``app``; returns the ASGI callable to serve (raw mount in front)."""
    app.register(lean_route)
    app.register(lean_asgi_route)

    async def startup() -> None:
        lean = Lean(app.state.services)
        await lean.writer.start()
        _STATE["lean"] = lean

    async def shutdown() -> None:
        lean = _STATE.pop("lean", None)
        if lean is not None:
            await lean.writer.stop()

    app.on_startup.append(startup)
    app.on_shutdown.insert(0, shutdown)

    async def front(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/bench/lean-raw":
            await _serve(scope, receive, send)
        else:
            await app(scope, receive, send)

    return front
