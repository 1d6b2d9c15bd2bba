"""Tracking polls through the real tasks (``tracking.poll`` leases and enqueues, each
``tracking.poll_batch`` job from the outbox is run as the broker would), against a rest_json
supplier served by respx: changes applied once, the schedule (idle backoff, due soon), the
supplier's rate limit, a bounded number of statements per batch; then stale parcels, late
purchase orders and the one digest email per merchant."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from dramatiq.rate_limits import WindowRateLimiter
from sqlalchemy import delete, event, select, update

from app.db import Database, utcnow
from app.events.models import LifecycleEvent
from app.exceptions.models import ExceptionCase
from app.jobs.models import OutboxMessage
from app.jobs.task import TaskContext
from app.mail.models import OutgoingEmail
from app.merchants.models import Merchant
from app.orders.models import Order, OrderLine
from app.purchasing import service as purchasing_service
from app.purchasing.models import (
    POStatus,
    PurchaseOrder,
    PurchaseOrderLine,
    Shipment,
    TrackingEvent,
)
from app.security import SecretBox
from app.settings import Settings
from app.suppliers.models import Supplier, SupplierProduct
from app.suppliers.service import encrypt_config
from app.timeline.models import OrderEvent
from app.tracking import service, tasks
from app.tracking.models import TrackingAlert, TrackingPoll
from tests.conftest import MerchantHandle, make_merchant

BASE = "https://supplier.test/api"
BATCH = {"batch": {"path": "/tracking", "max_numbers": 100}}
PER_ORDER = {"path": "/orders/{number}/tracking"}
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def ctx_of(settings: Settings, db: Database) -> TaskContext:
    return TaskContext(settings=settings, db=db, box=SecretBox(settings.resolved_secret_key()))


async def seed(
    ctx: TaskContext,
    merchant: MerchantHandle,
    n: int,
    *,
    tracking: dict[str, Any] = BATCH,
    rate: float | None = None,
    shipped_at: datetime = T0,
    name: str = "RestCo",
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A rest_json supplier and ``n`` shipped purchase orders of one order, one parcel each
    (tracking numbers ``TN<i>``, purchase orders ``1001-<i>``)."""
    async with ctx.db.transaction() as session:
        supplier = Supplier(
            merchant_id=merchant.id,
            name=name,
            connector="rest_json",
            config_encrypted=encrypt_config(ctx.box, {"base_url": BASE, "tracking": tracking}),
            rate_limit_per_second=rate,
        )
        order = Order(
            merchant_id=merchant.id,
            source="api",
            name=f"#{name}",
            currency="USD",
            subtotal_price=Decimal("1"),
            total_tax=Decimal("0"),
            total_shipping=Decimal("0"),
            total_discounts=Decimal("0"),
            total_price=Decimal("1"),
            tracking_token=uuid.uuid4().hex,
        )
        session.add_all([supplier, order])
        await session.flush()
        ids = []
        for i in range(n):
            po = PurchaseOrder(
                merchant_id=merchant.id,
                order_id=order.id,
                supplier_id=supplier.id,
                number=f"{name}-{i}",
                status=POStatus.SHIPPED,
                idempotency_key=f"k-{uuid.uuid4()}",
                currency="USD",
                total_cost=Decimal("1"),
                placed_at=shipped_at,
            )
            session.add(po)
            await session.flush()
            shipment = Shipment(
                purchase_order_id=po.id,
                merchant_id=merchant.id,
                carrier="UPS",
                tracking_number=f"TN{i}",
                shipped_at=shipped_at,
            )
            session.add(shipment)
            await session.flush()
            ids.append(shipment.id)
    return supplier.id, ids


