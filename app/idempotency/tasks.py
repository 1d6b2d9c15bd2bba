"""Housekeeping of the Idempotency-Key records: none outlives ``RETENTION``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from app.idempotency.middleware import RETENTION
from app.idempotency.models import IdempotencyRecord
from app.jobs.task import housekeeping, rows_affected


@housekeeping("idempotency.records")
async def drop_expired_records(session: AsyncSession, now: datetime) -> int:
    return await rows_affected(
        session, delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - RETENTION)
    )
