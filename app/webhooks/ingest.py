"""The webhook hot path: durable, deduplicated, group-committed inserts.

Every accepted webhook is written, together with its ``webhook.process`` outbox job, before the
2xx goes out: a 2xx means it survives a crash. To keep that cheap under load, concurrent requests
share transactions (group commit): a writer takes everything queued since its last commit and
writes it in one statement and one commit. On PostgreSQL the whole batch is one round trip (a
data-modifying CTE over ``unnest`` arrays); on SQLite it is one transaction.

Duplicates (the same ``X-Shopify-Webhook-Id``, or the same event id for the topic) are absorbed
by the unique constraints with ``ON CONFLICT DO NOTHING``, so five concurrent deliveries of one
webhook store one row and enqueue one job whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url

from app.db import Database, utcnow, uuid7
from app.jobs.errors import RETRYABLE_SQLSTATES
from app.jobs.models import OutboxMessage
from app.jobs.outbox import notify_committed, outbox_row
from app.webhooks.models import WebhookDelivery
from app.webhooks.tasks import process_delivery

log = structlog.get_logger(__name__)

#: One statement per batch, run outside an explicit transaction: PostgreSQL commits it (durably,
#: with ``synchronous_commit`` on) before answering, so one round trip stores the batch. Rows are
#: inserted in ``(source, webhook_id)`` order so two writers never take the same unique-index
#: locks in opposite orders (a delivery and its redelivery in two concurrent batches deadlocked).
PG_INGEST_SQL = """
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
    SELECT gen_random_uuid(), $9, jsonb_build_array(id::text), now(), 0, now()
    FROM inserted
)
SELECT id FROM inserted
"""


class Overloaded(Exception):
    """More webhooks are waiting than the writers can take: answer 503 now, not in 5 s."""


@dataclass(slots=True)
class IncomingWebhook:
    source: str
    merchant_id: uuid.UUID
    topic: str
    webhook_id: str
    event_id: str | None
    payload: str
    id: uuid.UUID = field(default_factory=uuid7)
    received_at: datetime = field(default_factory=utcnow)


class IngestWriter:
    """Group-commit writer. ``await submit(w)`` returns True if stored, False if a duplicate.

    On PostgreSQL each writer task owns one raw asyncpg connection (no pool checkout, no
    ping, no BEGIN/COMMIT round trips); on SQLite one writer uses the engine.
    """

    def __init__(
        self, db: Database, *, max_batch: int = 256, writers: int = 2, max_waiting: int = 4096
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        self.writers = writers if db.dialect == "postgresql" else 1
        self._queue: asyncio.Queue[tuple[IncomingWebhook, asyncio.Future[bool]]] = asyncio.Queue(
            maxsize=max_waiting
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        self.rows = 0

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"ingest-writer-{i}") for i in range(self.writers)
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def submit(self, webhook: IncomingWebhook) -> bool:
        if not self._tasks:
            raise RuntimeError("IngestWriter.start() was not called")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((webhook, future))
        except asyncio.QueueFull:
            raise Overloaded(f"{self._queue.qsize()} webhooks waiting to be stored") from None
        return await future

    async def _run(self) -> None:
        conn: Any = None
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                try:
                    if self.db.dialect == "postgresql":
                        if conn is None or conn.is_closed():
                            conn = await self._connect()
                        stored = await self._write_pg(conn, [w for w, _ in batch])
                    else:
                        stored = await self._write_sqlite([w for w, _ in batch])
                except Exception as exc:
                    log.error("ingest.write_failed", error=repr(exc), batch=len(batch))
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                        conn = None
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self.batches += 1
                self.rows += len(batch)
                if stored:
                    notify_committed()
                for w, fut in batch:
                    if not fut.done():
                        fut.set_result(w.id in stored)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _connect(self) -> Any:
        import asyncpg

        url = make_url(self.db.url).set(drivername="postgresql")
        return await asyncpg.connect(url.render_as_string(hide_password=False))

    async def _write_pg(self, conn: Any, batch: list[IncomingWebhook]) -> set[uuid.UUID]:
        batch = sorted(batch, key=lambda w: (w.source, w.webhook_id))
        args = (
            [w.id for w in batch],
            [w.source for w in batch],
            [w.merchant_id for w in batch],
            [w.topic for w in batch],
            [w.webhook_id for w in batch],
            [w.event_id for w in batch],
            [w.payload for w in batch],
            [w.received_at for w in batch],
            process_delivery.name,
        )
        for attempt in range(3):
            try:
                rows = await conn.fetch(PG_INGEST_SQL, *args)
            except Exception as exc:
                # Worth one more try: the statement is idempotent (ON CONFLICT DO NOTHING).
                if getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES and attempt < 2:
                    log.warning("ingest.retry", sqlstate=exc.sqlstate, batch=len(batch))  # type: ignore[attr-defined]
                    continue
                raise
            return {_as_uuid(r[0]) for r in rows}
        raise AssertionError("unreachable")

    async def _write_sqlite(self, batch: list[IncomingWebhook]) -> set[uuid.UUID]:
        async with self.db.transaction() as session:
            # Typed Core statements (UUID and datetime stored SQLAlchemy's way).
            stored: set[uuid.UUID] = set()
            for w in batch:
                stmt = (
                    sqlite_insert(WebhookDelivery)
                    .values(
                        id=w.id,
                        source=w.source,
                        merchant_id=w.merchant_id,
                        topic=w.topic,
                        webhook_id=w.webhook_id,
                        event_id=w.event_id,
                        payload=w.payload,
                        received_at=w.received_at,
                    )
                    .on_conflict_do_nothing()
                    .returning(WebhookDelivery.id)
                )
                if (await session.execute(stmt)).first() is not None:
                    stored.add(w.id)
            if stored:
                await session.execute(
                    insert(OutboxMessage), [outbox_row(process_delivery, i) for i in stored]
                )
            return stored


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
