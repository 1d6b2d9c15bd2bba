"""Periodic jobs: every task declared with ``every=`` seconds. Every worker process runs this
loop; a unique (job, slot) row makes each slot enqueue exactly once however many schedulers race
for it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

import structlog
from sqlalchemy.exc import IntegrityError

from app.db import Database
from app.jobs.models import PeriodicRun
from app.jobs.outbox import enqueue
from app.jobs.task import Task

log = structlog.get_logger(__name__)


class Scheduler:
    def __init__(self, db: Database, schedule: Iterable[Task]) -> None:
        """``schedule``: the periodic tasks (``Registry.periodic()``); others are ignored."""
        self.db = db
        self.schedule = tuple(job for job in schedule if job.every_seconds is not None)
        self._last: dict[str, int] = {}
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def tick(self, now: float | None = None) -> list[str]:
        """Enqueue every job whose current slot has not been enqueued yet; return those enqueued."""
        now = time.time() if now is None else now
        enqueued = []
        for job in self.schedule:
            if job.every_seconds is None:
                continue
            slot = int(now // job.every_seconds)
            if self._last.get(job.name) == slot:
                continue
            try:
                async with self.db.transaction() as session:
                    session.add(PeriodicRun(job=job.name, slot=str(slot)))
                    await session.flush()
                    await enqueue(session, job)
                enqueued.append(job.name)
            except IntegrityError:
                pass  # another scheduler took this slot
            self._last[job.name] = slot
        return enqueued

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception as exc:
                log.warning("scheduler.tick_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=1.0)
