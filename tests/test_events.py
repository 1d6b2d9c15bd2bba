"""Lifecycle events: published once per occurrence in the transaction of the change, handed to
every subscriber in a job of its own, at least once, and never lost with a job."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.db import Database, DbSession, uuid7
from app.events.models import EventReaction, LifecycleEvent
from app.jobs.models import OutboxMessage
from app.jobs.task import REGISTRY, TaskContext
from app.purchasing.models import Shipment
from app.settings import Settings
from tests.conftest import MerchantHandle, make_merchant
from tests.support.broker import losing_jobs, outbox_empty
from tests.support.portal import bearer, line, offer, portal_supplier, routed_order
from tests.support.wait import eventually
from workers.maintenance import sweep

Client = AsyncTestClient[Litestar]

#: What the probe subscriber saw: (subscriber, event type, key), in order of handling.
SEEN: list[tuple[str, str, str]] = []
#: Event types the failing probe refuses once each (a subscriber that fails, then recovers).
FAIL_ONCE: set[str] = set()


async def _probe(ctx: TaskContext, session: DbSession, event: LifecycleEvent) -> None:
    SEEN.append(("probe", event.type, event.key))


async def _flaky(ctx: TaskContext, session: DbSession, event: LifecycleEvent) -> None:
    if event.type in FAIL_ONCE:
        FAIL_ONCE.discard(event.type)
        raise ConnectionError("flaky subscriber: the database went away")  # transient
    SEEN.append(("flaky", event.type, event.key))


@pytest.fixture(autouse=True)
def subscribers() -> Iterator[None]:
    """Two subscribers of every event, for this module's tests only."""
    SEEN.clear()
    FAIL_ONCE.clear()
    REGISTRY.subscribe("*")(_probe)
    REGISTRY.subscribe("shipment.shipped", "shipment.delivered")(_flaky)
    yield
    for fn in (_probe, _flaky):
        REGISTRY.subscribers.pop(f"{fn.__module__}.{fn.__qualname__}", None)


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, "events-shop.myshopify.com", auto_route=True)


async def shipped(client: Client, shop: MerchantHandle) -> tuple[str, dict[str, Any], str, str]:
    """An order routed to a portal supplier and shipped: order, supplier, po and shipment."""
    supplier = await portal_supplier(client, shop, "Alpha")
    await offer(client, shop, supplier["supplier"]["id"], "RED", stock=5)
    order_id, [po] = await routed_order(client, shop, "EV-1", [line("RED", 2)])
    r = await client.post(
        f"/supplier/v1/orders/{po['id']}/shipments",
        json={"carrier": "UPS", "tracking_number": "1Z999AA10123456784"},
        headers=bearer(supplier["api_key"]),
    )
    assert r.status_code == 201, r.text
    return order_id, supplier, po["id"], r.json()["id"]


async def post_event(
    client: Client, supplier: dict[str, Any], shipment_id: str, status: str, at: str
) -> Any:
    r = await client.post(
        f"/supplier/v1/shipments/{shipment_id}/events",
        json={"status": status, "occurred_at": at},
        headers=bearer(supplier["api_key"]),
    )
    assert r.status_code in (200, 201), r.text
    return r.json()


async def published(db: Database, order_id: str) -> list[tuple[str, bool]]:
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(LifecycleEvent.type, LifecycleEvent.dispatched_at)
            .where(LifecycleEvent.order_id == uuid.UUID(order_id))
            .order_by(LifecycleEvent.created_at, LifecycleEvent.id)
        )
        return [(t, d is not None) for t, d in rows]


