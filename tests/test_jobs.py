"""Declaring background work (``app.jobs.task``): every domain's tasks are found without a list
kept by hand, the sweeper runs what the domains declare as stale work and purges, and the
scheduler's schedule is the periodic tasks declared."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

import app
from app.db import Database, uuid7
from app.jobs.models import OutboxMessage
from app.jobs.task import Registry, StaleWindow, Task, TaskContext, all_queues, discover
from app.security import SecretBox
from app.settings import Settings
from workers.broker import build_broker, worker_tasks
from workers.maintenance import BATCH, sweep
from workers.runtime import WorkerRuntime
from workers.scheduler import Scheduler

#: Every task of the application, and what the sweeper re-enqueues.
APP_TASKS = {
    "webhook.process",
    "order.validate",
    "order.route",
    "purchase_order.place",
    "purchase_order.cancel",
    "email.send",
    "events.dispatch",
    "events.handle",
    "fulfillment.create",
    "fulfillment.event",
    "fulfillment.tracking",
    "fulfillment.refund",
    "aggregator.register",
    "aggregator.apply_push",
    "aggregator.poll",
    "tracking.poll",
    "tracking.poll_batch",
    "tracking.check_overdue",
    "tracking.digest",
    "outbound.deliver",
    "returns.authorize",
    "returns.check_stalled",
    "refunds.issue",
    "refunds.refresh",
}
#: The queue of every task: one per kind of work, so that a flood of one cannot starve another.
QUEUE_OF = {
    "webhook.process": "intake",
    "order.validate": "intake",
    "order.route": "intake",
    "purchase_order.place": "placement",
    "purchase_order.cancel": "placement",
    "returns.authorize": "placement",
    "email.send": "email",
    "events.dispatch": "events",
    "events.handle": "events",
    "outbound.deliver": "events",
    "fulfillment.create": "shopify",
    "fulfillment.event": "shopify",
    "fulfillment.tracking": "shopify",
    "fulfillment.refund": "shopify",
    "aggregator.register": "tracking",
    "aggregator.apply_push": "tracking",
    "aggregator.poll": "tracking",
    "tracking.poll": "tracking",
    "tracking.poll_batch": "tracking",
    "refunds.issue": "payments",
    "refunds.refresh": "payments",
    "tracking.check_overdue": "maintenance",
    "tracking.digest": "maintenance",
    "returns.check_stalled": "maintenance",
    "maintenance.sweep": "maintenance",
}
#: Periodic tasks, with their period in seconds (the scheduler enqueues them).
PERIODIC = {
    "maintenance.sweep": 60,
    "aggregator.poll": 60,
    "tracking.poll": 60,
    "tracking.check_overdue": 3600,
    "tracking.digest": 3600,
    "returns.check_stalled": 3600,
}
#: The tasks whose lost jobs the sweeper finds again (a periodic task comes back with its next
#: slot; a lost poll batch leaves its parcels leased until the lease ends, then the next poll
#: takes them; a lost Shopify tracking update is redone by the next change).
SWEPT = APP_TASKS - {"tracking.poll_batch", "fulfillment.tracking"} - set(PERIODIC)
PURGES = {
    "webhook.payloads",
    "idempotency.records",
    "jobs.periodic_runs",
    "events.dispatched",
    "outbound.deliveries",
}


async def outbox(db: Database) -> list[tuple[str, list[Any]]]:
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(OutboxMessage.actor, OutboxMessage.args).order_by(OutboxMessage.id)
        )
        return [(actor, args) for actor, args in rows]


def test_discover_finds_every_tasks_module_of_the_app_in_a_fresh_process() -> None:
    code = (
        "import sys\n"
        "from app.jobs.task import discover\n"
        "registry = discover()\n"
        "print(' '.join(sorted(registry.tasks)))\n"
        "print(' '.join(sorted(registry.purges)))\n"
        "print(' '.join(sorted(m for m in sys.modules if m.endswith('.tasks'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    modules = {f"app.{path.parent.name}.tasks" for path in Path(app.__path__[0]).glob("*/tasks.py")}
    assert set(out[0].split()) == APP_TASKS  # not the workers' sweep: not asked for
    assert set(out[1].split()) == PURGES
    assert modules <= set(out[2].split())


def test_every_task_of_a_tasks_module_is_registered_and_callable_directly() -> None:
    registry = discover(["workers.maintenance"])
    assert set(registry.tasks) == APP_TASKS | {"maintenance.sweep"}
    for declared in registry.tasks.values():
        module = sys.modules[declared.fn.__module__]
        assert getattr(module, declared.fn.__name__) is declared  # the handle, not the function
    for name, purge in registry.purges.items():
        assert purge.__module__.endswith(".tasks"), name


def test_every_task_is_on_the_queue_of_its_kind() -> None:
    assert {t.name: t.queue for t in worker_tasks().tasks.values()} == QUEUE_OF
    assert set(QUEUE_OF.values()) < set(all_queues())


def test_every_actor_of_the_broker_is_on_its_tasks_queue(settings: Settings) -> None:
    broker = build_broker(settings)
    try:
        assert {name: broker.get_actor(name).queue_name for name in QUEUE_OF} == QUEUE_OF
        assert set(QUEUE_OF.values()) <= broker.get_declared_queues()
    finally:
        broker.close()


def test_a_task_name_is_declared_once() -> None:
    registry = Registry()

    @registry.task("probe.run")
    async def first(ctx: TaskContext) -> None:
        pass

    with pytest.raises(RuntimeError, match="registered twice"):

        @registry.task("probe.run")
        async def second(ctx: TaskContext) -> None:
            pass

    with pytest.raises(ValueError, match="every"):
        registry.task("probe.often", every=0)
    assert registry.tasks["probe.run"] is first


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_sweeper_runs_every_declared_stale_query_and_purge(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = worker_tasks()
    stale = [t for t in registry.tasks.values() if t.stale is not None]
    assert {t.name for t in stale} == SWEPT
    windows: list[StaleWindow] = []
    expected = []
    for declared in stale:
        item = uuid7()
        expected.append((declared.name, [str(item)]))

        async def found(session: AsyncSession, window: StaleWindow, item: Any = item) -> list[Any]:
            windows.append(window)
            return [item]

        monkeypatch.setitem(
            registry.tasks, declared.name, dataclasses.replace(declared, stale=found)
        )
    purged: list[tuple[str, datetime]] = []
    for name in list(registry.purges):

        async def purge(session: AsyncSession, now: datetime, name: str = name) -> int:
            purged.append((name, now))
            return 0

        monkeypatch.setitem(registry.purges, name, purge)

    ctx = TaskContext(settings=settings, db=db, box=SecretBox(settings.resolved_secret_key()))
    with capture_logs() as logs:
        await sweep(ctx, 30)

    assert sorted(await outbox(db)) == sorted(expected)
    assert {name for name, _ in purged} == PURGES
    each = (timedelta(seconds=30), BATCH)
    assert [(w.now - w.cutoff, w.limit) for w in windows] == [each] * len(SWEPT)
    assert {now for _, now in purged} == {windows[0].now}
    [line] = [entry for entry in logs if entry["event"] == "maintenance.sweep"]
    assert {name: line[name] for name in SWEPT} == dict.fromkeys(SWEPT, 1)


def test_the_schedule_is_every_periodic_task_declared() -> None:
    assert {t.name: t.every_seconds for t in worker_tasks().periodic()} == PERIODIC


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_workers_schedule_what_the_registry_declares(settings: Settings, db: Database) -> None:
    runtime = WorkerRuntime(settings, db)
    assert list(runtime.scheduler.schedule) == worker_tasks().periodic()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_declared_periodic_task_is_enqueued_once_per_slot(db: Database) -> None:
    registry = Registry()

    @registry.task("tracking.poll", every=300)
    async def poll(ctx: TaskContext) -> None:
        pass

    @registry.task("tracking.update")
    async def update(ctx: TaskContext, shipment_id: str) -> None:
        pass

    scheduler = Scheduler(db, registry.tasks.values())
    assert scheduler.schedule == (registry.tasks["tracking.poll"],)
    assert await scheduler.tick(now=600.0) == ["tracking.poll"]
    assert await scheduler.tick(now=899.0) == []
    # Another worker process, racing for the same slot.
    assert await Scheduler(db, registry.periodic()).tick(now=650.0) == []
    assert await scheduler.tick(now=900.0) == ["tracking.poll"]
    assert await outbox(db) == [("tracking.poll", []), ("tracking.poll", [])]


async def test_calling_a_task_runs_its_function() -> None:
    seen: list[tuple[Any, ...]] = []

    async def run(ctx: Any, *ids: Any) -> str:
        seen.append((ctx, *ids))
        return "done"

    assert await Task("probe.call", run)("ctx", "a", 1) == "done"
    assert seen == [("ctx", "a", 1)]
