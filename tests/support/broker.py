"""Faults in the broker, injected into a running app's workers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select

from app.db import Database
from app.jobs.models import OutboxMessage


@contextlib.contextmanager
def losing_jobs(broker: Any, actor: str) -> Iterator[list[Any]]:
    """The broker acknowledges and then loses every message for ``actor`` (e.g. Redis restarted
    without persistence): the outbox row is gone, the work not done. Yields the lost messages."""
    real = broker.enqueue
    lost: list[Any] = []

    def swallow(message: Any, **kwargs: Any) -> Any:
        if message.actor_name == actor:
            lost.append(message)
            return message
        return real(message, **kwargs)

    broker.enqueue = swallow
    try:
        yield lost
    finally:
        broker.enqueue = real


async def outbox_empty(db: Database) -> bool:
    """Every job written so far has been handed to the broker."""
    async with db.sessionmaker() as session:
        return (await session.scalar(select(func.count()).select_from(OutboxMessage))) == 0
