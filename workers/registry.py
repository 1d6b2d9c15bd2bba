"""Tasks are plain async functions registered by name; ``workers.broker`` turns them into Dramatiq
actors on whichever broker is configured (Redis, or the in-process stub).

Every task takes ids only, opens its own transaction through the ``TaskContext`` and reloads
state, so running it twice is harmless (the outbox and the broker deliver at least once).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.db import Database
from app.security import SecretBox
from app.settings import Settings


@dataclass
class TaskContext:
    settings: Settings
    db: Database
    box: SecretBox


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
TASK_MODULES = ("app.webhooks.tasks", "app.orders.tasks", "workers.maintenance")


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