async def run_cycle(ctx: TaskContext) -> int:
    """``tracking.poll``, then every poll job it wrote, as the broker would run them."""
    async with ctx.db.transaction() as session:
        await session.execute(delete(OutboxMessage))
    await tasks.poll(ctx)
    async with ctx.db.transaction() as session:
        jobs = (
            await session.scalars(
                select(OutboxMessage).where(OutboxMessage.actor == "tracking.poll_batch")
            )
        ).all()
        await session.execute(delete(OutboxMessage))
    for job in jobs:
        await tasks.poll_batch(ctx, *job.args)
    return len(jobs)


async def make_due(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(TrackingPoll)
            .where(TrackingPoll.next_poll_at.is_not(None))
            .values(next_poll_at=utcnow() - timedelta(seconds=1))
        )


async def polls(db: Database) -> dict[uuid.UUID, TrackingPoll]:
    async with db.transaction() as session:
        return {p.shipment_id: p for p in (await session.scalars(select(TrackingPoll))).all()}


def parcel(number: str, *events: tuple[str, datetime], eta: str | None = None) -> dict[str, Any]:
    return {
        "tracking_number": number,
        "status": events[-1][0] if events else None,
        "estimated_delivery_at": eta,
        "events": [{"status": s, "occurred_at": t.isoformat()} for s, t in events],
    }


@pytest.fixture
def supplier_api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def answer(mock: respx.MockRouter, parcels: list[dict[str, Any]]) -> respx.Route:
    def reply(request: httpx.Request) -> httpx.Response:
        asked = set(json.loads(request.content)["numbers"])
        return httpx.Response(
            200, json={"trackings": [p for p in parcels if p["tracking_number"] in asked]}
        )

    return mock.post("/tracking").mock(side_effect=reply)


def near(moment: datetime | None, delay: timedelta) -> bool:
    assert moment is not None
    return abs(moment - (utcnow() + delay)) < timedelta(seconds=30)


