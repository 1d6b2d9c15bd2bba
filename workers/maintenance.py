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

from datetime import timedelta

import structlog

from app.db import utcnow
from app.jobs.outbox import enqueue
from app.jobs.task import StaleWindow, TaskContext, discover, task

log = structlog.get_logger(__name__)

#: Most items of one kind re-enqueued by one sweep (the next sweep takes the rest).
BATCH = 5000
#: Seconds between two sweeps (the scheduler's slot).
EVERY_SECONDS = 60


@task("maintenance.sweep", max_retries=0, every=EVERY_SECONDS)
async def sweep(ctx: TaskContext, older_than: int | None = None) -> None:
    """Re-enqueue work idle for ``older_than`` seconds (default: ``settings.stale_after``)."""
    idle = ctx.settings.stale_after if older_than is None else int(older_than)
    now = utcnow()
    window = StaleWindow(now=now, cutoff=now - timedelta(seconds=idle), limit=BATCH)
    registry = discover()
    requeued: dict[str, int] = {}
    purged: dict[str, int] = {}
    async with ctx.db.transaction() as session:
        for declared in registry.tasks.values():
            if declared.stale is None:
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
