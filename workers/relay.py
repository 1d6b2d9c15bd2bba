"""The outbox relay: moves committed jobs from the ``outbox`` table to the broker.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so any number of relays can run;
a row is deleted only after the broker accepted its message. If the broker is down the rows stay
and are sent when it returns; if we crash after sending but before deleting, the job is sent
again, which idempotent actors absorb.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import structlog
from dramatiq import Message
from dramatiq.errors import ActorNotFound
from sqlalchemy import delete, select, update

from app.db import Database, utcnow
from app.jobs.backoff import backoff_ms
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
                # The step is interval * 2**failures, at most 30 s (and 2**8 intervals).
                cap_ms = min(30_000, self.interval * 2**8 * 1000)
                delay = backoff_ms(failures, base_ms=self.interval * 2000, cap_ms=cap_ms) / 1000
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
                select(
                    OutboxMessage.id,
                    OutboxMessage.actor,
                    OutboxMessage.args,
                    OutboxMessage.available_at,
                )
                .where(OutboxMessage.available_at <= utcnow())
                .order_by(OutboxMessage.available_at)
                .limit(self.batch)
            )
            if self.db.dialect == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            rows = (await session.execute(stmt)).all()
            if not rows:
                return 0
            # One thread hop per batch, not per message: the broker client is blocking.
            sent_ids, unknown, error = await asyncio.to_thread(self._send_all, rows)
            if sent_ids:
                await session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(sent_ids)))
            if unknown:
                # A job for an actor this code does not have (e.g. written by a newer release
                # during a rolling deploy): park it instead of blocking the queue behind it.
                log.error("outbox.unknown_actor", ids=[str(i) for i in unknown])
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_(unknown))
                    .values(
                        attempts=OutboxMessage.attempts + 1,
                        last_error="unknown actor",
                        available_at=utcnow() + timedelta(minutes=10),
                    )
                )
        self.sent_total += len(sent_ids)
        if error is not None:
            raise error
        return len(sent_ids)

    def _send_all(self, rows: Any) -> tuple[list[Any], list[Any], Exception | None]:
        """Send rows in order; stop at the first broker failure.

        Returns (sent ids, ids of unknown actors, the failure if any).
        """
        sent: list[Any] = []
        unknown: list[Any] = []
        for row in rows:
            try:
                self._send(row.actor, row.args, str(row.id), row.available_at)
            except ActorNotFound:
                unknown.append(row.id)
                continue
            except Exception as exc:
                return sent, unknown, exc
            sent.append(row.id)
        return sent, unknown, None

    def _send(self, actor_name: str, args: list[Any], outbox_id: str, due: datetime) -> None:
        actor = self.broker.get_actor(actor_name)
        # The outbox id becomes the message id: a re-sent job is recognisable in logs. The
        # message is dated when its job became due, not when it was relayed: after the workers
        # were stopped, a queue of jobs due long ago shows how far behind it is (the sweeper then
        # leaves that backlog alone instead of enqueueing it again).
        message: Message[Any] = Message(
            queue_name=actor.queue_name,
            actor_name=actor_name,
            args=tuple(args),
            kwargs={},
            options={},
            message_id=outbox_id,
            message_timestamp=int(due.timestamp() * 1000),
        )
        self.broker.enqueue(message)
