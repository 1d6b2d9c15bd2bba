"""Declaring background work: tasks, the stale work the sweeper re-enqueues, retention purges.

A domain declares everything in its ``app/<domain>/tasks.py``::

    @task("order.validate", stale=received_orders)
    async def validate_order(ctx: TaskContext, order_id: str) -> None: ...

    @housekeeping("webhook.payloads")
    async def drop_old_payloads(session: AsyncSession, now: datetime) -> int: ...

``discover()`` imports every such module and returns the registry; the workers turn its tasks
into Dramatiq actors, its periodic tasks into the schedule, and sweep what its stale queries find
and its purges drop. Producers write jobs with ``app.jobs.outbox.enqueue(session, task, *ids)``.

Every task takes ids only, opens its own transaction through the ``TaskContext`` and reloads
state, so running it twice is harmless (the outbox and the broker deliver at least once).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import httpx
from sqlalchemy import ColumnElement, CursorResult, Delete, Select, Update, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

import app
from app.db import Database
from app.mail.sender import MailSender
from app.security import SecretBox
from app.settings import Settings


@dataclass
class TaskContext:
    settings: Settings
    db: Database
    box: SecretBox
    _http: httpx.AsyncClient | None = field(default=None, repr=False)
    _limits: Any = field(default=None, repr=False)
    _mail: MailSender | None = field(default=None, repr=False)
    _shopify_http: httpx.AsyncClient | None = field(default=None, repr=False)
    _shopify_costs: Any = field(default=None, repr=False)

    @property
    def http(self) -> httpx.AsyncClient:
        """One pooled HTTP client per worker process, for every connector."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, connect=5.0),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                headers={"User-Agent": "dropship/0.1 (+https://github.com/dropship)"},
            )
        return self._http

    @property
    def rate_limits(self) -> Any:
        """Dramatiq's rate-limiter backend: shared through Redis, or in-process without it."""
        if self._limits is None:
            if self.settings.redis_url:
                from dramatiq.rate_limits.backends import RedisBackend

                self._limits = RedisBackend(url=self.settings.redis_url)
            else:
                from dramatiq.rate_limits.backends import StubBackend

                self._limits = StubBackend()  # type: ignore[no-untyped-call]
        return self._limits

    @property
    def mail(self) -> MailSender:
        """SMTP when ``DROPSHIP_SMTP_URL`` is set, else ``.eml`` files under ``var/mail``."""
        if self._mail is None:
            self._mail = MailSender(self.settings.smtp_url, self.settings.var_dir / "mail")
        return self._mail

    @property
    def shopify_http(self) -> httpx.AsyncClient:
        """The Shopify Admin API's own client: every call goes to ``shopify_admin_url``."""
        if self._shopify_http is None:
            from connectors.shopify_admin import admin_http_client

            self._shopify_http = admin_http_client(self.settings.shopify_admin_url)
        return self._shopify_http

    @property
    def shopify_costs(self) -> Any:
        """Each shop's GraphQL cost bucket, shared by every worker (Redis) or in-process."""
        if self._shopify_costs is None:
            from connectors.shopify_admin import MemoryCostStore, RedisCostStore

            limits = self.rate_limits
            client = getattr(limits, "client", None)
            self._shopify_costs = (
                RedisCostStore(client) if client is not None else MemoryCostStore()
            )
        return self._shopify_costs

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._shopify_http is not None:
            await self._shopify_http.aclose()
            self._shopify_http = None


@dataclass(frozen=True)
class StaleWindow:
    """What one sweep asks of a stale query: work idle since before ``cutoff``, as of ``now``
    (for backoffs and leases), at most ``limit`` ids (the next sweep takes the rest)."""

    now: datetime
    cutoff: datetime
    limit: int

    async def ids(self, session: AsyncSession, query: Select[Any]) -> Sequence[Any]:
        """The first ``limit`` ids ``query`` finds."""
        return (await session.scalars(query.limit(self.limit))).all()

    def due(self, next_attempt_at: QueryableAttribute[datetime | None]) -> ColumnElement[bool]:
        """Not backing off: no next attempt scheduled, or one due by now."""
        return or_(next_attempt_at.is_(None), next_attempt_at <= self.now)


