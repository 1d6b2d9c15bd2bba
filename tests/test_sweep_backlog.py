"""The sweeper does not multiply a backlog: work that looks idle while its queue is more than a
stale window behind is most likely still waiting there, so that queue is not swept (a flash
sale's 20,000 orders would otherwise be sent again every minute); once the queue moves again,
what was really lost is re-enqueued. Both brokers (in-process and Redis)."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import dramatiq
import pytest
from dramatiq import Message
from sqlalchemy import select, update

from app.db import Database, utcnow
from app.jobs.models import OutboxMessage
from app.jobs.task import TaskContext
from app.settings import Settings
from app.webhooks.models import WebhookDelivery
from tests.conftest import MerchantHandle
from tests.support.order_flow import store_delivery
from tests.support.shopify import order_payload
from workers.broker import build_broker
from workers.maintenance import oldest_waiting, sweep
from workers.relay import OutboxRelay

STALE_AFTER = 120


@pytest.fixture
def broker(settings: Settings) -> dramatiq.Broker:
    return build_broker(settings)


@pytest.fixture
def ctx(settings: Settings, db: Database) -> TaskContext:
    """What the sweep task gets, with a stale window of ``STALE_AFTER`` seconds."""
    return TaskContext(
        settings=settings.model_copy(update={"stale_after": STALE_AFTER}),
        db=db,
        box=None,  # type: ignore[arg-type]
    )


def waiting(broker: dramatiq.Broker, seconds_ago: float) -> Message[object]:
    """A ``webhook.process`` message sent ``seconds_ago``, left waiting in the intake queue."""
    sent = int((time.time() - seconds_ago) * 1000)
    message: Message[object] = Message(
        queue_name="intake",
        actor_name="webhook.process",
        args=(str(uuid.uuid4()),),
        kwargs={},
        options={},
        message_timestamp=sent,
    )
    broker.enqueue(message)
    return message


async def idle_delivery(db: Database, merchant: MerchantHandle) -> str:
    """A stored webhook nobody processed, received ten minutes ago."""
    delivery_id = await store_delivery(db, merchant, order_payload())
    async with db.transaction() as session:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == uuid.UUID(delivery_id))
            .values(received_at=utcnow() - timedelta(minutes=10))
        )
    return delivery_id


async def swept(db: Database, actor: str) -> list[list[object]]:
    async with db.sessionmaker() as session:
        rows = await session.scalars(select(OutboxMessage).where(OutboxMessage.actor == actor))
        return [list(r.args) for r in rows]


async def test_a_queue_behind_by_more_than_the_window_is_not_swept_until_it_moves(
    ctx: TaskContext, db: Database, merchant: MerchantHandle, broker: dramatiq.Broker
) -> None:
    delivery_id = await idle_delivery(db, merchant)

    old = waiting(broker, 2 * STALE_AFTER)
    sent = oldest_waiting(broker, "intake")
    assert sent is not None
    assert abs(sent.timestamp() * 1000 - old.message_timestamp) < 1
    assert oldest_waiting(broker, "email") is None
    await sweep(ctx)
    assert await swept(db, "webhook.process") == []  # still waiting, most likely: not re-sent

    # The backlog is worked off (the queue's oldest message is recent): the lost one is re-sent.
    broker.flush("intake")
    waiting(broker, 5)
    await sweep(ctx)
    assert await swept(db, "webhook.process") == [[delivery_id]]


async def test_a_backlog_relayed_after_the_workers_were_stopped_shows_its_age(
    ctx: TaskContext, db: Database, merchant: MerchantHandle, broker: dramatiq.Broker
) -> None:
    """The workers (and so the relay) were down for twice the window: the jobs relayed when they
    come back are dated when they became due, so the queue looks as far behind as it is and the
    first sweep does not send the whole backlog a second time."""
    delivery_id = await idle_delivery(db, merchant)
    due = utcnow() - timedelta(seconds=2 * STALE_AFTER)
    async with db.transaction() as session:
        session.add(
            OutboxMessage(
                id=uuid.uuid4(), actor="webhook.process", args=[delivery_id], available_at=due
            )
        )
    assert await OutboxRelay(db, broker).relay_once() == 1
    sent = oldest_waiting(broker, "intake")
    assert sent is not None
    assert abs((sent - due).total_seconds()) < 0.001
    await sweep(ctx)
    assert await swept(db, "webhook.process") == []  # the relayed one was deleted; none re-sent


async def test_an_empty_queue_is_swept_at_once(
    ctx: TaskContext, db: Database, merchant: MerchantHandle, broker: dramatiq.Broker
) -> None:
    delivery_id = await idle_delivery(db, merchant)
    # Another kind's backlog does not hold up the intake sweep.
    old: Message[object] = Message(
        queue_name="email",
        actor_name="email.send",
        args=(str(uuid.uuid4()),),
        kwargs={},
        options={},
        message_timestamp=int((time.time() - 3 * STALE_AFTER) * 1000),
    )
    broker.enqueue(old)
    await sweep(ctx)
    assert await swept(db, "webhook.process") == [[delivery_id]]


async def test_a_zero_window_sweeps_everything_whatever_waits(
    ctx: TaskContext, db: Database, merchant: MerchantHandle, broker: dramatiq.Broker
) -> None:
    """``sweep(ctx, 0)`` is "recover everything now" (the in-process broker's start)."""
    delivery_id = await idle_delivery(db, merchant)
    waiting(broker, 2 * STALE_AFTER)
    await sweep(ctx, 0)
    assert await swept(db, "webhook.process") == [[delivery_id]]
