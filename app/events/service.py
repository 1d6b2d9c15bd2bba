"""Publishing lifecycle events and handing them to their subscribers.

``publish`` runs in the transaction of the change: the event, one pending reaction per
subscriber (``app.jobs.task.subscribe``) and one ``events.handle`` job per reaction commit (or
vanish) with it, and a repeated key is a no-op. Subscribers are known statically, so there is no
dispatch hop: the reactions are one ``INSERT … SELECT`` for a whole batch, filtered there by each
subscriber's ``when`` (no reaction, no job where it would do nothing). A failing reaction retries
alone and never holds back the others; each subscriber is idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Select,
    delete,
    func,
    insert,
    literal,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_for, utcnow, uuid7
from app.events.models import EventReaction, LifecycleEvent
from app.jobs.outbox import enqueue_many
from app.jobs.task import REGISTRY, StaleWindow, Subscriber, discover
from app.orders.models import Order

_discovered = False


def subscribers_of(type_: str) -> list[Subscriber]:
    """Every subscriber of ``type_``, whichever process publishes (the API imports only some
    domains' tasks modules by itself: discover them all once)."""
    global _discovered
    if not _discovered:
        discover()
        _discovered = True
    return REGISTRY.subscribers_of(type_)


def _new_id(session: AsyncSession) -> ColumnElement[Any]:
    """A fresh UUID computed by the database (a reaction row of an INSERT … SELECT); SQLite
    stores a UUID as 32 hex digits."""
    if session.get_bind().dialect.name == "postgresql":
        return func.gen_random_uuid()
    return func.lower(func.hex(func.randomblob(16)))


async def add_reactions(
    session: AsyncSession, events: Sequence[tuple[uuid.UUID, str]]
) -> list[uuid.UUID]:
    """The pending reactions of ``events`` (id, type) and their ``events.handle`` jobs, in two
    statements whatever their number (none for types nobody subscribes to, no outbox INSERT when
    every filter says no); the reactions' ids."""
    wanted: dict[str, tuple[Subscriber, list[uuid.UUID]]] = {}
    for event_id, type_ in events:
        for subscriber in subscribers_of(type_):
            wanted.setdefault(subscriber.name, (subscriber, []))[1].append(event_id)
    if not wanted:
        return []
    now = literal(utcnow(), EventReaction.created_at.type)
    new_id = _new_id(session)
    selects: list[Select[Any]] = []
    for name, (subscriber, ids) in sorted(wanted.items()):
        where = [LifecycleEvent.id == ids[0] if len(ids) == 1 else LifecycleEvent.id.in_(ids)]
        if subscriber.when is not None:
            where.append(subscriber.when(LifecycleEvent))
        selects.append(select(new_id, LifecycleEvent.id, literal(name), now).where(*where))
    source = selects[0] if len(selects) == 1 else union_all(*selects)
    result = await session.execute(
        insert(EventReaction)
        .from_select(["id", "event_id", "subscriber", "created_at"], source)
        .returning(EventReaction.id)
    )
    ids = list(result.scalars().all())
    # Imported here: app.events.tasks reads events through this module (a cycle).
    from app.events.tasks import handle_event

    await enqueue_many(session, handle_event, [[rid] for rid in ids])
    return ids


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
    deferred: list[Publication] | None = session.info.get(_DEFERRED)
    if deferred is not None and not session.in_nested_transaction():
        # Written with the others at the end of the batch (``deferred_publications``). Not
        # from inside a savepoint: one rolled back must take its events with it.
        deferred.append(Publication(merchant, order_id, type_, key, data, event_id))
        return event_id
    now = utcnow()
    result = await session.execute(
        insert_for(session)(LifecycleEvent)
        .values(
            id=event_id,
            merchant_id=merchant,
            order_id=order_id,
            type=type_,
            key=key,
            data=data,
            created_at=now,
            # Dispatched as it is published: ``undispatched`` only finds the old code's events.
            dispatched_at=now,
        )
        .on_conflict_do_nothing(index_elements=["merchant_id", "key"])
        .returning(LifecycleEvent.id)
    )
    if result.scalar_one_or_none() is None:
        return None
    await add_reactions(session, [(event_id, type_)])
    return event_id


@dataclass(frozen=True)
class Publication:
    """One event of a batch (``publish_many``)."""

    merchant_id: uuid.UUID
    order_id: uuid.UUID | None
    type: str
    key: str
    data: dict[str, Any]
    #: Chosen ahead (a deferred ``publish`` hands it to its caller); else one is drawn.
    id: uuid.UUID | None = None


_DEFERRED = "deferred_publications"


@asynccontextmanager
async def deferred_publications(session: AsyncSession) -> AsyncIterator[None]:
    """Inside, ``publish`` only notes its event; on the way out (the work succeeded) every event
    noted is written by one ``publish_many``: three statements for the events, reactions and
    jobs of a whole unit of work (an order taken in, validated, routed and placed in the
    portal), where each ``publish`` costs up to three. Pending ORM changes are flushed first
    (an event names rows they insert). Nested use joins the outer batch."""
    if session.info.get(_DEFERRED) is not None:
        yield
        return
    deferred: list[Publication] = []
    session.info[_DEFERRED] = deferred
    try:
        yield
    finally:
        session.info.pop(_DEFERRED, None)
    if deferred:
        await session.flush()
        await publish_many(session, deferred)


async def publish_many(session: AsyncSession, events: Sequence[Publication]) -> int:
    """``publish`` for a batch, in at most three statements whatever its size (the tracking
    poll's hot path); returns how many were new. A key twice in the batch is published once."""
    if not events:
        return 0
    deferred: list[Publication] | None = session.info.get(_DEFERRED)
    if deferred is not None and not session.in_nested_transaction():
        deferred.extend(events)
        return len(events)
    seen: set[tuple[uuid.UUID, str]] = set()
    unique = []
    for e in events:
        if (e.merchant_id, e.key) not in seen:
            seen.add((e.merchant_id, e.key))
            unique.append(e)
    events = unique
    now = utcnow()
    ids = [e.id or uuid7() for e in events]
    rows = [
        {
            "id": event_id,
            "merchant_id": e.merchant_id,
            "order_id": e.order_id,
            "type": e.type,
            "key": e.key,
            "data": {"order_id": str(e.order_id), **e.data} if e.order_id else dict(e.data),
            "created_at": now,
            "dispatched_at": now,
        }
        for event_id, e in zip(ids, events, strict=True)
    ]
    result = await session.execute(
        insert_for(session)(LifecycleEvent)
        .on_conflict_do_nothing(index_elements=["merchant_id", "key"])
        .returning(LifecycleEvent.id),
        rows,
    )
    new = list(result.scalars().all())
    types = dict(zip(ids, (e.type for e in events), strict=True))
    await add_reactions(session, [(event_id, types[event_id]) for event_id in new])
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


async def claim_reaction(
    session: AsyncSession, reaction_id: uuid.UUID
) -> tuple[str, LifecycleEvent] | None:
    """The subscriber of a reaction still to run and its event, in one statement, the reaction
    row-locked (two deliveries of its job take turns, the second finds it done)."""
    row = (
        await session.execute(
            select(EventReaction.subscriber, LifecycleEvent)
            .join(LifecycleEvent, LifecycleEvent.id == EventReaction.event_id)
            .where(EventReaction.id == reaction_id, EventReaction.done_at.is_(None))
            .with_for_update(of=EventReaction)
        )
    ).first()
    if row is None:  # done already, or its event was deleted (shop redacted)
        return None
    return row[0], row[1]


async def mark_reaction_done(session: AsyncSession, reaction_id: uuid.UUID) -> None:
    """One UPDATE, no unit-of-work flush of a loaded row."""
    await session.execute(
        update(EventReaction).where(EventReaction.id == reaction_id).values(done_at=utcnow())
    )


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
