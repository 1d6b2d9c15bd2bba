"""Broker set-up: Redis when ``DROPSHIP_REDIS_URL`` is set, else Dramatiq's in-process stub.

Every task the domains declare (``app.jobs.task``) becomes an actor. Retries are for transient
trouble only (``app.jobs.errors.is_transient``): a business conflict is a decision recorded by
the task, never a retry.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import structlog
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, CurrentMessage

from app.db import Database
from app.jobs.errors import is_transient
from app.jobs.task import DEFAULT_QUEUE, Registry, Task, TaskContext, discover
from app.security import SecretBox
from app.settings import Settings
from workers.metrics import JobMetrics

log = structlog.get_logger(__name__)

#: The workers' own modules that declare tasks (besides every ``app.<domain>.tasks``).
WORKER_TASK_MODULES = ("workers.maintenance",)


def worker_tasks() -> Registry:
    """Every task of the application and of the workers."""
    return discover(WORKER_TASK_MODULES)


def _retry_policy(max_retries: int) -> Any:
    def retry_when(retries: int, exc: BaseException) -> bool:
        return retries <= max_retries and is_transient(exc)

    return retry_when


class _Runtime:
    """The per-process task context, created lazily inside the worker's event loop."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self._ctx: TaskContext | None = None
        self._lock = threading.Lock()

    def configure(self, settings: Settings) -> None:
        self.settings = settings
        self._ctx = None

    def context(self) -> TaskContext:
        if self._ctx is None:
            with self._lock:
                if self._ctx is None:
                    if self.settings is None:
                        raise RuntimeError("workers.broker.configure_runtime() was not called")
                    s = self.settings
                    self._ctx = TaskContext(
                        settings=s,
                        # No pre-ping (a round trip per checkout): a dropped connection
                        # fails the task with a transient error, and the task is retried.
                        db=Database(s.database_url, pool_size=5, pre_ping=False),
                        box=SecretBox(s.resolved_secret_key()),
                    )
        return self._ctx

    async def dispose(self) -> None:
        if self._ctx is not None:
            await self._ctx.aclose()
            await self._ctx.db.dispose()
            self._ctx = None


RUNTIME = _Runtime()


class _DisposeDatabase(dramatiq.Middleware):
    """Close the worker loop's connection pool before the loop stops."""

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        thread = get_event_loop_thread()
        if thread is not None:
            try:
                thread.run_coroutine(RUNTIME.dispose())
            except Exception:  # shutting down: log, do not mask the shutdown
                log.exception("worker.dispose_failed")


def _make_actor_fn(spec: Task) -> Any:
    async def run(*args: Any) -> Any:
        ctx = RUNTIME.context()
        structlog.contextvars.bind_contextvars(task=spec.name)
        try:
            return await spec.fn(ctx, *args)
        finally:
            structlog.contextvars.unbind_contextvars("task")

    run.__name__ = spec.fn.__name__
    run.__qualname__ = spec.fn.__qualname__
    return run


def build_broker(settings: Settings) -> dramatiq.Broker:
    """Create the broker, declare every task on it and make it Dramatiq's global broker."""
    broker: dramatiq.Broker
    if settings.redis_url:
        broker = RedisBroker(url=settings.redis_url)  # type: ignore[no-untyped-call]
    else:
        broker = StubBroker()
        broker.emit_after("process_boot")
    broker.add_middleware(AsyncIO())
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(_DisposeDatabase())
    broker.add_middleware(JobMetrics())
    dramatiq.set_broker(broker)
    RUNTIME.configure(settings)
    # Jobs queued on "default" before the queues per kind (and their retries in default.DQ)
    # are still consumed: a worker runs a message by its actor's name, whatever its queue.
    broker.declare_queue(DEFAULT_QUEUE)
    declare: Any = dramatiq.actor
    for spec in worker_tasks().tasks.values():
        declare(
            _make_actor_fn(spec),
            actor_name=spec.name,
            queue_name=spec.queue,
            broker=broker,
            max_retries=spec.max_retries,
            min_backoff=1_000,
            max_backoff=300_000,
            time_limit=spec.time_limit_ms,
            retry_when=_retry_policy(spec.max_retries),
        )
    return broker
