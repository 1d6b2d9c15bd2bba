"""Queues per kind of work: a flood of one kind (a flash sale's intake) does not starve another.

A Dramatiq worker runs one consumer per queue, each with its own bounded prefetch
(``2 * worker_threads`` messages), feeding one shared work queue in arrival order: a job of
another kind waits behind at most that many messages of the flood, not behind the whole backlog.
The bound is counted in messages, never in seconds, so a slow box cannot make it fail.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from click.testing import CliRunner
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from app.db import Database
from app.jobs.outbox import enqueue
from app.jobs.task import queue_for
from app.settings import Settings
from dropship.cli import main
from workers.broker import build_broker, worker_tasks
from workers.metrics import broker_depths
from workers.relay import OutboxRelay
from workers.runtime import WorkerRuntime

#: Slow jobs of the flood, queued before the worker starts.
BACKLOG = 40
SLOW_S = 0.1
THREADS = 2
#: What Dramatiq prefetches per queue (``Worker.queue_prefetch``).
PREFETCH = 2 * THREADS
#: The other kinds of work that must not wait behind the flood.
OTHERS = ("email.send", "fulfillment.create", "tracking.poll_batch")


def _broker(settings: Settings) -> dramatiq.Broker:
    if settings.redis_url:
        return RedisBroker(url=settings.redis_url, namespace=f"t{uuid.uuid4().hex[:8]}")  # type: ignore[no-untyped-call]
    broker = StubBroker()
    broker.emit_after("process_boot")
    return broker


def _intake_started_before_others(settings: Settings, *, one_queue: bool) -> dict[str, int]:
    """Queue ``BACKLOG`` slow intake jobs, then one job of each other kind, start a worker;
    return, for each other job, how many intake jobs had started when it ran."""
    broker = _broker(settings)
    lock = threading.Lock()
    started = 0
    seen: dict[str, int] = {}
    all_ran = threading.Event()

    def flood(i: int) -> None:
        nonlocal started
        with lock:
            started += 1
        threading.Event().wait(SLOW_S)

    def other(name: str) -> None:
        with lock:
            seen[name] = started
            if len(seen) == len(OTHERS):
                all_ran.set()

    declare: Any = dramatiq.actor
    intake = declare(
        flood,
        actor_name="flood",
        queue_name="default" if one_queue else queue_for("webhook.process"),
        broker=broker,
    )
    others = {
        name: declare(
            other,
            actor_name=f"other.{name}",
            queue_name="default" if one_queue else queue_for(name),
            broker=broker,
        )
        for name in OTHERS
    }
    for i in range(BACKLOG):
        intake.send(i)
    for name, actor in others.items():
        actor.send(name)
    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=100)
    worker.start()
    try:
        assert all_ran.wait(timeout=120)
    finally:
        worker.stop()
        broker.close()
    return seen


def test_the_kinds_of_work_are_on_distinct_queues() -> None:
    queues = {queue_for(name) for name in ("webhook.process", *OTHERS)}
    assert queues == {"intake", "email", "shopify", "tracking"}


def test_a_flood_of_intake_does_not_delay_other_kinds_beyond_one_prefetch(
    settings: Settings,
) -> None:
    seen = _intake_started_before_others(settings, one_queue=False)
    assert set(seen) == set(OTHERS)
    # At most what the intake consumer had prefetched and the threads were running (x3: a
    # consumer thread slow to start on a busy box), out of a backlog of 40.
    assert all(n <= 3 * PREFETCH for n in seen.values()), seen


def test_on_one_shared_queue_the_same_flood_delays_them_behind_the_whole_backlog(
    settings: Settings,
) -> None:
    """The control: what the queues per kind prevent (one FIFO queue, as before)."""
    seen = _intake_started_before_others(settings, one_queue=True)
    # Strict arrival order: every intake job was taken first (a thread may still be about to
    # count the last one it took).
    assert all(n >= BACKLOG - (THREADS - 1) for n in seen.values()), seen


async def test_the_relay_sends_each_job_to_its_tasks_queue(
    settings: Settings, db: Database
) -> None:
    broker = build_broker(settings)
    tasks = worker_tasks().tasks
    try:
        async with db.transaction() as session:
            for name in ("webhook.process", "purchase_order.place", "email.send"):
                await enqueue(session, tasks[name], str(uuid.uuid4()))
        assert await OutboxRelay(db, broker).relay_once() == 3
        depths = broker_depths(broker)
        assert {q for (q, state), n in depths.items() if n} == {"intake", "placement", "email"}
        assert {q: depths[(q, "ready")] for q in ("intake", "placement", "email")} == {
            "intake": 1,
            "placement": 1,
            "email": 1,
        }
    finally:
        broker.close()


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def test_jobs_left_on_the_old_default_queue_still_run(settings: Settings) -> None:
    """Queued before an upgrade to queues per kind: a worker consumes "default" too and runs
    each message by its actor's name."""
    broker = build_broker(settings)
    ran = threading.Event()
    probe: Any = dramatiq.actor(
        lambda: ran.set(), actor_name="probe.old", queue_name="intake", broker=broker
    )
    try:
        assert "default" in broker.get_declared_queues()
        broker.enqueue(probe.message().copy(queue_name="default"))
        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
        worker.start()
        try:
            assert ran.wait(timeout=60)
        finally:
            worker.stop()
    finally:
        broker.close()


