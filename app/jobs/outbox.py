"""Writing jobs to the transactional outbox. Call inside the transaction of the state change."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow, uuid7
from app.jobs.models import OutboxMessage


def outbox_row(actor: str, *args: Any, delay: float = 0.0) -> dict[str, Any]:
    now = utcnow()
    available: datetime = now + timedelta(seconds=delay) if delay else now
    return {
        "id": uuid7(),
        "actor": actor,
        "args": [str(a) if not isinstance(a, int | str | float | bool) else a for a in args],
        "available_at": available,
        "attempts": 0,
        "created_at": now,
    }


async def enqueue(session: AsyncSession, actor: str, *args: Any, delay: float = 0.0) -> None:
    """Add a job to the outbox; it is relayed to the broker only if the transaction commits."""
    await session.execute(insert(OutboxMessage), [outbox_row(actor, *args, delay=delay)])
