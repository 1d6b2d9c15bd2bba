"""Webhooks that queue up are handled in batches: the relay sends up to ``webhook.process``'s
batch size of its jobs as one message, and one run handles them all in one transaction. A
delivery that fails the batch is split out: the others are handled, it alone is retried."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select

from app.db import Database, utcnow
from app.jobs.models import OutboxMessage
from app.jobs.outbox import enqueue_many
from app.jobs.task import TaskContext
from app.orders.models import Order
from app.security import SecretBox
from app.settings import Settings
from app.webhooks import tasks as webhook_tasks
from app.webhooks.models import WebhookDelivery
from app.webhooks.tasks import BATCH, process_delivery
from tests.conftest import MerchantHandle
from tests.support.order_flow import store_delivery
from tests.support.shopify import order_payload
from tests.test_hot_path_statements import counting, kind
from workers.broker import build_broker, worker_tasks
from workers.metrics import broker_depths
from workers.relay import OutboxRelay, group

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def row(actor: str, *args: Any, age: int = 0) -> Any:
    return SimpleNamespace(
        id=uuid.uuid4(),
        actor=actor,
        args=list(args),
        available_at=utcnow() - timedelta(seconds=age),
    )


def test_jobs_of_a_batching_task_share_messages_up_to_its_batch_size() -> None:
    rows = [row("webhook.process", f"d{n}") for n in range(5)]
    rows.insert(2, row("email.send", "e1"))
    rows.append(row("email.send", "e2"))
    messages = group(rows, {"webhook.process": 2})
    assert [(m.actor, m.args) for m in messages] == [
        ("webhook.process", ["d0", "d1"]),
        ("email.send", ["e1"]),
        ("webhook.process", ["d2", "d3"]),
        ("webhook.process", ["d4"]),
        ("email.send", ["e2"]),
    ]
    # Each message carries its rows' ids (deleted once sent), dated by its oldest job.
    assert messages[0].ids == [rows[0].id, rows[1].id]
    assert messages[0].due == rows[0].available_at


def test_a_job_of_several_arguments_is_never_merged() -> None:
    rows = [row("webhook.process", "a"), row("webhook.process", "b", "c")]
    messages = group(rows, {"webhook.process": 20})
    assert [m.args for m in messages] == [["a"], ["b", "c"]]


def test_without_batch_sizes_every_job_is_its_own_message() -> None:
    rows = [row("webhook.process", f"d{n}") for n in range(3)]
    assert [m.args for m in group(rows, {})] == [["d0"], ["d1"], ["d2"]]


def test_webhook_process_declares_its_batch() -> None:
    assert worker_tasks().tasks["webhook.process"].batch == BATCH > 1


async def test_a_backlog_is_relayed_as_few_messages(settings: Settings, db: Database) -> None:
    broker = build_broker(settings)
    task = worker_tasks().tasks["webhook.process"]
    try:
        async with db.transaction() as session:
            await enqueue_many(session, task, [[str(uuid.uuid4())] for _ in range(BATCH + 5)])
        relay = OutboxRelay(db, broker, batches={task.name: BATCH})
        assert await relay.relay_once() == BATCH + 5  # jobs relayed
        assert broker_depths(broker)[("intake", "ready")] == 2  # in two messages
        async with db.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    finally:
        broker.close()


@pytest.fixture
def ctx(settings: Settings, db: Database) -> TaskContext:
    return TaskContext(settings=settings, db=db, box=SecretBox("x"))


async def deliveries(db: Database, merchant: MerchantHandle, n: int) -> list[str]:
    return [
        await store_delivery(
            db, merchant, order_payload(id=820982911946154508 + i, name=f"#{9000 + i}")
        )
        for i in range(n)
    ]


async def outcomes(db: Database) -> dict[str, str | None]:
    async with db.sessionmaker() as session:
        rows = await session.execute(select(WebhookDelivery.id, WebhookDelivery.outcome))
        return {str(i): o for i, o in rows}


async def test_a_batch_is_one_transaction(
    ctx: TaskContext, db: Database, merchant: MerchantHandle
) -> None:
    ids = await deliveries(db, merchant, 4)
    with counting(db) as seen:
        await process_delivery(ctx, *ids)
    by_kind = Counter(kind(s) for s in seen)
    assert (by_kind["BEGIN"], by_kind["COMMIT"]) == (1, 1)
    async with db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 4
    done = await outcomes(db)
    assert all(done[i] is not None and done[i].endswith("created") for i in ids), done
    # Run again (a redelivered message): nothing changes.
    await process_delivery(ctx, *ids)
    async with db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 4


async def test_a_failing_delivery_is_split_out_and_the_others_are_handled(
    ctx: TaskContext, db: Database, merchant: MerchantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await deliveries(db, merchant, 3)
    real = webhook_tasks._create

    async def create(ctx_: TaskContext, session: Any, merchant_: Any, draft: Any) -> str:
        if draft.name == "#9001":
            raise RuntimeError("the database said no")
        return await real(ctx_, session, merchant_, draft)

    monkeypatch.setattr(webhook_tasks, "_create", create)
    with pytest.raises(RuntimeError, match="said no"):
        await process_delivery(ctx, *ids)

    done = await outcomes(db)
    assert [str(done[ids[0]]).endswith("created"), str(done[ids[2]]).endswith("created")] == [
        True,
        True,
    ]
    assert done[ids[1]] == "failed: RuntimeError('the database said no')"  # counted, unprocessed
    async with db.sessionmaker() as session:
        failing = await session.get(WebhookDelivery, uuid.UUID(ids[1]))
        assert failing is not None
        assert (failing.processed_at, failing.failures) == (None, 1)
        names = sorted((await session.scalars(select(Order.name))).all())
    assert names == ["#9000", "#9002"]

    # The retry of the message: the two handled find themselves done, the third now works.
    monkeypatch.setattr(webhook_tasks, "_create", real)
    await process_delivery(ctx, *ids)
    async with db.sessionmaker() as session:
        names = sorted((await session.scalars(select(Order.name))).all())
    assert names == ["#9000", "#9001", "#9002"]