async def seen(expected: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    async def probe() -> list[tuple[str, str, str]] | None:
        got = sorted(SEEN)
        return got if got == sorted(expected) else None

    return await eventually(probe)


async def test_an_order_publishes_each_step_once_and_every_subscriber_hears_it(
    client: Client, db: Database, shop: MerchantHandle
) -> None:
    order_id, supplier, po_id, shipment_id = await shipped(client, shop)
    await post_event(client, supplier, shipment_id, "in_transit", "2026-11-30T08:00:00Z")
    # The same event again, and a second in_transit later on: one shipment.in_transit.
    await post_event(client, supplier, shipment_id, "in_transit", "2026-11-30T08:00:00Z")
    await post_event(client, supplier, shipment_id, "in_transit", "2026-11-30T20:00:00Z")
    await post_event(client, supplier, shipment_id, "delivered", "2026-12-01T09:30:00Z")

    types = [
        "order.created",
        "order.routed",
        "purchase_order.placed",
        "shipment.shipped",
        "shipment.in_transit",
        "shipment.delivered",
        "order.delivered",
    ]
    await eventually(lambda: _all_dispatched(db, order_id, len(types)))
    assert await published(db, order_id) == [(t, True) for t in types]
    expected = [
        ("probe", t, k) for t, k in zip(types, _keys(order_id, po_id, shipment_id), strict=True)
    ]
    expected += [
        ("flaky", "shipment.shipped", f"shipment.shipped:{shipment_id}"),
        ("flaky", "shipment.delivered", f"shipment.delivered:{shipment_id}"),
    ]
    assert await seen(expected) == sorted(expected)


def _keys(order_id: str, po_id: str, shipment_id: str) -> list[str]:
    return [
        f"order.created:{order_id}",
        f"order.routed:{order_id}",
        f"purchase_order.placed:{po_id}",
        f"shipment.shipped:{shipment_id}",
        f"shipment.in_transit:{shipment_id}",
        f"shipment.delivered:{shipment_id}",
        f"order.delivered:{order_id}",
    ]


async def _all_dispatched(db: Database, order_id: str, n: int) -> bool:
    rows = await published(db, order_id)
    return len(rows) == n and all(done for _, done in rows)


async def test_a_failing_subscriber_retries_alone(
    client: Client, db: Database, shop: MerchantHandle
) -> None:
    FAIL_ONCE.add("shipment.shipped")
    order_id, _, po_id, shipment_id = await shipped(client, shop)
    key = f"shipment.shipped:{shipment_id}"
    # The probe hears it at once; the flaky one after its retry, once.
    await seen(
        [
            ("probe", "order.created", f"order.created:{order_id}"),
            ("probe", "order.routed", f"order.routed:{order_id}"),
            ("probe", "purchase_order.placed", f"purchase_order.placed:{po_id}"),
            ("probe", "shipment.shipped", key),
            ("flaky", "shipment.shipped", key),
        ]
    )
    assert set() == FAIL_ONCE
    assert [s for s in SEEN if s[0] == "flaky"] == [("flaky", "shipment.shipped", key)]


async def test_an_older_event_arriving_late_does_not_undo_delivery(
    client: Client, db: Database, shop: MerchantHandle
) -> None:
    _, supplier, _, shipment_id = await shipped(client, shop)
    await post_event(client, supplier, shipment_id, "delivered", "2026-12-01T09:30:00Z")
    await post_event(client, supplier, shipment_id, "in_transit", "2026-11-30T08:00:00Z")
    async with db.sessionmaker() as session:
        shipment = await session.get(Shipment, uuid.UUID(shipment_id))
        assert shipment is not None
        assert (shipment.status, shipment.last_event_at is not None) == ("delivered", True)
        assert shipment.delivered_at is not None
        assert shipment.delivered_at.isoformat() == "2026-12-01T09:30:00+00:00"


async def test_info_received_is_part_of_the_vocabulary(
    client: Client, db: Database, shop: MerchantHandle
) -> None:
    order_id, supplier, _, shipment_id = await shipped(client, shop)
    await post_event(client, supplier, shipment_id, "info_received", "2026-11-30T07:00:00Z")
    r = await client.post(
        f"/supplier/v1/shipments/{shipment_id}/events",
        json={"status": "teleported", "occurred_at": "2026-11-30T07:00:00Z"},
        headers=bearer(supplier["api_key"]),
    )
    assert r.status_code == 400
    assert "info_received" in r.json()["detail"]
    assert await eventually(lambda: _has(db, order_id, "shipment.info_received"))


async def _has(db: Database, order_id: str, type_: str) -> bool:
    return (type_, True) in await published(db, order_id)


async def test_events_of_the_old_code_are_still_dispatched(
    client: Client, db: Database, shop: MerchantHandle, settings: Settings
) -> None:
    """Before the upgrade, publishing wrote the event undispatched and an ``events.dispatch``
    job: such a job still queued runs (and creates the reactions), and one that was lost is
    found by the sweeper; an event published now is dispatched already (nothing to sweep)."""
    order_id, _, _, _ = await shipped(client, shop)
    await eventually(lambda: _count_probe(4))
    workers = client.app.state.workers
    oid = uuid.UUID(order_id)
    queued, lost = uuid7(), uuid7()
    async with db.transaction() as session:
        for event_id, type_ in ((queued, "order.delivered"), (lost, "order.cancelled")):
            session.add(
                LifecycleEvent(
                    id=event_id,
                    merchant_id=shop.id,
                    order_id=oid,
                    type=type_,
                    key=f"{type_}:{order_id}",
                    data={"order_id": order_id},
                )
            )
        await session.flush()
        session.add(OutboxMessage(actor="events.dispatch", args=[str(queued)]))
    workers.relay.wake()
    await eventually(lambda: _count_probe(5))
    assert ("probe", "order.delivered", f"order.delivered:{order_id}") in SEEN
    assert (await published(db, order_id))[-2:] == [
        ("order.delivered", True),
        ("order.cancelled", False),
    ]
    ctx = TaskContext(settings=settings.model_copy(update={"stale_after": 0}), db=db, box=None)  # type: ignore[arg-type]
    await sweep(ctx)
    workers.relay.wake()
    await eventually(lambda: _all_dispatched(db, order_id, 6))
    await eventually(lambda: _count_probe(6))
    assert ("probe", "order.cancelled", f"order.cancelled:{order_id}") in SEEN


async def _count_probe(n: int) -> bool:
    return len([s for s in SEEN if s[0] == "probe"]) == n


async def _published_count(db: Database, order_id: str, n: int) -> bool:
    async with db.sessionmaker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(LifecycleEvent)
            .where(LifecycleEvent.order_id == uuid.UUID(order_id))
        )
    return count == n