async def test_a_worker_can_be_dedicated_to_some_queues(settings: Settings, db: Database) -> None:
    dedicated = settings.model_copy(update={"worker_queues": " placement, intake ,"})
    runtime = WorkerRuntime(dedicated, db)
    try:
        assert runtime.worker.consumer_whitelist == {"placement", "intake"}
        # Every actor is still declared: its relay sends every kind of job.
        assert runtime.broker.get_actor("email.send").queue_name == "email"
    finally:
        runtime.broker.close()
    every = WorkerRuntime(settings, db)
    try:
        assert every.worker.consumer_whitelist is None
    finally:
        every.broker.close()


async def test_an_unknown_queue_is_refused_by_name(settings: Settings, db: Database) -> None:
    bad = settings.model_copy(update={"worker_queues": "placement,placements"})
    with pytest.raises(ValueError, match=r"unknown queue\(s\) placements; one of default, email"):
        WorkerRuntime(bad, db)


def test_dropship_worker_queues_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.runtime

    ran: list[Settings] = []

    async def run_worker(settings: Settings) -> None:  # which queues it was given is the point
        ran.append(settings)

    monkeypatch.setattr(workers.runtime, "run_worker", run_worker)
    env = {
        "DROPSHIP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "DROPSHIP_VAR_DIR": str(tmp_path / "var"),
        "DROPSHIP_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    assert CliRunner().invoke(main, ["migrate"], env=env).exit_code == 0
    result = CliRunner().invoke(main, ["worker", "--queues", "placement,intake"], env=env)
    assert result.exit_code == 0, result.output
    assert "queues intake,placement" in result.output
    assert ran[0].consumed_queues() == {"placement", "intake"}
    from_env = CliRunner().invoke(main, ["worker"], env={**env, "DROPSHIP_WORKER_QUEUES": "email"})
    assert from_env.exit_code == 0, from_env.output
    assert ran[1].consumed_queues() == {"email"}
    assert "queues all" in CliRunner().invoke(main, ["worker"], env=env).output
    refused = CliRunner().invoke(main, ["worker", "--queues", "placment"], env=env)
    assert refused.exit_code != 0
    assert "Error: unknown queue(s) placment; one of default, email, events" in refused.output
    assert len(ran) == 3


async def test_in_process_workers_consume_every_queue(settings: Settings) -> None:
    from litestar.testing import AsyncTestClient

    from dropship.asgi import create_app

    app = create_app(
        settings.model_copy(update={"worker_queues": "placement"}),
        run_workers=True,
        configure_logs=False,
    )
    async with AsyncTestClient(app, timeout=30):
        assert app.state.workers.worker.consumer_whitelist is None
