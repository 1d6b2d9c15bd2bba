"""Periodic jobs. Every worker process runs this loop; a unique (job, slot) row makes each slot
enqueue exactly once however many schedulers race for it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import IntegrityError

from app.db import Database
from app.jobs.models import PeriodicRun
from app.jobs.outbox import enqueue

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Periodic:
    actor: str
    every_seconds: int


SCHEDULE: tuple[Periodic, ...] = (Periodic("maintenance.sweep", 60),)


class Scheduler:
    def __init__(self, db: Database, schedule: tuple[Periodic, ...] = SCHEDULE) -> None:
        self.db = db
        self.schedule = schedule
        self._last: dict[str, int] = {}
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def tick(self, now: float | None = None) -> list[str]:
        """Enqueue every job whose current slot has not been enqueued yet; return those enqueued."""
        now = time.time() if now is None else now
        enqueued = []
        for job in self.schedule:
            slot = int(now // job.every_seconds)
            if self._last.get(job.actor) == slot:
                continue
            try:
                async with self.db.transaction() as session:
                    session.add(PeriodicRun(job=job.actor, slot=str(slot)))
                    await session.flush()
                    await enqueue(session, job.actor)
                enqueued.append(job.actor)
            except IntegrityError:
                pass  # another scheduler took this slot
            self._last[job.actor] = slot
        return enqueued

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception as exc:
                log.warning("scheduler.tick_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=1.0)