async def test_a_lost_reaction_job_is_found_by_the_sweeper(
    client: Client, db: Database, shop: MerchantHandle, settings: Settings
) -> None:
    """The event was published, but the job running one subscriber was lost (Redis restarted):
    its reaction stays pending until the sweeper runs it, once."""
    workers = client.app.state.workers
    with losing_jobs(workers.broker, "events.handle") as lost:
        order_id, _, _, _ = await shipped(client, shop)
        await eventually(lambda: _all_dispatched(db, order_id, 4))
        await eventually(lambda: outbox_empty(db))
    assert SEEN == []
    async with db.sessionmaker() as session:
        pending = await session.scalar(
            select(func.count()).select_from(EventReaction).where(EventReaction.done_at.is_(None))
        )
    # Every reaction of the four events (the app's own subscribers' too) is pending, none lost.
    assert pending == len(lost) >= 5
    ctx = TaskContext(settings=settings.model_copy(update={"stale_after": 0}), db=db, box=None)  # type: ignore[arg-type]
    await sweep(ctx)
    workers.relay.wake()
    await eventually(lambda: _count_probe(4))
    await eventually(lambda: _done(db, len(lost)))
    await sweep(ctx)  # nothing pending any more: nothing runs twice
    workers.relay.wake()
    await eventually(lambda: outbox_empty(db))
    assert len(SEEN) == 5


async def _done(db: Database, n: int) -> bool:
    async with db.sessionmaker() as session:
        done = await session.scalar(
            select(func.count())
            .select_from(EventReaction)
            .where(EventReaction.done_at.is_not(None))
        )
    return done == n
