"""A received return makes a credit expected from its supplier (once per return)."""

from __future__ import annotations

from app.credits import service
from app.db import DbSession
from app.events.models import EventType, LifecycleEvent
from app.jobs.task import TaskContext, subscribe


@subscribe(EventType.RETURN_RECEIVED)
async def credit_returned_lines(
    ctx: TaskContext, session: DbSession, event: LifecycleEvent
) -> None:
    await service.credit_for_return(session, event.merchant_id, dict(event.data))
