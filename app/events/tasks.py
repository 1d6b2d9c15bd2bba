"""``events.handle`` runs one subscriber for one event in its own transaction (``publish``
writes its reaction and job); ``events.dispatch`` is the old hop, kept for events published by
the code before it (their jobs may still be queued, and the sweeper finds them undispatched).

Both run at least once: the dispatch marks the event under its row lock (a second delivery finds
it dispatched), a handling marks its reaction done under its row lock, and every subscriber is
idempotent by its own unique keys.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import structlog

from app.db import DbSession, utcnow
from app.events import service
from app.jobs.task import REGISTRY, TaskContext, housekeeping, rows_affected, task

log = structlog.get_logger(__name__)

#: How long dispatched events stay (their reactions have their own records: emails, deliveries).
RETENTION = timedelta(days=30)


@task("events.dispatch", stale=service.undispatched)
async def dispatch_event(ctx: TaskContext, event_id: str) -> None:
    async with ctx.db.transaction() as session:
        event = await service.claim_for_dispatch(session, uuid.UUID(event_id))
        if event is None:
            return
        await service.add_reactions(session, [(event.id, event.type)])
        event.dispatched_at = utcnow()


@task("events.handle", stale=service.pending_reactions)
async def handle_event(ctx: TaskContext, reaction_id: str) -> None:
    async with ctx.db.transaction() as session:
        rid = uuid.UUID(reaction_id)
        claimed = await service.claim_reaction(session, rid)
        if claimed is None:  # done already, or its event was deleted (shop redacted)
            return
        subscriber, event = claimed
        handler = REGISTRY.subscribers.get(subscriber)
        if handler is None:  # renamed or removed since the event was dispatched
            log.warning("events.unknown_subscriber", event_id=str(event.id), subscriber=subscriber)
        else:
            await handler.fn(ctx, session, event)
        await service.mark_reaction_done(session, rid)


@housekeeping("events.dispatched")
async def drop_old_events(session: DbSession, now: datetime) -> int:
    return await rows_affected(session, service.dispatched_before(now - RETENTION))