async def rows_affected(session: AsyncSession, statement: Delete | Update) -> int:
    """Run a purge's DELETE or UPDATE; return how many rows it touched."""
    result = cast("CursorResult[Any]", await session.execute(statement))
    return result.rowcount


TaskFn = Callable[..., Awaitable[Any]]
#: ``stale(session, window)``: the ids whose task should have run by now but did not (its job
#: was lost, its worker died); the sweeper enqueues the task again for each.
StaleQuery = Callable[[AsyncSession, StaleWindow], Awaitable[Sequence[Any]]]
#: ``purge(session, now)``: drop (or blank) what has outlived its use; returns the rows touched.
Purge = Callable[[AsyncSession, datetime], Awaitable[int]]
#: ``handler(ctx, session, event)``: react to a lifecycle event (``app.events``) inside the
#: session's transaction, idempotently (it runs at least once per event).
Handler = Callable[..., Awaitable[None]]
#: ``when(event)``: a SQL condition on the ``lifecycle_events`` row ``event`` (the mapped class,
#: correlated: ``exists().where(Endpoint.merchant_id == event.merchant_id)``) that an event must
#: meet for the subscriber to get a reaction at all. It is evaluated inside the INSERT of the
#: reactions (no round trip of its own), so it must be a cheap *necessary* condition: it may let
#: through an event the handler then ignores, never hold back one it would act on.
ReactionFilter = Callable[[Any], ColumnElement[bool]]


@dataclass(frozen=True)
class Subscriber:
    """A reaction to lifecycle events of ``types`` (``"*"``: every type), named
    ``<module>.<function>`` so that a job can name it."""

    name: str
    types: frozenset[str]
    fn: Handler
    when: ReactionFilter | None = None

    def wants(self, type_: str) -> bool:
        return "*" in self.types or type_ in self.types


#: The queue of each kind of work, by the task name's domain (``"<domain>.<verb>"``; a full
#: name overrides its domain). One queue per kind so a flood of one (a flash sale's intake)
#: cannot starve another (tracking, emails, Shopify sync): a Dramatiq worker consumes every
#: queue with its own bounded prefetch, and ``dropship worker --queues`` dedicates processes.
QUEUES: dict[str, str] = {
    "webhook": "intake",
    "order": "intake",
    "purchase_order": "placement",
    "returns": "placement",  # a supplier call (return authorisation), as a placement is
    "tracking": "tracking",
    "aggregator": "tracking",
    "email": "email",
    "fulfillment": "shopify",
    "refunds": "payments",
    "events": "events",
    "outbound": "events",
    "maintenance": "maintenance",
    # Hourly chores: no tight target, and never in the way of the work of their kind.
    "tracking.check_overdue": "maintenance",
    "tracking.digest": "maintenance",
    "returns.check_stalled": "maintenance",
}
#: A task of a domain not in ``QUEUES`` (tests/test_jobs.py lists every task's queue).
DEFAULT_QUEUE = "default"


def queue_for(name: str) -> str:
    """The queue of the task ``name``: its own entry in ``QUEUES``, else its domain's."""
    return QUEUES.get(name) or QUEUES.get(name.split(".", 1)[0], DEFAULT_QUEUE)


def all_queues() -> list[str]:
    """Every queue a task can be on, sorted."""
    return sorted({*QUEUES.values(), DEFAULT_QUEUE})


@dataclass(frozen=True)
class Task:
    """A declared task: what the broker needs to run it, and what the sweeper and the scheduler
    need to keep it going. Calling it runs it here and now (``await task(ctx, *ids)``)."""

    name: str
    fn: TaskFn
    queue: str = "default"
    max_retries: int = 12
    time_limit_ms: int = 600_000
    stale: StaleQuery | None = None
    #: Enqueued by the scheduler once every so many seconds (with no arguments).
    every_seconds: int | None = None
    #: Up to how many of its jobs (one id each) the relay may hand to one run, their ids as its
    #: arguments (``fn(ctx, *ids)``): work that queued up is done in one transaction.
    batch: int = 1

    def __call__(self, ctx: TaskContext, *args: Any) -> Awaitable[Any]:
        return self.fn(ctx, *args)


