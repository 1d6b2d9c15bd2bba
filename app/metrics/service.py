"""The queries behind the scrape-time gauges: one each, bounded and indexed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.exceptions.models import ExceptionCase
from app.jobs.models import OutboxMessage
from app.tracking.models import TrackingPoll

#: The outbox is counted up to this many rows (beyond it the gauge says "at least"): a scrape
#: never scans an unbounded backlog.
OUTBOX_COUNT_CAP = 100_000


@dataclass(frozen=True)
class Gauges:
    outbox_depth: int
    #: Seconds the oldest due outbox row has waited for the relay (0: none waiting).
    outbox_oldest_age: float
    #: Seconds since the most overdue shipment check was due (0: none overdue).
    tracking_poll_lag: float
    #: Unresolved exception cases of every merchant, by kind.
    exceptions_open: dict[str, int]


def _age(now: datetime, since: datetime | None) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


async def gauges(session: AsyncSession, now: datetime) -> Gauges:
    capped = select(OutboxMessage.id).limit(OUTBOX_COUNT_CAP).subquery()
    depth = await session.scalar(select(func.count()).select_from(capped))
    # min() of an indexed column: the first index entry.
    oldest = await session.scalar(select(func.min(OutboxMessage.available_at)))
    due = await session.scalar(select(func.min(TrackingPoll.next_poll_at)))
    kinds = await session.execute(
        select(ExceptionCase.kind, func.count())
        .where(ExceptionCase.resolved_at.is_(None))
        .group_by(ExceptionCase.kind)
    )
    return Gauges(
        outbox_depth=int(depth or 0),
        outbox_oldest_age=_age(now, oldest),
        tracking_poll_lag=_age(now, due),
        exceptions_open={str(kind): int(n) for kind, n in kinds},
    )
