"""Running the workers: Dramatiq worker threads, the outbox relay and the scheduler.

``dropship worker`` runs this against Redis; ``dropship serve`` without Redis runs the same thing
in-process against the stub broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

import dramatiq
import structlog
from dramatiq.brokers.stub import StubBroker

from app.db import Database
from app.jobs.outbox import enqueue, on_outbox_commit
from app.jobs.task import all_queues
from app.migrate import check_schema
from app.settings import Settings
from workers.broker import build_broker, worker_tasks
from workers.maintenance import sweep
from workers.relay import OutboxRelay
from workers.scheduler import Scheduler

log = structlog.get_logger(__name__)


class WorkerRuntime:
    def __init__(self, settings: Settings, db: Database, broker: dramatiq.Broker | None = None):
        self.queues = settings.consumed_queues()
        unknown = (self.queues or set()) - set(all_queues())
        if unknown:
            raise ValueError(
                f"unknown queue(s) {', '.join(sorted(unknown))}; one of {', '.join(all_queues())}"
            )
        self.settings = settings
        self.db = db
        self.broker = broker or build_broker(settings)
        self.relay = OutboxRelay(
            db,
            self.broker,
            interval=settings.relay_interval,
            batches={t.name: t.batch for t in worker_tasks().tasks.values() if t.batch > 1},
        )
        self.scheduler = Scheduler(db, worker_tasks().periodic())
        # Every actor is declared whatever this process consumes: the relay sends them all.
        self.worker = dramatiq.Worker(
            self.broker,
            worker_threads=settings.worker_threads,
            worker_timeout=settings.worker_idle_poll_ms,
            queues=self.queues,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._unhook: Callable[[], None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Tasks commit on the worker threads' loop; wake the relay on ours.

        def wake_relay() -> None:
            loop.call_soon_threadsafe(self.relay.wake)

        self._unhook = on_outbox_commit(wake_relay)
        if isinstance(self.broker, StubBroker):
            # In-process broker: its queue died with the previous process, so every job that
            # was relayed but not finished is orphaned. Recover them all now (with Redis, other
            # workers may be busy with such work: the periodic sweep waits for it to go stale).
            async with self.db.transaction() as session:
                await enqueue(session, sweep, 0)
        self.worker.start()
        self._tasks = [
            asyncio.create_task(self.relay.run(), name="outbox-relay"),
            asyncio.create_task(self.scheduler.run(), name="scheduler"),
        ]
        log.info(
            "workers.started",
            broker=type(self.broker).__name__,
            threads=self.settings.worker_threads,
            queues=sorted(self.queues) if self.queues else "all",
        )

    async def stop(self) -> None:
        if self._unhook is not None:
            self._unhook()
        self.relay.stop()
        self.scheduler.stop()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await asyncio.to_thread(self.worker.stop)
        log.info("workers.stopped", relayed=self.relay.sent_total)


async def run_worker(settings: Settings) -> None:
    """The ``dropship worker`` process: runs until SIGINT or SIGTERM."""
    await check_schema(settings.database_url)
    db = Database(settings.database_url, pool_size=5)
    runtime = WorkerRuntime(settings, db)
    if settings.metrics_port is not None:
        # This process's own counters (jobs, placements, emails...): scrape every worker.
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)
        log.info("workers.metrics", port=settings.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    try:
        await stop.wait()
    finally:
        await runtime.stop()
        await db.dispose()