@dataclass
class Registry:
    """Tasks and purges by name, as the domains declared them."""

    tasks: dict[str, Task] = field(default_factory=dict)
    purges: dict[str, Purge] = field(default_factory=dict)
    subscribers: dict[str, Subscriber] = field(default_factory=dict)

    def task(
        self,
        name: str,
        *,
        queue: str | None = None,
        max_retries: int = 12,
        time_limit_s: int = 600,
        every: int | None = None,
        stale: StaleQuery | None = None,
        batch: int = 1,
    ) -> Callable[[TaskFn], Task]:
        """Declare ``fn(ctx, *ids)`` as the task ``name`` (``"<domain>.<verb>"``), periodic if
        ``every`` (seconds), re-enqueued by the sweeper for what ``stale`` finds, on ``queue``
        (default: its kind's, ``queue_for(name)``), handed up to ``batch`` queued jobs' ids at
        once by the relay."""
        if every is not None and every <= 0:
            raise ValueError(f"task {name!r}: every must be a positive number of seconds")
        if batch < 1:
            raise ValueError(f"task {name!r}: batch must be at least 1")

        def declare(fn: TaskFn) -> Task:
            known = self.tasks.get(name)
            if known is not None and known.fn is not fn:
                raise RuntimeError(f"task {name!r} registered twice")
            declared = Task(
                name,
                fn,
                queue or queue_for(name),
                max_retries,
                time_limit_s * 1000,
                stale,
                every,
                batch,
            )
            self.tasks[name] = declared
            return declared

        return declare

    def housekeeping(self, name: str) -> Callable[[Purge], Purge]:
        """Declare ``purge(session, now) -> rows`` as the retention purge ``name``: every sweep
        runs it."""

        def declare(fn: Purge) -> Purge:
            known = self.purges.get(name)
            if known is not None and known is not fn:
                raise RuntimeError(f"purge {name!r} registered twice")
            self.purges[name] = fn
            return fn

        return declare

    def subscribe(
        self, *types: str, when: ReactionFilter | None = None
    ) -> Callable[[Handler], Handler]:
        """Declare ``handler(ctx, session, event)`` a subscriber of the lifecycle events of
        ``types``: each such event runs it once (at least once) in a job of its own; with
        ``when``, only the events meeting that SQL condition (``ReactionFilter``) do."""
        if not types:
            raise ValueError("subscribe: name at least one event type (or '*')")

        def declare(fn: Handler) -> Handler:
            name = f"{fn.__module__}.{fn.__qualname__}"
            known = self.subscribers.get(name)
            if known is not None and known.fn is not fn:
                raise RuntimeError(f"subscriber {name!r} registered twice")
            self.subscribers[name] = Subscriber(name, frozenset(types), fn, when)
            return fn

        return declare

    def subscribers_of(self, type_: str) -> list[Subscriber]:
        return sorted(
            (s for s in self.subscribers.values() if s.wants(type_)), key=lambda s: s.name
        )

    def periodic(self) -> list[Task]:
        return [t for t in self.tasks.values() if t.every_seconds is not None]


#: The process's registry: what ``task`` and ``housekeeping`` declare into.
REGISTRY = Registry()
task = REGISTRY.task
housekeeping = REGISTRY.housekeeping
subscribe = REGISTRY.subscribe

#: The module of a domain package that declares its background work.
TASKS_MODULE = "tasks"


def discover(extra: Iterable[str] = ()) -> Registry:
    """Import every ``app.<package>.tasks`` module, then the modules named in ``extra`` (e.g.
    ``workers.maintenance``), and return the registry they declared into."""
    for package in pkgutil.iter_modules(app.__path__, f"{app.__name__}."):
        module = f"{package.name}.{TASKS_MODULE}"
        if package.ispkg and importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    for module in extra:
        importlib.import_module(module)
    return REGISTRY
