"""Tasks are plain async functions registered by name; ``workers.broker`` turns them into Dramatiq
actors on whichever broker is configured (Redis, or the in-process stub).

Every task takes ids only, opens its own transaction through the ``TaskContext`` and reloads
state, so running it twice is harmless (the outbox and the broker deliver at least once).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

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

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


TaskFn = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fn: TaskFn
    queue: str
    max_retries: int
    time_limit_ms: int


TASKS: dict[str, TaskSpec] = {}

#: Modules whose import registers tasks.
TASK_MODULES = (
    "app.webhooks.tasks",
    "app.orders.tasks",
    "app.routing.tasks",
    "app.purchasing.tasks",
    "app.mail.tasks",
    "workers.maintenance",
)


def task(
    name: str, *, queue: str = "default", max_retries: int = 12, time_limit_s: int = 600
) -> Callable[[TaskFn], TaskFn]:
    """Register ``fn(ctx, *ids)`` as the actor ``name`` (``"<domain>.<verb>"``)."""

    def decorator(fn: TaskFn) -> TaskFn:
        if name in TASKS and TASKS[name].fn is not fn:
            raise RuntimeError(f"task {name!r} registered twice")
        TASKS[name] = TaskSpec(name, fn, queue, max_retries, time_limit_s * 1000)
        return fn

    return decorator


def load_tasks() -> dict[str, TaskSpec]:
    """Import every module that declares tasks, then return the registry."""
    import importlib

    for module in TASK_MODULES:
        importlib.import_module(module)
    return TASKS