class TestPollCycle:
    async def test_changes_are_applied_once_and_the_schedule_follows(
        self,
        settings: Settings,
        db: Database,
        merchant: MerchantHandle,
        supplier_api: respx.MockRouter,
    ) -> None:
        ctx = ctx_of(settings, db)
        _, (a, b, c) = await seed(ctx, merchant, 3)
        moving = ("in_transit", T0 + timedelta(hours=5))
        van = ("out_for_delivery", T0 + timedelta(days=1))
        done = ("delivered", T0 + timedelta(hours=30))
        route = answer(supplier_api, [parcel("TN0", moving, van), parcel("TN1", moving, done)])

        assert await run_cycle(ctx) == 1  # three parcels, one batch call
        assert route.call_count == 1
        assert json.loads(route.calls.last.request.content) == {"numbers": ["TN0", "TN1", "TN2"]}
        async with db.transaction() as session:
            events = (
                await session.execute(
                    select(TrackingEvent.shipment_id, TrackingEvent.status).order_by(
                        TrackingEvent.shipment_id, TrackingEvent.occurred_at
                    )
                )
            ).all()
            statuses = dict((await session.execute(select(Shipment.id, Shipment.status))).all())
            po_b = await session.scalar(
                select(PurchaseOrder.status)
                .join(Shipment, Shipment.purchase_order_id == PurchaseOrder.id)
                .where(Shipment.id == b)
            )
            timeline = Counter((await session.scalars(select(OrderEvent.type))).all())
            published = Counter(
                (
                    await session.scalars(
                        select(LifecycleEvent.key).where(LifecycleEvent.type.like("shipment.%"))
                    )
                ).all()
            )
        assert events == [
            (a, "in_transit"),
            (a, "out_for_delivery"),
            (b, "in_transit"),
            (b, "delivered"),
        ]
        assert statuses == {a: "out_for_delivery", b: "delivered", c: "shipped"}
        assert po_b == POStatus.DELIVERED
        # The first event of each status is published, for emails, Shopify and webhooks.
        assert published == {
            f"shipment.in_transit:{a}": 1,
            f"shipment.out_for_delivery:{a}": 1,
            f"shipment.in_transit:{b}": 1,
            f"shipment.delivered:{b}": 1,
        }
        assert timeline == {
            "shipment.in_transit": 2,
            "shipment.out_for_delivery": 1,
            "shipment.delivered": 1,
            "purchase_order.delivered": 1,
        }
        state = await polls(db)
        assert near(state[a].next_poll_at, service.SOON_INTERVAL)  # out for delivery
        assert state[b].next_poll_at is None  # delivered: nothing more to ask
        assert near(state[c].next_poll_at, 2 * service.BASE_INTERVAL)  # nothing new
        assert (state[a].idle_polls, state[c].idle_polls) == (0, 1)
        assert state[a].moved_at == van[1]
        assert state[c].moved_at == T0

        # The same answers again: nothing recorded twice, the delivered parcel not asked.
        await make_due(db)
        assert await run_cycle(ctx) == 1
        assert json.loads(route.calls.last.request.content) == {"numbers": ["TN0", "TN2"]}
        async with db.transaction() as session:
            assert len((await session.scalars(select(TrackingEvent.id))).all()) == 4
            assert len((await session.scalars(select(OrderEvent.id))).all()) == 5
        state = await polls(db)
        assert (state[a].idle_polls, state[c].idle_polls) == (1, 2)
        assert near(state[a].next_poll_at, service.SOON_INTERVAL)
        assert near(state[c].next_poll_at, 4 * service.BASE_INTERVAL)

    async def test_idle_backoff_grows_to_the_cap(
        self,
        settings: Settings,
        db: Database,
        merchant: MerchantHandle,
        supplier_api: respx.MockRouter,
    ) -> None:
        ctx = ctx_of(settings, db)
        _, (s,) = await seed(ctx, merchant, 1)
        answer(supplier_api, [parcel("TN0", ("in_transit", T0))])
        delays = []
        for _ in range(7):
            await run_cycle(ctx)
            state = (await polls(db))[s]
            assert state.next_poll_at is not None
            assert state.last_checked_at is not None
            delays.append(round((state.next_poll_at - state.last_checked_at).total_seconds()))
            await make_due(db)
        # The first answer brought an event (a change), then nothing new: 1, 2, 4... hours.
        assert delays == [3600, 7200, 14400, 28800, 57600, 86400, 86400]

    async def test_an_estimate_for_today_polls_sooner(
        self,
        settings: Settings,
        db: Database,
        merchant: MerchantHandle,
        supplier_api: respx.MockRouter,
    ) -> None:
        ctx = ctx_of(settings, db)
        _, (s, later) = await seed(ctx, merchant, 2)
        today = utcnow().replace(hour=23, minute=59, second=0, microsecond=0)
        answer(
            supplier_api,
            [
                parcel("TN0", ("in_transit", T0), eta=today.isoformat()),
                parcel("TN1", ("in_transit", T0), eta=(today + timedelta(days=3)).isoformat()),
            ],
        )
        await run_cycle(ctx)
        state = await polls(db)
        assert near(state[s].next_poll_at, service.SOON_INTERVAL)
        assert state[s].estimated_delivery_at == today
        assert near(state[later].next_poll_at, service.BASE_INTERVAL)

    async def test_only_due_open_shipments_of_trackable_suppliers(
        self,
        settings: Settings,
        db: Database,
        merchant: MerchantHandle,
        supplier_api: respx.MockRouter,
    ) -> None:
        ctx = ctx_of(settings, db)
        await seed(ctx, merchant, 2)
        route = answer(supplier_api, [])
        await run_cycle(ctx)
        assert route.call_count == 1
        assert await run_cycle(ctx) == 0  # not due yet
        assert route.call_count == 1


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_a_batch_is_a_fixed_number_of_statements(
    settings: Settings, db: Database, merchant: MerchantHandle, supplier_api: respx.MockRouter
) -> None:
    """10 parcels or 100, each with new events: the same statements (polls, events, shipments,
    timeline written in one statement each)."""
    ctx = ctx_of(settings, db)
    counts = []
    for n, name in ((10, "Small"), (100, "Large")):
        await seed(ctx, merchant, n, name=name)
        answer(
            supplier_api,
            [
                parcel(f"TN{i}", ("in_transit", T0), ("exception", T0 + timedelta(hours=1)))
                for i in range(n)
            ],
        )
        await tasks.poll(ctx)
        async with db.transaction() as session:
            (job,) = (
                await session.scalars(
                    select(OutboxMessage).where(OutboxMessage.actor == "tracking.poll_batch")
                )
            ).all()
            await session.execute(delete(OutboxMessage))
        assert len(job.args) == n + 1
        with statements(db) as seen:
            await tasks.poll_batch(ctx, *job.args)
        counts.append(len(seen))
        async with db.transaction() as session:
            assert len((await session.scalars(select(TrackingEvent.id))).all()) == 2 * (
                10 if n == 10 else 110
            )
    # publish_many: the events, their reactions (one INSERT … SELECT) and the reactions' jobs.
    assert counts[0] == counts[1] <= 11, counts


