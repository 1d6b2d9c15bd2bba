"""Housekeeping that makes the system self-healing.

The sweeper re-enqueues work that should have progressed but did not, as each domain declares it
next to its task (``@task(..., stale=...)``): a webhook accepted but not processed (its job was
lost with a Redis that had no persistence, say), an order still waiting for validation or
routing, a purchase order still to place, an email still to send (those two not before their
``next_attempt_at`` while they back off). It also runs every retention purge the domains declare
(``@housekeeping``): raw webhook bodies after 30 days, idempotency keys after 24 h, old
periodic-run slots. Tasks are idempotent, so a spurious re-enqueue costs only a no-op run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta

import dramatiq
import structlog
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from app.db import utcnow
from app.jobs.outbox import enqueue
from app.jobs.task import StaleWindow, TaskContext, discover, task

log = structlog.get_logger(__name__)

#: Most items of one kind re-enqueued by one sweep (the next sweep takes the rest).
BATCH = 5000
#: Seconds between two sweeps (the scheduler's slot).
EVERY_SECONDS = 60


def oldest_waiting(broker: dramatiq.Broker, queue: str) -> datetime | None:
    """When the oldest message still waiting in ``queue`` was sent; None if it is empty (or the
    broker cannot tell). Both brokers hand out a queue first in, first out."""
    data: bytes | None = None
    if isinstance(broker, StubBroker):
        waiting = broker.queues.get(queue)
        if waiting is not None and waiting.queue:
            data = waiting.queue[0]
    elif isinstance(broker, RedisBroker):
        full = f"{broker.namespace}:{queue}"
        oldest = broker.client.lindex(full, 0)
        if oldest is not None:
            found = broker.client.hget(f"{full}.msgs", oldest)
            data = found if isinstance(found, bytes) else None
    if data is None:
        return None
    sent: datetime = Message.decode(data).message_datetime
    return sent


async def behind(queues: Iterable[str], cutoff: datetime) -> set[str]:
    """The queues whose oldest waiting message was sent before ``cutoff``: the workers are more
    than a stale window behind on them, so work that looks idle may only be waiting there."""
    broker = dramatiq.get_broker()

    def look() -> set[str]:
        out = set()
        for q in set(queues):
            sent = oldest_waiting(broker, q)
            if sent is not None and sent < cutoff:
                out.add(q)
        return out

    return await asyncio.to_thread(look)  # Redis answers on a blocking client


@task("maintenance.sweep", max_retries=0, every=EVERY_SECONDS)
async def sweep(ctx: TaskContext, older_than: int | None = None) -> None:
    """Re-enqueue work idle for ``older_than`` seconds (default: ``settings.stale_after``).

    Not for a queue that is itself more than that behind (a flash sale's backlog, workers
    stopped for a while): its idle-looking work is most likely still in the queue, and sending
    it all again would double the backlog at every sweep. What was really lost there is found
    by the first sweep after the backlog is worked off."""
    idle = ctx.settings.stale_after if older_than is None else int(older_than)
    now = utcnow()
    window = StaleWindow(now=now, cutoff=now - timedelta(seconds=idle), limit=BATCH)
    registry = discover()
    requeued: dict[str, int] = {}
    purged: dict[str, int] = {}
    swept = [t for t in registry.tasks.values() if t.stale is not None]
    # A zero window is "everything, now" (the in-process broker's start, an operator's call).
    deferred = await behind((t.queue for t in swept), window.cutoff) if idle > 0 else set()
    if deferred:
        log.info("maintenance.sweep_deferred", queues=sorted(deferred))
    async with ctx.db.transaction() as session:
        for declared in swept:
            if declared.stale is None or declared.queue in deferred:
                continue
            found = await declared.stale(session, window)
            for item_id in found:
                await enqueue(session, declared, item_id)
            requeued[declared.name] = len(found)
        for name, purge in registry.purges.items():
            purged[name] = await purge(session, now)
    if any(requeued.values()):
        log.info("maintenance.sweep", **requeued)
    if any(purged.values()):
        log.debug("maintenance.purged", **purged)
