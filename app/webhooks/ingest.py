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
from sqlalchemy import insert, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.db import Database, utcnow, uuid7
from app.jobs.models import OutboxMessage
from app.jobs.outbox import outbox_row
from app.webhooks.models import WebhookDelivery

log = structlog.get_logger(__name__)

PROCESS_ACTOR = "webhook.process"

_PG_INGEST = text(
    """
    WITH incoming AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:sources AS text[]), CAST(:merchant_ids AS uuid[]),
            CAST(:topics AS text[]), CAST(:webhook_ids AS text[]), CAST(:event_ids AS text[]),
            CAST(:payloads AS text[]), CAST(:received AS timestamptz[])
        ) AS t(id, source, merchant_id, topic, webhook_id, event_id, payload, received_at)
    ), inserted AS (
        INSERT INTO webhook_deliveries
            (id, source, merchant_id, topic, webhook_id, event_id, payload, received_at)
        SELECT id, source, merchant_id, topic, webhook_id, event_id, payload, received_at
        FROM incoming
        ON CONFLICT DO NOTHING
        RETURNING id
    ), jobs AS (
        INSERT INTO outbox (id, actor, args, available_at, attempts, created_at)
        SELECT gen_random_uuid(), :actor, jsonb_build_array(CAST(id AS text)), now(), 0, now()
        FROM inserted
    )
    SELECT id FROM inserted
    """
)


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
    """Group-commit writer. ``await submit(w)`` returns True if stored, False if a duplicate."""

    def __init__(self, db: Database, *, max_batch: int = 256, writers: int = 2) -> None:
        self.db = db
        self.max_batch = max_batch
        self.writers = writers if db.dialect == "postgresql" else 1
        self._queue: asyncio.Queue[tuple[IncomingWebhook, asyncio.Future[bool]]] = asyncio.Queue()
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
        await self._queue.put((webhook, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                stored = await self._write([w for w, _ in batch])
            except Exception as exc:
                log.error("ingest.write_failed", error=repr(exc), batch=len(batch))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.rows += len(batch)
            for w, fut in batch:
                if not fut.done():
                    fut.set_result(w.id in stored)

    async def _write(self, batch: list[IncomingWebhook]) -> set[uuid.UUID]:
        async with self.db.transaction() as session:
            if self.db.dialect == "postgresql":
                result = await session.execute(
                    _PG_INGEST,
                    {
                        "ids": [w.id for w in batch],
                        "sources": [w.source for w in batch],
                        "merchant_ids": [w.merchant_id for w in batch],
                        "topics": [w.topic for w in batch],
                        "webhook_ids": [w.webhook_id for w in batch],
                        "event_ids": [w.event_id for w in batch],
                        "payloads": [w.payload for w in batch],
                        "received": [w.received_at for w in batch],
                        "actor": PROCESS_ACTOR,
                    },
                )
                return {_as_uuid(row[0]) for row in result}
            # SQLite: typed Core statements (UUID and datetime stored SQLAlchemy's way).
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
                    insert(OutboxMessage), [outbox_row(PROCESS_ACTOR, i) for i in stored]
                )
            return stored


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
