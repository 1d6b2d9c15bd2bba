"""The outbox relay: moves committed jobs from the ``outbox`` table to the broker.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so any number of relays can run;
a row is deleted only after the broker accepted its message. If the broker is down the rows stay
and are sent when it returns; if we crash after sending but before deleting, the job is sent
again, which idempotent actors absorb.

Jobs of a batching task (``batch`` > 1, e.g. ``webhook.process``) that queued up are sent as one
message carrying all their ids, oldest first, up to the task's batch size: when a backlog forms,
one run (one transaction) does the work of many; at a trickle each job is still a message of
its own, sent the moment it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass
class _Outgoing:
    """One message to send: the jobs (outbox rows) it carries, their arguments in order."""

    actor: str
    due: datetime
    ids: list[Any] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)


def group(rows: Any, batches: Mapping[str, int]) -> list[_Outgoing]:
    """The messages for ``rows`` (oldest first): one per row, except that the single-argument
    jobs of a batching actor are carried up to ``batches[actor]`` to a message, in their order.
    A message goes out at the place of its oldest job."""
    out: list[_Outgoing] = []
    open_: dict[str, _Outgoing] = {}
    for row in rows:
        size = batches.get(row.actor, 1)
        if size > 1 and len(row.args) == 1:
            current = open_.get(row.actor)
            if current is None or len(current.ids) >= size:
                current = open_[row.actor] = _Outgoing(row.actor, row.available_at)
                out.append(current)
            current.ids.append(row.id)
            current.args.extend(row.args)
            continue
        out.append(_Outgoing(row.actor, row.available_at, [row.id], list(row.args)))
    return out


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        broker: dramatiq.Broker,
        *,
        interval: float = 0.2,
        batch: int = 500,
        batches: Mapping[str, int] | None = None,
    ) -> None:
        self.db = db
        self.broker = broker
        self.interval = interval
        self.batch = batch
        #: Batch size by actor, for the tasks that take several jobs per run.
        self.batches: Mapping[str, int] = batches or {}
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
        """Send rows in order (batching jobs grouped, ``group``); stop at the first broker
        failure.

        Returns (sent ids, ids of unknown actors, the failure if any).
        """
        sent: list[Any] = []
        unknown: list[Any] = []
        for message in group(rows, self.batches):
            try:
                self._send(message.actor, message.args, str(message.ids[0]), message.due)
            except ActorNotFound:
                unknown.extend(message.ids)
                continue
            except Exception as exc:
                return sent, unknown, exc
            sent.extend(message.ids)
        return sent, unknown, None

    def _send(self, actor_name: str, args: list[Any], outbox_id: str, due: datetime) -> None:
        actor = self.broker.get_actor(actor_name)
        # The (first) outbox id becomes the message id: a re-sent job is recognisable in logs. The
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
