"""Publishing lifecycle events costs a known number of SQL statements, counted by kind: the
event, its reactions (one ``INSERT … SELECT`` filtered by each subscriber's ``when``) and their
``events.handle`` jobs, in the publisher's transaction, with no ``events.dispatch`` hop; handling
a reaction claims it with its event in one statement. A regression (a dispatch job again, one
statement per reaction, a reaction for a merchant with no endpoint) fails here.

The order-like flow is the hot path's: ``order.created``, ``order.routed`` and two
``purchase_order.placed`` (3 lines, two suppliers).
"""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from app.db import Database, uuid7
from app.events import service as events
from app.events.models import EventReaction, EventType, LifecycleEvent
from app.events.tasks import dispatch_event, handle_event
from app.jobs.models import OutboxMessage
from app.jobs.task import TaskContext, discover
from app.orders.models import Order
from app.outbound.models import EndpointDelivery, WebhookEndpoint
from app.security import SecretBox
from app.settings import Settings
from tests.conftest import MerchantHandle, make_merchant
from tests.test_hot_path_statements import counting, kind

OUTBOUND = "app.outbound.tasks.deliveries_for_event"
EMAILS = "app.notifications.tasks.email_customer"


async def make_order(db: Database, merchant: MerchantHandle, source: str) -> uuid.UUID:
    order_id = uuid7()
    async with db.transaction() as session:
        session.add(
            Order(
                id=order_id,
                merchant_id=merchant.id,
                source=source,
                name=f"#{order_id.hex[-6:]}",
                email="buyer@example.com",
                currency="USD",
                subtotal_price=Decimal("225.50"),
                total_tax=Decimal("0"),
                total_shipping=Decimal("0"),
                total_discounts=Decimal("0"),
                total_price=Decimal("225.50"),
                tracking_token=uuid7().hex,
            )
        )
    return order_id


async def add_endpoint(
    db: Database, merchant: MerchantHandle, events_: list[str], *, enabled: bool = True
) -> None:
    async with db.transaction() as session:
        session.add(
            WebhookEndpoint(
                merchant_id=merchant.id,
                url="https://hooks.example.com/dropship",
                events=events_,
                enabled=enabled,
                secret_encrypted=b"not used: nothing is sent here",
            )
        )


def order_flow(order_id: uuid.UUID) -> list[tuple[str, str]]:
    """(type, key) of what one 3-line, two-supplier order publishes, delivery to placed."""
    po1, po2 = uuid7(), uuid7()
    return [
        (EventType.ORDER_CREATED, f"order.created:{order_id}"),
        (EventType.ORDER_ROUTED, f"order.routed:{order_id}"),
        (EventType.PURCHASE_ORDER_PLACED, f"purchase_order.placed:{po1}"),
        (EventType.PURCHASE_ORDER_PLACED, f"purchase_order.placed:{po2}"),
    ]


async def publish_flow(
    db: Database, merchant: MerchantHandle, order_id: uuid.UUID
) -> tuple[dict[str, int], list[uuid.UUID]]:
    """Publish the order's events, each in a transaction of its own (as its publisher does):
    the statements of all of them by kind, and the events' ids."""
    ids: list[uuid.UUID] = []
    total: Counter[str] = Counter()
    for type_, key in order_flow(order_id):
        with counting(db) as seen:
            async with db.transaction() as session:
                event_id = await events.publish(
                    session, None, type_, key=key, merchant_id=merchant.id, order_id=order_id
                )
        assert event_id is not None
        ids.append(event_id)
        total.update(kind(s) for s in seen)
    return dict(sorted(total.items())), ids


async def reactions_of(db: Database, event_ids: list[uuid.UUID]) -> list[tuple[str, str]]:
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(LifecycleEvent.type, EventReaction.subscriber)
            .join(LifecycleEvent, LifecycleEvent.id == EventReaction.event_id)
            .where(EventReaction.event_id.in_(event_ids))
            .order_by(LifecycleEvent.created_at, LifecycleEvent.id, EventReaction.subscriber)
        )
        return [(t, s) for t, s in rows]


async def jobs(db: Database) -> list[tuple[str, list[Any]]]:
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(OutboxMessage.actor, OutboxMessage.args).order_by(
                OutboxMessage.created_at, OutboxMessage.id
            )
        )
        return [(a, list(args)) for a, args in rows]