async def test_the_suppliers_rate_limit_is_respected(
    settings: Settings,
    db: Database,
    merchant: MerchantHandle,
    supplier_api: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per-order endpoint (one request per parcel) at 4 requests/s: 10 parcels, never more than
    4 slots granted in one window of the limiter (the clock's seconds), no request without its
    slot, every parcel answered.

    Windows are counted where the limiter counts them, when it grants the slot: a request sent
    a few milliseconds after its slot was granted at the end of a second reaches the supplier
    in the next one (that is the limiter's resolution, not a fifth request in its window)."""
    ctx = ctx_of(settings, db)
    _, ids = await seed(ctx, merchant, 10, tracking=PER_ORDER, rate=4)
    seen: list[float] = []
    granted: list[int] = []
    get_keys = WindowRateLimiter._get_keys

    def recording_keys(limiter: WindowRateLimiter) -> list[str]:
        keys: list[str] = get_keys(limiter)
        granted.append(int(keys[0].rsplit("@", 1)[1]))  # the window this attempt counts in
        return keys

    acquire = WindowRateLimiter._acquire

    def recording_acquire(limiter: WindowRateLimiter) -> bool:
        before = len(granted)
        ok: bool = acquire(limiter)
        del granted[before + 1 :]  # the backend may read the keys again: one attempt, one window
        if not ok:
            del granted[before:]
        return ok

    monkeypatch.setattr(WindowRateLimiter, "_get_keys", recording_keys)
    monkeypatch.setattr(WindowRateLimiter, "_acquire", recording_acquire)

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(time.time())
        number = request.url.path.split("/")[-2]
        i = number.rsplit("-", 1)[1]
        return httpx.Response(200, json=parcel(f"TN{i}", ("in_transit", T0)))

    supplier_api.get(url__regex=r"/orders/RestCo-\d+/tracking").mock(side_effect=reply)
    started = time.monotonic()
    await run_cycle(ctx)
    assert len(seen) == 10
    assert len(granted) == 10, granted
    assert max(Counter(granted).values()) <= 4, Counter(granted)
    assert len(set(granted)) >= 3, granted  # 10 slots at 4 per window
    assert time.monotonic() - started >= 1.0  # 10 requests at 4/s: three windows at least
    async with db.transaction() as session:
        assert len((await session.scalars(select(TrackingEvent.id))).all()) == 10
    state = await polls(db)
    assert all(near(state[s].next_poll_at, service.BASE_INTERVAL) for s in ids)


class TestOverdue:
    async def test_stale_parcel_opens_one_exception_even_when_run_twice(
        self, settings: Settings, db: Database, merchant: MerchantHandle
    ) -> None:
        ctx = ctx_of(settings, db)
        other = await make_merchant(db, "patient-store.myshopify.com")
        async with db.transaction() as session:
            m = await session.get(Merchant, other.id)
            assert m is not None
            m.settings = {"tracking": {"stale_after_days": 10}}
        old = utcnow() - timedelta(days=8)
        _, (stale,) = await seed(ctx, merchant, 1, shipped_at=old)
        await seed(ctx, other, 1, shipped_at=old, name="Patient")  # 8 < its 10 days
        await seed(ctx, merchant, 1, shipped_at=utcnow(), name="Fresh")
        async with db.transaction() as session:
            await service.adopt_shipments(session, utcnow())
        for _ in range(2):
            await tasks.check_overdue(ctx)
        async with db.transaction() as session:
            cases = (await session.scalars(select(ExceptionCase))).all()
            delayed = (
                await session.scalars(
                    select(OrderEvent).where(OrderEvent.type == "shipment.delayed")
                )
            ).all()
            alerts = (await session.scalars(select(TrackingAlert))).all()
        assert [(c.kind, c.merchant_id, c.data["shipment_id"]) for c in cases] == [
            ("stale_shipment", merchant.id, str(stale))
        ]
        assert cases[0].reason.startswith("parcel TN0 of RestCo-0 (shipped) has not moved since")
        assert [e.data["shipment_id"] for e in delayed] == [str(stale)]
        async with db.transaction() as session:
            lifecycle = (
                await session.scalars(
                    select(LifecycleEvent).where(LifecycleEvent.type == "shipment.delayed")
                )
            ).all()
        assert [(e.key, e.order_id is not None) for e in lifecycle] == [
            (f"shipment.delayed:{stale}", True)
        ]
        assert [(a.kind, a.shipment_id) for a in alerts] == [("stale_shipment", stale)]

    async def test_a_parcel_that_moved_or_arrived_by_push_is_not_stale(
        self, settings: Settings, db: Database, merchant: MerchantHandle
    ) -> None:
        """Events pushed through the supplier API or the aggregator count as movement; a
        delivered parcel is never stale, and its schedule is retired at its next poll."""
        ctx = ctx_of(settings, db)
        old = utcnow() - timedelta(days=8)
        _, (moved, arrived, silent) = await seed(ctx, merchant, 3, shipped_at=old)
        async with db.transaction() as session:
            await service.adopt_shipments(session, utcnow())
            for sid, status in ((moved, "in_transit"), (arrived, "delivered")):
                shipment = await session.get(Shipment, sid)
                assert shipment is not None
                await purchasing_service.add_tracking_event(
                    session, shipment, status, utcnow() - timedelta(days=1), None
                )
        await tasks.check_overdue(ctx)
        async with db.transaction() as session:
            cases = (await session.scalars(select(ExceptionCase))).all()
        assert [c.data["shipment_id"] for c in cases] == [str(silent)]
        await make_due(db)
        await run_cycle(ctx)
        state = await polls(db)
        assert state[arrived].next_poll_at is None
        assert state[moved].next_poll_at is not None

    async def test_late_purchase_order_opens_one_exception(
        self, settings: Settings, db: Database, merchant: MerchantHandle
    ) -> None:
        ctx = ctx_of(settings, db)
        async with db.transaction() as session:
            supplier = Supplier(merchant_id=merchant.id, name="Slow", connector="portal")
            order = Order(
                merchant_id=merchant.id, source="api", name="#9", currency="USD",
                subtotal_price=Decimal("1"), total_tax=Decimal("0"),
                total_shipping=Decimal("0"), total_discounts=Decimal("0"),
                total_price=Decimal("1"), tracking_token=uuid.uuid4().hex,
            )  # fmt: skip
            session.add_all([supplier, order])
            await session.flush()
            session.add(
                SupplierProduct(
                    merchant_id=merchant.id, supplier_id=supplier.id, sku="RED",
                    supplier_sku="S-RED", unit_cost=Decimal("1"), currency="USD",
                    lead_time_days=3,
                )
            )  # fmt: skip
            pos = {}
            for name, days in (("late", 5), ("in-time", 3)):
                po = PurchaseOrder(
                    merchant_id=merchant.id, order_id=order.id, supplier_id=supplier.id,
                    number=name, status=POStatus.ACCEPTED, idempotency_key=name,
                    currency="USD", total_cost=Decimal("1"),
                    placed_at=utcnow() - timedelta(days=days),
                )  # fmt: skip
                session.add(po)
                await session.flush()
                session.add(
                    PurchaseOrderLine(
                        purchase_order_id=po.id, order_line_id=await line_of(session, order),
                        merchant_id=merchant.id, position=0, sku="RED", supplier_sku="S-RED",
                        quantity=1, unit_cost=Decimal("1"),
                    )
                )  # fmt: skip
                pos[name] = po.id
        for _ in range(2):
            await tasks.check_overdue(ctx)
        async with db.transaction() as session:
            cases = (await session.scalars(select(ExceptionCase))).all()
        assert [(c.kind, c.data["purchase_order_id"]) for c in cases] == [
            ("late_purchase_order", str(pos["late"]))
        ]
        assert cases[0].reason == (
            "purchase order late at Slow, placed "
            f"{(utcnow() - timedelta(days=5)):%Y-%m-%d} (5 days ago, lead time 3 days), "
            "has no shipment"
        )

    async def test_one_digest_email_per_merchant_per_period_with_every_item(
        self, settings: Settings, db: Database, merchant: MerchantHandle
    ) -> None:
        ctx = ctx_of(settings, db)
        rival = await make_merchant(db, "rival-store.myshopify.com", "rival@example.com")
        async with db.transaction() as session:  # the rival names who reads its alerts
            m = await session.get(Merchant, rival.id)
            assert m is not None
            m.settings = {
                "notifications": {"alert_recipients": ["ops@rival.example", "boss@rival.example"]}
            }
        old = utcnow() - timedelta(days=9)
        await seed(ctx, merchant, 2, shipped_at=old)
        await seed(ctx, rival, 1, shipped_at=old, name="RivalCo")
        async with db.transaction() as session:
            await service.adopt_shipments(session, utcnow())
        await tasks.check_overdue(ctx)
        for _ in range(2):
            await tasks.digest(ctx)
        async with db.transaction() as session:
            emails = (
                await session.scalars(select(OutgoingEmail).order_by(OutgoingEmail.to_address))
            ).all()
            undigested = (
                await session.scalars(
                    select(TrackingAlert.id).where(TrackingAlert.digested_at.is_(None))
                )
            ).all()
        assert [(e.to_address, e.kind, e.subject) for e in emails] == [
            (
                "boss@rival.example",
                "tracking_digest",
                "1 shipment needs your attention (rival-store.myshopify.com)",
            ),
            (
                "ops@rival.example",
                "tracking_digest",
                "1 shipment needs your attention (rival-store.myshopify.com)",
            ),
            (
                "owner@example.com",
                "tracking_digest",
                "2 shipments need your attention (acme-store.myshopify.com)",
            ),
        ]
        emails = [emails[2], emails[0], emails[1]]
        assert emails[0].key == f"tracking-digest:{service.digest_period(utcnow())}"
        assert "parcel TN0 of RestCo-0 (shipped) has not moved" in emails[0].text_body
        assert "parcel TN1 of RestCo-1 (shipped) has not moved" in emails[0].text_body
        assert "RivalCo" not in emails[0].text_body
        assert emails[0].html_body is not None
        assert "<li>parcel TN1 of RestCo-1" in emails[0].html_body
        assert undigested == []


async def line_of(session: Any, order: Order) -> uuid.UUID:
    line = OrderLine(
        order_id=order.id,
        merchant_id=order.merchant_id,
        position=0,
        sku="RED",
        title="Red",
        quantity=1,
        price=Decimal("1"),
    )
    session.add(line)
    await session.flush()
    return line.id
