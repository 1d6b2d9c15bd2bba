"""Writing jobs to the transactional outbox. Call inside the transaction of the state change."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.db import utcnow, uuid7
from app.jobs.models import OutboxMessage

if TYPE_CHECKING:
    from app.jobs.task import Task


def outbox_row(task: Task, *args: Any, delay: float = 0.0) -> dict[str, Any]:
    """The outbox row of a job running ``task`` with ``args`` (ids), ``delay`` seconds from now."""
    now = utcnow()
    available: datetime = now + timedelta(seconds=delay) if delay else now
    return {
        "id": uuid7(),
        "actor": task.name,
        "args": [str(a) if not isinstance(a, int | str | float | bool) else a for a in args],
        "available_at": available,
        "attempts": 0,
        "created_at": now,
    }


#: Called (from any thread) after a commit that wrote outbox rows: a relay in this process
#: registers itself here so it sends at once instead of at its next poll.
_commit_listeners: list[Callable[[], None]] = []


def on_outbox_commit(listener: Callable[[], None]) -> Callable[[], None]:
    """Register ``listener``; returns a function that unregisters it."""
    _commit_listeners.append(listener)
    return lambda: _commit_listeners.remove(listener) if listener in _commit_listeners else None


def notify_committed() -> None:
    for listener in list(_commit_listeners):
        try:
            listener()
        except RuntimeError:  # a loop closed during shutdown: the next poll catches up
            continue


async def enqueue(session: AsyncSession, task: Task, *args: Any, delay: float = 0.0) -> None:
    """Add a job running ``task`` to the outbox; it is relayed to the broker only if the
    transaction commits."""
    await enqueue_many(session, task, [args], delay=delay)


async def enqueue_many(
    session: AsyncSession, task: Task, jobs: Iterable[Sequence[Any]], *, delay: float = 0.0
) -> None:
    """Add one job running ``task`` per argument list of ``jobs``, in one statement."""
    rows = [outbox_row(task, *args, delay=delay) for args in jobs]
    if not rows:
        return
    await session.execute(insert(OutboxMessage), rows)
    sync = session.sync_session
    if not sync.info.get("outbox_hooked"):
        sync.info["outbox_hooked"] = True
        event.listen(sync, "after_commit", _after_commit, once=True)


def _after_commit(session: Session) -> None:
    session.info.pop("outbox_hooked", None)
    notify_committed()
