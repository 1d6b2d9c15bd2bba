"""Housekeeping of the job machinery itself (its declarations are in ``app.jobs.task``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.models import PeriodicRun
from app.jobs.task import housekeeping, rows_affected

#: A periodic-run slot only has to outlive the schedulers racing for it.
PERIODIC_RUN_RETENTION = timedelta(days=2)


@housekeeping("jobs.periodic_runs")
async def drop_old_periodic_runs(session: AsyncSession, now: datetime) -> int:
    return await rows_affected(
        session, delete(PeriodicRun).where(PeriodicRun.created_at < now - PERIODIC_RUN_RETENTION)
    )
