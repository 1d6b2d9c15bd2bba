"""Publishing lifecycle events and handing them to their subscribers.

``publish`` runs in the transaction of the change: the event and the job that dispatches it
commit (or vanish) with it, and a repeated key is a no-op. Dispatching enqueues one job per
subscriber (``app.jobs.task.subscribe``), so a failing reaction retries alone and never holds
back the others; each subscriber is idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Delete, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_for, utcnow, uuid7
from app.events.models import EventReaction, LifecycleEvent
from app.jobs.outbox import enqueue, enqueue_many
from app.jobs.task import StaleWindow
from app.orders.models import Order


async def publish(
    session: AsyncSession,
    order: Order | None,
    type_: str,
    *,
    key: str,
    merchant_id: uuid.UUID | None = None,
    order_id: uuid.UUID | None = None,
    **data: Any,
) -> uuid.UUID | None:
    """Publish ``type_`` once per ``key``; returns the event's id, or None if already published.
    Without the ``order`` object at hand, name its ``merchant_id`` and ``order_id``."""
    merchant = order.merchant_id if order is not None else merchant_id
    if merchant is None:
        raise ValueError("publish: an order or a merchant_id")
    if order is not None:
        order_id = order.id
    if order_id is not None:
        data.setdefault("order_id", str(order_id))
    event_id = uuid7()
    insert = insert_for(session)
    result = await session.execute(
        insert(LifecycleEvent)
        .values(
            id=event_id,
            merchant_id=merchant,
            order_id=order_id,
            type=type_,
            key=key,
            data=data,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["merchant_id", "key"])
        .returning(LifecycleEvent.id)
    )
    if result.scalar_one_or_none() is None:
        return None
    # Imported here: app.events.tasks reads events through this module (a cycle).
    from app.events.tasks import dispatch_event

    await enqueue(session, dispatch_event, event_id)
    return event_id


@dataclass(frozen=True)
class Publication:
    """One event of a batch (``publish_many``)."""

    merchant_id: uuid.UUID
    order_id: uuid.UUID | None
    type: str
    key: str
    data: dict[str, Any]


async def publish_many(session: AsyncSession, events: Sequence[Publication]) -> int:
    """``publish`` for a batch, in two statements whatever its size (the tracking poll's hot
    path); returns how many were new."""
    if not events:
        return 0
    now = utcnow()
    rows = [
        {
            "id": uuid7(),
            "merchant_id": e.merchant_id,
            "order_id": e.order_id,
            "type": e.type,
            "key": e.key,
            "data": {"order_id": str(e.order_id), **e.data} if e.order_id else dict(e.data),
            "created_at": now,
        }
        for e in events
    ]
    result = await session.execute(
        insert_for(session)(LifecycleEvent)
        .on_conflict_do_nothing(index_elements=["merchant_id", "key"])
        .returning(LifecycleEvent.id),
        rows,
    )
    new = list(result.scalars().all())
    from app.events.tasks import dispatch_event

    await enqueue_many(session, dispatch_event, [[event_id] for event_id in new])
    return len(new)


async def claim_for_dispatch(session: AsyncSession, event_id: uuid.UUID) -> LifecycleEvent | None:
    """The event if it still awaits dispatch, row-locked (two deliveries of the job take turns)."""
    event: LifecycleEvent | None = await session.scalar(
        select(LifecycleEvent).where(LifecycleEvent.id == event_id).with_for_update()
    )
    if event is None or event.dispatched_at is not None:
        return None
    return event


async def event_by_id(session: AsyncSession, event_id: uuid.UUID) -> LifecycleEvent | None:
    return await session.get(LifecycleEvent, event_id)


async def add_reactions(
    session: AsyncSession, event: LifecycleEvent, subscribers: Sequence[str]
) -> list[uuid.UUID]:
    """One pending reaction per subscriber of the event (one statement); their ids."""
    ids = [uuid7() for _ in subscribers]
    rows = [
        {"id": rid, "event_id": event.id, "subscriber": name, "created_at": utcnow()}
        for rid, name in zip(ids, subscribers, strict=True)
    ]
    if rows:
        await session.execute(insert_for(session)(EventReaction), rows)
    return ids


async def claim_reaction(
    session: AsyncSession, reaction_id: uuid.UUID
) -> tuple[EventReaction, LifecycleEvent] | None:
    """The reaction still to run and its event, the reaction row-locked (two deliveries of its
    job take turns, the second finds it done)."""
    reaction: EventReaction | None = await session.scalar(
        select(EventReaction).where(EventReaction.id == reaction_id).with_for_update()
    )
    if reaction is None or reaction.done_at is not None:
        return None
    event = await session.get(LifecycleEvent, reaction.event_id)
    if event is None:
        return None
    return reaction, event


async def pending_reactions(session: AsyncSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Reactions whose job was lost or gave up (the sweeper runs them again)."""
    return await window.ids(
        session,
        select(EventReaction.id).where(
            EventReaction.done_at.is_(None), EventReaction.created_at < window.cutoff
        ),
    )


async def events_of_order(session: AsyncSession, order_id: uuid.UUID) -> Sequence[LifecycleEvent]:
    return (
        await session.scalars(
            select(LifecycleEvent)
            .where(LifecycleEvent.order_id == order_id)
            .order_by(LifecycleEvent.created_at, LifecycleEvent.id)
        )
    ).all()


async def undispatched(session: AsyncSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Events whose dispatch job was lost (the sweeper enqueues it again)."""
    return await window.ids(
        session,
        select(LifecycleEvent.id).where(
            LifecycleEvent.dispatched_at.is_(None), LifecycleEvent.created_at < window.cutoff
        ),
    )


def dispatched_before(before: datetime) -> Delete:
    """Dispatched events older than ``before``: their reactions keep their own records."""
    return delete(LifecycleEvent).where(
        LifecycleEvent.dispatched_at.is_not(None), LifecycleEvent.created_at < before
    )
