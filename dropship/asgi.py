"""ASGI entry point: ``uvicorn --factory dropship.asgi:create`` (what ``dropship serve`` runs).

The API of ``app.main``, plus the workers in the same process when there is no Redis (the
embedded mode): ``app`` never imports ``workers``, this module puts them together.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.types import ASGIApp

from app.main import Lifespan
from app.main import create_app as create_api
from app.services import Services
from app.settings import Settings
from app.webhooks.controllers import shopify_fast_path

#: Seconds a thread may hold the GIL before another is let in (CPython's default: 0.005).
#: Big imports and simulations run on threads so the event loop stays free, but every database
#: answer the loop waits for crosses threads: with the default, a request queued behind those
#: threads' 5 ms slices many times over took more than a second. A shorter slice keeps every
#: other tenant's request fast, at a small cost in switching for the heavy one.
GIL_SWITCH_INTERVAL = 0.001


def create_app(
    settings: Settings | None = None,
    *,
    run_workers: bool | None = None,
    check_migrations: bool = True,
    configure_logs: bool = True,
) -> Litestar:
    """The API, and the workers in-process if ``run_workers`` (default: when there is no Redis).

    The running workers are ``app.state.workers`` (a ``workers.runtime.WorkerRuntime``)."""
    settings = settings or Settings()
    with_workers = settings.embedded_broker if run_workers is None else run_workers
    app = create_api(
        settings,
        lifespans=[in_process_workers(settings)] if with_workers else [],
        check_migrations=check_migrations,
        configure_logs=configure_logs,
    )
    if not with_workers:
        from workers.metrics import depth_reader

        # Queue depths for /metrics straight from Redis (the workers run elsewhere).
        app.state.queue_depths = depth_reader(None, settings.redis_url)
    return app


def in_process_workers(settings: Settings) -> Lifespan:
    """A lifespan running the workers (Dramatiq threads, outbox relay, scheduler) in the API's
    process, on its database."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Only the processes that run workers load them.
        from workers.metrics import depth_reader
        from workers.runtime import WorkerRuntime

        services: Services = app.state.services
        # The only workers there are: every queue, whatever DROPSHIP_WORKER_QUEUES says.
        runtime = WorkerRuntime(settings.model_copy(update={"worker_queues": None}), services.db)
        await runtime.start()
        app.state.workers = runtime
        app.state.queue_depths = depth_reader(runtime.broker, None)
        try:
            yield
        finally:
            await runtime.stop()

    return lifespan


def serving(app: Litestar) -> ASGIApp:
    """What the server runs of ``app``: the Shopify webhook fast path in front of it, with the
    process's GIL switch interval set (the benchmarks serve their app through this too)."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    return shopify_fast_path(app, app.state.services)


def create() -> ASGIApp:
    return serving(create_app())
