"""``orders/updated``, ``orders/cancelled`` and a second ``orders/create``: newer data is applied
and validated again before routing; older replays never overwrite; cancellation is final."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from app.db import Database
from app.jobs.task import TaskContext
from app.orders.models import Order
from app.orders.tasks import validate_order
from app.security import SecretBox
from app.settings import Settings
from app.timeline.models import OrderEvent
from app.webhooks.tasks import process_delivery
from tests.conftest import MerchantHandle
from tests.support.order_flow import (
    Client,
    accepted,
    add_catalog,
    all_processed,
    detail,
    events,
    open_exceptions,
    order_id_of,
    outcomes,
    store_delivery,
    types,
    wait_status,
)
from tests.support.shopify import order_payload
from tests.support.wait import eventually

CREATE, UPDATED, CANCELLED = "orders/create", "orders/updated", "orders/cancelled"
VALIDATION = ["validation.payment", "validation.address", "validation.catalog"]


def at(minutes: int, **overrides: Any) -> dict[str, Any]:
    """The fixture order as Shopify sends it ``minutes`` after it was created."""
    return order_payload(updated_at=f"2008-01-10T11:{minutes:02d}:00-05:00", **overrides)


def with_address(payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    payload["shipping_address"].update(fields)
    return payload


async def count_orders(db: Database) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Order)) or 0)


async def resolved_exceptions(client: Client, merchant: MerchantHandle) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/exceptions?include_resolved=true", headers=merchant.headers)
    assert r.status_code == 200, r.text
    return [c for c in r.json()["items"] if c["resolved_at"] is not None]


class TestOrdersUpdated:
    async def test_fixed_address_is_applied_and_validated_again(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, with_address(at(0), zip=None))
        await wait_status(client, merchant, "needs_attention", db=db)

        await accepted(client, UPDATED, with_address(at(5), zip="40203"))
        order = await wait_status(client, merchant, "ready_to_route", db=db)
        assert order["shipping_address"]["zip"] == "40203"
        assert order["status_reason"] is None
        assert types(order) == [
            "order.received",
            *VALIDATION,
            "status.needs_attention",
            "order.updated",
            "status.received",
            *VALIDATION,
            "status.ready_to_route",
        ]
        assert events(order)[5:7] == [
            ("order.updated", "updated: shipping_address"),
            ("status.received", "needs_attention -> received: changed; validating again"),
        ]
        assert order["timeline"][5]["data"] == {"fields": ["shipping_address"]}
        # The problem is gone, so is its entry in the exceptions queue.
        assert await open_exceptions(client, merchant) == []
        [closed] = await resolved_exceptions(client, merchant)
        assert closed["reason"] == "shipping address has no zip"

    async def test_payment_turning_paid_releases_a_held_order(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, at(0, financial_status="pending"))
        await wait_status(client, merchant, "on_hold", db=db)

        await accepted(client, UPDATED, at(5, financial_status="paid"))
        order = await wait_status(client, merchant, "ready_to_route", db=db)
        assert order["financial_status"] == "paid"
        assert ("order.updated", "updated: financial_status") in events(order)
        assert ("validation.payment", "payment ok (paid)") in events(order)
        assert events(order)[-1] == ("status.ready_to_route", "received -> ready_to_route")

    async def test_changed_lines_are_replaced_and_validated_again(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, at(0))
        await wait_status(client, merchant, "ready_to_route", db=db)

        changed = at(5)
        changed["line_items"][0]["quantity"] = 2
        changed["line_items"][2]["sku"] = "IPOD2008PINK"
        await accepted(client, UPDATED, changed)
        order = await wait_status(client, merchant, "needs_attention", db=db)
        assert [(ln["sku"], ln["quantity"]) for ln in order["lines"]] == [
            ("IPOD2008GREEN", 2),
            ("IPOD2008RED", 1),
            ("IPOD2008PINK", 1),
        ]
        assert ("order.updated", "updated: lines") in events(order)
        assert order["status_reason"] == "SKU IPOD2008PINK is not in any active supplier's catalog"

    async def test_older_replay_after_a_newer_update_changes_nothing(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, at(0))
        await wait_status(client, merchant, "ready_to_route", db=db)

        await accepted(client, UPDATED, with_address(at(10), address1="1 Newer Street"))
        await all_processed(db, 2)
        await wait_status(client, merchant, "ready_to_route", db=db)
        # A retry of an update made before that one (and of the create itself).
        await accepted(client, UPDATED, with_address(at(5), address1="1 Older Street"))
        await accepted(client, UPDATED, with_address(at(10), address1="1 Same-Time Street"))
        await accepted(client, CREATE, at(0))
        await all_processed(db, 5)

        order = await detail(client, merchant, await order_id_of(db))
        assert order["shipping_address"]["address1"] == "1 Newer Street"
        assert order["status"] == "ready_to_route"
        assert types(order).count("order.updated") == 1
        order_id = order["id"]
        assert (await outcomes(db))[2:] == [
            f"order {order_id}: stale",
            f"order {order_id}: stale",
            f"order {order_id} exists: unchanged",
        ]

    async def test_update_for_an_unknown_order_creates_it(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, UPDATED, at(5))
        order = await wait_status(client, merchant, "ready_to_route", db=db)
        assert types(order) == ["order.received", *VALIDATION, "status.ready_to_route"]
        assert await outcomes(db) == [f"order {order['id']} created from update"]
        # The create that was never seen arrives late: older, so nothing changes.
        await accepted(client, CREATE, at(0))
        await all_processed(db, 2)
        assert await count_orders(db) == 1
        assert types(await detail(client, merchant, order["id"])) == types(order)

    async def test_update_without_changes_records_nothing(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, at(0))
        before = await wait_status(client, merchant, "ready_to_route", db=db)
        # Shopify sends orders/updated for changes we do not track (tags, notes of staff...).
        await accepted(client, UPDATED, at(5, tags="vip", note_attributes=[]))
        await all_processed(db, 2)
        after = await detail(client, merchant, before["id"])
        assert after["timeline"] == before["timeline"]
        assert after["status"] == "ready_to_route"
        assert (await outcomes(db))[1] == f"order {before['id']}: unchanged"

    async def test_update_carrying_a_cancellation_cancels(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, at(0))
        await wait_status(client, merchant, "ready_to_route", db=db)
        await accepted(client, UPDATED, at(5, cancelled_at="2008-01-10T11:05:00-05:00"))
        order = await wait_status(client, merchant, "cancelled", db=db)
        # The customer's cancellation email writes its own entries when its job runs,
        # which may be before this read.
        own = [e for e in events(order) if not e[0].startswith("email.")]
        assert own[-1] == (
            "status.cancelled",
            "ready_to_route -> cancelled: cancelled in Shopify",
        )


class TestOrdersCancelled:
    async def test_cancels_an_order_not_yet_routed(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, at(0))
        await wait_status(client, merchant, "ready_to_route", db=db)

        await accepted(
            client,
            CANCELLED,
            at(5, cancelled_at="2008-01-10T11:05:00-05:00", cancel_reason="customer"),
        )
        order = await wait_status(client, merchant, "cancelled", db=db)
        assert order["cancelled_at"] is not None
        assert order["status_reason"] == "cancelled in Shopify"
        # The customer's cancellation email writes its own entries, as its job runs.
        own = [e for e in order["timeline"] if not e["type"].startswith("email.")]
        assert (own[-1]["type"], own[-1]["message"]) == (
            "status.cancelled",
            "ready_to_route -> cancelled: cancelled in Shopify",
        )
        assert own[-1]["data"] == {"previous": "ready_to_route", "origin": "shopify"}

    async def test_cancelling_twice_is_harmless(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, at(0))
        await wait_status(client, merchant, "ready_to_route", db=db)
        cancelled = at(5, cancelled_at="2008-01-10T11:05:00-05:00")
        await accepted(client, CANCELLED, cancelled)
        first = await wait_status(client, merchant, "cancelled", db=db)
        await accepted(client, CANCELLED, cancelled)
        await accepted(client, UPDATED, cancelled)
        await all_processed(db, 4)
        again = await detail(client, merchant, first["id"])

        def own(order: dict[str, Any]) -> list[dict[str, Any]]:
            return [e for e in order["timeline"] if not e["type"].startswith("email.")]

        assert own(again) == own(first)
        assert again["cancelled_at"] == first["cancelled_at"]
        assert types(again).count("status.cancelled") == 1
        assert (await outcomes(db))[2:] == [
            f"order {first['id']}: already_cancelled",
            f"order {first['id']}: stale",
        ]

    async def test_cancelling_resolves_what_waited_for_a_person(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, with_address(at(0), zip=None))
        await wait_status(client, merchant, "needs_attention", db=db)
        assert len(await open_exceptions(client, merchant)) == 1
        await accepted(client, CANCELLED, at(5, cancelled_at="2008-01-10T11:05:00-05:00"))
        await wait_status(client, merchant, "cancelled", db=db)
        assert await open_exceptions(client, merchant) == []

    async def test_cancelled_for_an_unknown_order_records_it_cancelled(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CANCELLED, at(5, cancelled_at="2008-01-10T11:05:00-05:00"))
        order = await wait_status(client, merchant, "cancelled", db=db)
        assert order["cancelled_at"] == "2008-01-10T16:05:00Z"
        assert events(order) == [
            ("order.received", "order #1001 received from shopify"),
            ("status.cancelled", "received -> cancelled: order arrived already cancelled"),
        ]

        # The create, delivered late (or retried), must not bring it back to life.
        await accepted(client, CREATE, at(0))
        # Nor an update made after the cancellation (Shopify cannot un-cancel).
        await accepted(
            client, UPDATED, with_address(at(9, cancelled_at="2008-01-10T11:05:00-05:00"), zip="1")
        )
        await all_processed(db, 3)
        again = await detail(client, merchant, order["id"])
        assert again["status"] == "cancelled"
        assert again["timeline"] == order["timeline"]
        assert again["shipping_address"] == order["shipping_address"]
        assert await count_orders(db) == 1
        assert await open_exceptions(client, merchant) == []


class TestSecondCreate:
    async def test_second_create_changes_nothing(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        await accepted(client, CREATE, at(0))
        first = await wait_status(client, merchant, "ready_to_route", db=db)
        # Another subscription's copy, even one claiming to be newer and different.
        await accepted(client, CREATE, at(0))
        await accepted(client, CREATE, with_address(at(30, financial_status="voided"), zip="99999"))
        await all_processed(db, 3)
        again = await detail(client, merchant, first["id"])

        def own(order: dict[str, Any]) -> list[dict[str, Any]]:
            return [e for e in order["timeline"] if not e["type"].startswith("email.")]

        assert own(again) == own(first)
        assert again["shipping_address"] == first["shipping_address"]
        assert again["financial_status"] == "authorized"
        assert await count_orders(db) == 1

    async def test_update_racing_the_create_is_not_lost(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant)
        # Shopify may deliver the update first; either way the newer address wins.
        await accepted(client, UPDATED, with_address(at(5), address1="1 Newer Street"))
        await accepted(client, CREATE, at(0))
        await all_processed(db, 2)

        async def probe() -> dict[str, Any] | None:
            order = await detail(client, merchant, await order_id_of(db))
            return order if order["status"] == "ready_to_route" else None

        order = await eventually(probe)
        assert order["shipping_address"]["address1"] == "1 Newer Street"
        assert await count_orders(db) == 1


@pytest.fixture
def ctx(settings: Settings, db: Database) -> TaskContext:
    return TaskContext(settings=settings, db=db, box=SecretBox("x"))


class TestUpdateRacingValidation:
    async def test_update_waits_for_a_running_validation_and_sends_the_order_back(
        self, ctx: TaskContext, db: Database, merchant: MerchantHandle
    ) -> None:
        """Validation (which locks the order) decides ``needs_attention`` while the fix for the
        address is being applied: the fix must not be applied to the stale ``received`` view and
        leave the order stuck in ``needs_attention`` with a good address."""
        await add_catalog(db, merchant)
        # Made by an orders/updated (the create never seen): it waits for its order.validate
        # job (an orders/create is validated in its own webhook.process job).
        await process_delivery(
            ctx, await store_delivery(db, merchant, with_address(at(0), zip=None), UPDATED)
        )
        fix = await store_delivery(db, merchant, with_address(at(5), zip="40202"), UPDATED)

        async with db.sessionmaker() as session, session.begin():
            # What validate_order does: lock the order, decide, commit.
            order = await session.scalar(select(Order).with_for_update())
            assert order is not None
            assert order.status == "received"
            update = asyncio.create_task(process_delivery(ctx, fix))
            await asyncio.sleep(0.5)
            assert not update.done()
            order.status = "needs_attention"
            order.status_reason = "shipping address has no zip"
        await update

        async with db.sessionmaker() as session:
            order = await session.scalar(select(Order))
            assert order is not None
            assert (order.status, order.shipping_address["zip"]) == ("received", "40202")
            kinds = (
                await session.scalars(select(OrderEvent.type).order_by(OrderEvent.created_at))
            ).all()
        assert kinds[-2:] == ["order.updated", "status.received"]
        await validate_order(ctx, str(order.id))
        async with db.sessionmaker() as session:
            assert await session.scalar(select(Order.status)) == "ready_to_route"
