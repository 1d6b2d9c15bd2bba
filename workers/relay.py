"""The outbox relay: moves committed jobs from the ``outbox`` table to the broker.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so any number of relays can run;
a row is deleted only after the broker accepted its message. If the broker is down the rows stay
and are sent when it returns; if we crash after sending but before deleting, the job is sent
again, which idempotent actors absorb.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import dramatiq
import structlog
from dramatiq import Message
from sqlalchemy import delete, select

from app.db import Database, utcnow
from app.jobs.models import OutboxMessage

log = structlog.get_logger(__name__)


class OutboxRelay:
    def __init__(
        self, db: Database, broker: dramatiq.Broker, *, interval: float = 0.2, batch: int = 500
    ) -> None:
        self.db = db
        self.broker = broker
        self.interval = interval
        self.batch = batch
        self.sent_total = 0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Ask for an immediate pass (e.g. right after a commit that wrote jobs)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                sent = await self.relay_once()
                failures = 0
            except Exception as exc:
                failures += 1
                delay = min(30.0, self.interval * 2 ** min(failures, 8))
                log.warning("outbox.relay_failed", error=repr(exc), retry_in=round(delay, 2))
                await self._sleep(delay)
                continue
            if sent < self.batch:
                await self._sleep(self.interval)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def relay_once(self) -> int:
        """Send one batch of due jobs; return how many were sent."""
        async with self.db.transaction() as session:
            stmt = (
                select(OutboxMessage.id, OutboxMessage.actor, OutboxMessage.args)
                .where(OutboxMessage.available_at <= utcnow())
                .order_by(OutboxMessage.available_at)
                .limit(self.batch)
            )
            if self.db.dialect == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            rows = (await session.execute(stmt)).all()
            if not rows:
                return 0
            sent_ids: list[Any] = []
            error: Exception | None = None
            for row in rows:
                try:
                    await asyncio.to_thread(self._send, row.actor, row.args, str(row.id))
                except Exception as exc:
                    error = exc
                    break
                sent_ids.append(row.id)
            if sent_ids:
                await session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(sent_ids)))
        self.sent_total += len(sent_ids)
        if error is not None:
            raise error
        return len(sent_ids)

    def _send(self, actor_name: str, args: list[Any], outbox_id: str) -> None:
        actor = self.broker.get_actor(actor_name)
        # The outbox id becomes the message id: a re-sent job is recognisable in logs.
        message: Message[Any] = Message(
            queue_name=actor.queue_name,
            actor_name=actor_name,
            args=tuple(args),
            kwargs={},
            options={},
            message_id=outbox_id,
        )
        self.broker.enqueue(message)