async def clear_outbox(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(OutboxMessage.__table__.delete())


def context(settings: Settings, db: Database) -> TaskContext:
    return TaskContext(settings=settings, db=db, box=SecretBox(settings.resolved_secret_key()))


async def test_a_shopify_order_with_no_endpoint_costs_its_event_rows_only(
    settings: Settings, db: Database
) -> None:
    """The hot path's case: a Shopify order (Shopify confirms it itself) of a merchant with no
    outbound endpoint. Each event is two INSERTs (before: the event and its ``events.dispatch``
    job, then four dispatch and five handle jobs, about 55 statements more)."""
    discover()
    shop = await make_merchant(db, "quiet-shop.myshopify.com")
    order_id = await make_order(db, shop, "shopify")
    by_kind, ids = await publish_flow(db, shop, order_id)
    assert by_kind == {"BEGIN": 4, "COMMIT": 4, "INSERT": 8}
    assert await reactions_of(db, ids) == []
    assert await jobs(db) == []
    async with db.sessionmaker() as session:
        undispatched = await session.scalar(
            select(func.count())
            .select_from(LifecycleEvent)
            .where(LifecycleEvent.dispatched_at.is_(None))
        )
    assert undispatched == 0  # the sweeper's ``undispatched`` finds only the old code's


async def test_reactions_and_their_jobs_are_written_with_the_event(
    settings: Settings, db: Database
) -> None:
    """An API order of a merchant with an endpoint for every event: one outbound reaction per
    event and the confirmation email's, each with its job, three INSERTs per event; handling
    each claims it with its event in one SELECT and marks it done in one UPDATE."""
    discover()
    shop = await make_merchant(db, "loud-shop.myshopify.com")
    await add_endpoint(db, shop, ["*"])
    order_id = await make_order(db, shop, "api")
    by_kind, ids = await publish_flow(db, shop, order_id)
    assert by_kind == {"BEGIN": 4, "COMMIT": 4, "INSERT": 12}
    assert await reactions_of(db, ids) == [
        (EventType.ORDER_CREATED, EMAILS),
        (EventType.ORDER_CREATED, OUTBOUND),
        (EventType.ORDER_ROUTED, OUTBOUND),
        (EventType.PURCHASE_ORDER_PLACED, OUTBOUND),
        (EventType.PURCHASE_ORDER_PLACED, OUTBOUND),
    ]
    queued = await jobs(db)
    assert [actor for actor, _ in queued] == ["events.handle"] * 5
    await clear_outbox(db)

    ctx = context(settings, db)
    per_reaction: list[dict[str, int]] = []
    try:
        for _, (reaction_id,) in queued:
            with counting(db) as seen:
                await handle_event(ctx, reaction_id)
            per_reaction.append(dict(sorted(Counter(kind(s) for s in seen).items())))
        # A second delivery of a job finds its reaction done: one SELECT.
        with counting(db) as seen:
            await handle_event(ctx, queued[0][1][0])
        assert Counter(kind(s) for s in seen) == {"BEGIN": 1, "SELECT": 1, "COMMIT": 1}
    finally:
        await ctx.aclose()
    async with db.sessionmaker() as session:
        subscriber_of = dict(
            (await session.execute(select(EventReaction.id, EventReaction.subscriber))).all()
        )
    by_subscriber: dict[str, list[dict[str, int]]] = {}
    for (_, (reaction_id,)), counted in zip(queued, per_reaction, strict=True):
        by_subscriber.setdefault(subscriber_of[uuid.UUID(reaction_id)], []).append(counted)
    # Outbound: the claim (with the event), the endpoints, the order for the body; the delivery
    # and its job; done. Before: one SELECT more (the event apart from its reaction).
    outbound = {"BEGIN": 1, "COMMIT": 1, "INSERT": 2, "SELECT": 3, "UPDATE": 1}
    # The confirmation email: the claim, then what ``notify`` reads and writes; done.
    email = {"BEGIN": 1, "COMMIT": 1, "INSERT": 3, "SELECT": 6, "UPDATE": 1}
    assert by_subscriber == {OUTBOUND: [outbound] * 4, EMAILS: [email]}
    async with db.sessionmaker() as session:
        pending = await session.scalar(
            select(func.count()).select_from(EventReaction).where(EventReaction.done_at.is_(None))
        )
        deliveries = await session.scalar(select(func.count()).select_from(EndpointDelivery))
    assert (pending, deliveries) == (0, 4)
    assert [actor for actor, _ in await jobs(db)].count("outbound.deliver") == 4


async def test_a_batch_costs_three_statements_whatever_its_size(
    settings: Settings, db: Database
) -> None:
    discover()
    shop = await make_merchant(db, "batch-shop.myshopify.com")
    await add_endpoint(db, shop, ["purchase_order.placed"])
    order_ids = [await make_order(db, shop, "shopify") for _ in range(3)]
    batch = [
        events.Publication(shop.id, oid, type_, key, {})
        for oid in order_ids
        for type_, key in order_flow(oid)
    ]
    with counting(db) as seen:
        async with db.transaction() as session:
            assert await events.publish_many(session, batch) == 12
    assert Counter(kind(s) for s in seen) == {"BEGIN": 1, "INSERT": 3, "COMMIT": 1}
    async with db.sessionmaker() as session:
        ids = list((await session.scalars(select(LifecycleEvent.id))).all())
    # The endpoint wants purchase orders only: six reactions, six jobs.
    assert [s for _, s in await reactions_of(db, ids)] == [OUTBOUND] * 6
    assert {t for t, _ in await reactions_of(db, ids)} == {EventType.PURCHASE_ORDER_PLACED}
    assert [actor for actor, _ in await jobs(db)] == ["events.handle"] * 6
    # Published again: nothing new, only the event INSERT.
    with counting(db) as seen:
        async with db.transaction() as session:
            assert await events.publish_many(session, batch) == 0
    assert Counter(kind(s) for s in seen) == {"BEGIN": 1, "INSERT": 1, "COMMIT": 1}


async def test_outbound_reactions_only_for_merchants_with_an_endpoint_for_the_type(
    settings: Settings, db: Database
) -> None:
    discover()
    none = await make_merchant(db, "no-endpoint.myshopify.com")
    disabled = await make_merchant(db, "disabled-endpoint.myshopify.com")
    await add_endpoint(db, disabled, ["*"], enabled=False)
    other_type = await make_merchant(db, "shipping-only.myshopify.com")
    await add_endpoint(db, other_type, ["shipment.shipped", "shipment.delivered"])
    wanting = await make_merchant(db, "wants-created.myshopify.com")
    await add_endpoint(db, wanting, ["order.created"])
    await add_endpoint(db, wanting, ["*"])  # two endpoints: still one reaction

    created: dict[str, uuid.UUID] = {}
    for name, m in (
        ("none", none),
        ("disabled", disabled),
        ("other_type", other_type),
        ("wanting", wanting),
    ):
        order_id = await make_order(db, m, "shopify")
        async with db.transaction() as session:
            event_id = await events.publish(
                session,
                None,
                EventType.ORDER_CREATED,
                key=f"order.created:{order_id}",
                merchant_id=m.id,
                order_id=order_id,
            )
            # Published twice (the change processed again): still one event, one reaction.
            again = await events.publish(
                session,
                None,
                EventType.ORDER_CREATED,
                key=f"order.created:{order_id}",
                merchant_id=m.id,
                order_id=order_id,
            )
        assert event_id is not None
        assert again is None
        created[name] = event_id
    for name in ("none", "disabled", "other_type"):
        assert await reactions_of(db, [created[name]]) == []
    assert await reactions_of(db, [created["wanting"]]) == [(EventType.ORDER_CREATED, OUTBOUND)]
    [(actor, [reaction_id])] = await jobs(db)
    assert actor == "events.handle"
    await clear_outbox(db)
    ctx = context(settings, db)
    try:
        await handle_event(ctx, reaction_id)
        await handle_event(ctx, reaction_id)  # delivered twice: one delivery per endpoint
    finally:
        await ctx.aclose()
    async with db.sessionmaker() as session:
        deliveries = await session.scalar(
            select(func.count())
            .select_from(EndpointDelivery)
            .where(EndpointDelivery.event_id == created["wanting"])
        )
    assert deliveries == 2
    assert [actor for actor, _ in await jobs(db)] == ["outbound.deliver"] * 2


async def test_an_event_of_the_old_code_is_dispatched_in_a_fixed_number_of_statements(
    settings: Settings, db: Database
) -> None:
    """An event published before the upgrade (undispatched, its ``events.dispatch`` job
    queued): the dispatch writes its reactions and their jobs set-based, and a second delivery
    of that job finds it dispatched."""
    discover()
    shop = await make_merchant(db, "old-shop.myshopify.com")
    await add_endpoint(db, shop, ["*"])
    order_id = await make_order(db, shop, "api")
    event_id = uuid7()
    async with db.transaction() as session:
        session.add(
            LifecycleEvent(
                id=event_id,
                merchant_id=shop.id,
                order_id=order_id,
                type=EventType.ORDER_CREATED,
                key=f"order.created:{order_id}",
                data={"order_id": str(order_id)},
            )
        )
    ctx = context(settings, db)
    try:
        with counting(db) as seen:
            await dispatch_event(ctx, str(event_id))
        assert Counter(kind(s) for s in seen) == {
            "BEGIN": 1,
            "SELECT": 1,
            "INSERT": 2,
            "UPDATE": 1,
            "COMMIT": 1,
        }
        with counting(db) as seen:
            await dispatch_event(ctx, str(event_id))
        assert Counter(kind(s) for s in seen) == {"BEGIN": 1, "SELECT": 1, "COMMIT": 1}
    finally:
        await ctx.aclose()
    assert await reactions_of(db, [event_id]) == [
        (EventType.ORDER_CREATED, EMAILS),
        (EventType.ORDER_CREATED, OUTBOUND),
    ]
    assert [actor for actor, _ in await jobs(db)] == ["events.handle"] * 2


async def test_deferred_publications_are_written_together_at_the_end(
    settings: Settings, db: Database
) -> None:
    """Inside ``deferred_publications`` each ``publish`` only notes its event; leaving it writes
    them all in the three statements of one batch, with the ids ``publish`` handed out. A key
    published twice is one event."""
    discover()
    shop = await make_merchant(db, "deferred-shop.myshopify.com")
    await add_endpoint(db, shop, ["order.created", "purchase_order.placed"])
    order_id = await make_order(db, shop, "shopify")
    flow = order_flow(order_id)
    handed: list[uuid.UUID | None] = []
    with counting(db) as seen:
        async with db.transaction() as session, events.deferred_publications(session):
            for type_, key in [*flow, flow[0]]:
                handed.append(
                    await events.publish(
                        session, None, type_, key=key, merchant_id=shop.id, order_id=order_id
                    )
                )
            assert seen == []  # nothing written yet
    assert Counter(kind(s) for s in seen) == {"BEGIN": 1, "INSERT": 3, "COMMIT": 1}
    async with db.sessionmaker() as session:
        stored = (
            await session.execute(
                select(LifecycleEvent.id, LifecycleEvent.key).order_by(LifecycleEvent.id)
            )
        ).all()
    assert {key: event_id for event_id, key in stored} == {
        key: event_id for (_, key), event_id in zip(flow, handed, strict=False)
    }
    assert len(await reactions_of(db, handed[:4])) == 3  # the endpoint's types only


async def test_a_deferred_publication_of_a_savepoint_goes_with_it(
    settings: Settings, db: Database
) -> None:
    """An event published inside a savepoint is written there: rolled back, it is gone, while
    the batch's other events stand."""
    discover()
    shop = await make_merchant(db, "savepoint-shop.myshopify.com")
    order_id = await make_order(db, shop, "shopify")
    created, routed, placed, _ = order_flow(order_id)
    async with db.transaction() as session, events.deferred_publications(session):
        await events.publish(
            session, None, created[0], key=created[1], merchant_id=shop.id, order_id=order_id
        )
        try:
            async with session.begin_nested():
                await events.publish(
                    session,
                    None,
                    routed[0],
                    key=routed[1],
                    merchant_id=shop.id,
                    order_id=order_id,
                )
                raise RuntimeError("undone")
        except RuntimeError:
            pass
        await events.publish_many(
            session, [events.Publication(shop.id, order_id, placed[0], placed[1], {})]
        )
    async with db.sessionmaker() as session:
        keys = (await session.scalars(select(LifecycleEvent.key))).all()
    assert sorted(keys) == sorted([created[1], placed[1]])


async def test_deferred_publications_of_failed_work_are_never_written(db: Database) -> None:
    discover()
    shop = await make_merchant(db, "failed-shop.myshopify.com")
    order_id = await make_order(db, shop, "shopify")
    created = order_flow(order_id)[0]
    try:
        async with db.transaction() as session, events.deferred_publications(session):
            await events.publish(
                session,
                None,
                created[0],
                key=created[1],
                merchant_id=shop.id,
                order_id=order_id,
            )
            raise RuntimeError("the work failed")
    except RuntimeError:
        pass
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(LifecycleEvent)) == 0
