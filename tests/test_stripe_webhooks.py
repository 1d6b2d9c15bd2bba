"""``POST /webhooks/stripe``: ``Stripe-Signature`` verified by the ``stripe`` library (current
and previous secret, several ``v1``, 5 minutes), each event stored once in the webhook inbox and
applied in the same transaction; forged, stale and replayed events change nothing; unknown
refunds and accounts are recorded and ignored; a refund's state only moves forward."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update

from app.db import Database, utcnow
from app.events.models import LifecycleEvent
from app.exceptions.models import ExceptionCase
from app.jobs.task import StaleWindow, TaskContext
from app.refunds import service
from app.refunds.models import Refund
from app.refunds.tasks import refresh
from app.security import SecretBox
from app.settings import Settings
from app.webhooks.models import WebhookDelivery
from dropship.asgi import create_app
from dropship.simulators import StripeSim, stripe_signature
from tests.conftest import MerchantHandle
from tests.support import stripe as st
from tests.support.orders import Client

URL = "/webhooks/stripe"


@pytest.fixture
def sim() -> Iterator[StripeSim]:
    yield from st.serve()


@pytest.fixture
def app(settings: Settings, sim: StripeSim) -> Litestar:
    return create_app(st.stripe_settings(settings), run_workers=True, configure_logs=False)


@pytest.fixture
async def account(client: Client, merchant: MerchantHandle, sim: StripeSim) -> str:
    return await st.connect(client, merchant, sim)


async def pending_refund(
    client: Client, merchant: MerchantHandle, sim: StripeSim, account: str
) -> dict[str, Any]:
    """A refund Stripe answered ``pending`` (its outcome comes by webhook)."""
    order = await st.paid_order(client, merchant, sim, account)
    sim.next_statuses = ["pending"]
    made = await st.refund(client, merchant, order["id"], amount="4.00")
    return await st.settled(client, merchant, made["id"], "pending")


def refund_object(stripe_refund_id: str, status: str, **extra: Any) -> dict[str, Any]:
    """Stripe's example refund (openapi_fixtures3.json) with our values."""
    obj = copy.deepcopy(st.fixtures()["refund"])
    obj.update(id=stripe_refund_id, status=status, amount=400, **extra)
    return obj


async def post(client: Client, event: dict[str, Any], *secrets: str, **kw: Any) -> Any:
    body, headers = st.signed(event, *secrets, **kw)
    return await client.post(URL, content=body, headers=headers)


async def deliveries(db: Database) -> list[tuple[str, str, str | None]]:
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(WebhookDelivery.webhook_id, WebhookDelivery.topic, WebhookDelivery.outcome)
            .where(WebhookDelivery.source == "stripe")
            .order_by(WebhookDelivery.received_at)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def count(db: Database, model: Any, *where: Any) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


class TestVerification:
    async def test_forged_stale_or_unsigned_is_a_400_and_stores_nothing(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
    ) -> None:
        refund = await pending_refund(client, merchant, sim, account)
        event = sim.event("refund.updated", refund_object(refund["stripe_refund_id"], "succeeded"))
        forged = await post(client, event, "whsec_not_ours_at_all")
        stale = await post(client, event, st.WEBHOOK_SECRET, timestamp=int(time.time()) - 301)
        body, headers = st.signed(event)
        unsigned = await client.post(
            URL, content=body, headers={"Content-Type": "application/json"}
        )
        tampered = await client.post(URL, content=body.replace(b"400", b"900"), headers=headers)
        for r in (forged, stale, unsigned, tampered):
            assert r.status_code == 400, r.text
            assert r.json()["extra"] == {"field": "Stripe-Signature"}
        assert forged.json()["detail"] == (
            "Stripe-Signature: does not match the body, or is too old"
        )
        assert unsigned.json()["detail"] == "Stripe-Signature: missing"
        assert await deliveries(db) == []
        again = await client.get(f"/api/v1/refunds/{refund['id']}", headers=merchant.headers)
        assert again.json()["status"] == "pending"

    async def test_the_previous_secret_and_several_signatures_pass_during_a_rotation(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
    ) -> None:
        refund = await pending_refund(client, merchant, sim, account)
        obj = refund_object(refund["stripe_refund_id"], "pending")
        old = await post(client, sim.event("refund.updated", obj), st.OLD_WEBHOOK_SECRET)
        both = await post(
            client, sim.event("refund.updated", obj), "whsec_retired_long_ago", st.WEBHOOK_SECRET
        )
        assert [old.json(), both.json()] == [{"status": "processed"}, {"status": "processed"}]
        assert len(await deliveries(db)) == 2

    async def test_unconfigured_is_a_503(self, settings: Settings) -> None:
        api = create_app(settings, configure_logs=False)  # no DROPSHIP_STRIPE_WEBHOOK_SECRET
        async with AsyncTestClient(api) as client:
            r = await client.post(URL, content=b"{}", headers={"Stripe-Signature": "t=1,v1=x"})
        assert r.status_code == 503
        assert "DROPSHIP_STRIPE_WEBHOOK_SECRET" in r.json()["detail"]


class TestApplying:
    async def test_a_success_moves_the_refund_once_and_a_replay_changes_nothing(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
    ) -> None:
        refund = await pending_refund(client, merchant, sim, account)
        event = sim.event("refund.updated", refund_object(refund["stripe_refund_id"], "succeeded"))
        first = await post(client, event)
        assert (first.status_code, first.json()) == (200, {"status": "processed"})
        done = await client.get(f"/api/v1/refunds/{refund['id']}", headers=merchant.headers)
        assert done.json()["status"] == "succeeded"
        replay = await post(client, event)
        assert (replay.status_code, replay.json()) == (200, {"status": "duplicate"})
        assert await deliveries(db) == [
            (event["id"], "refund.updated", f"refund {refund['id']} succeeded")
        ]
        assert await count(db, LifecycleEvent, LifecycleEvent.type == "refund.succeeded") == 1

    async def test_never_back_from_a_terminal_state(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
    ) -> None:
        refund = await pending_refund(client, merchant, sim, account)
        rid = refund["stripe_refund_id"]
        await post(client, sim.event("refund.updated", refund_object(rid, "succeeded")))
        late = await post(client, sim.event("refund.updated", refund_object(rid, "pending")))
        canceled = await post(client, sim.event("refund.updated", refund_object(rid, "canceled")))
        assert [late.json(), canceled.json()] == [{"status": "processed"}] * 2
        r = await client.get(f"/api/v1/refunds/{refund['id']}", headers=merchant.headers)
        assert r.json()["status"] == "succeeded"
        assert [o for _, _, o in await deliveries(db)][1:] == [
            f"refund {refund['id']} stays succeeded"
        ] * 2
        assert await count(db, ExceptionCase, ExceptionCase.kind == "refund_failed") == 0

    async def test_a_succeeded_refund_stripe_then_fails_is_failed_once(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
    ) -> None:
        """Stripe documents it: a refund can fail after it succeeded (the bank sent it back)."""
        order = await st.paid_order(client, merchant, sim, account)
        made = await st.refund(client, merchant, order["id"], amount="33.59")
        done = await st.settled(client, merchant, made["id"])
        rid = done["stripe_refund_id"]
        sim.set_refund_status(rid, "failed", "lost_or_stolen_card")
        obj = refund_object(rid, "failed", failure_reason="lost_or_stolen_card")
        first = await post(client, sim.event("refund.failed", obj))
        again = await post(client, sim.event("refund.updated", obj))  # Stripe sends both
        back = await post(client, sim.event("refund.updated", refund_object(rid, "succeeded")))
        assert [x.json() for x in (first, again, back)] == [{"status": "processed"}] * 3
        assert [o for _, _, o in await deliveries(db)] == [
            f"refund {made['id']} failed",
            f"refund {made['id']} stays failed",
            f"refund {made['id']} stays failed",
        ]
        got = await client.get(f"/api/v1/refunds/{made['id']}", headers=merchant.headers)
        assert (got.json()["status"], got.json()["failure_reason"]) == (
            "failed",
            "lost_or_stolen_card",
        )
        async with db.sessionmaker() as session:
            [case] = (
                await session.scalars(
                    select(ExceptionCase).where(ExceptionCase.kind == "refund_failed")
                )
            ).all()
            events = (
                await session.scalars(
                    select(LifecycleEvent)
                    .where(LifecycleEvent.type.in_(("refund.succeeded", "refund.failed")))
                    .order_by(LifecycleEvent.created_at)
                )
            ).all()
        assert case.data == {"refund_id": made["id"], "failure_reason": "lost_or_stolen_card"}
        assert [
            (e.type, e.data["failure_reason"] if e.type == "refund.failed" else None)
            for e in events
        ] == [
            ("refund.succeeded", None),
            ("refund.failed", "lost_or_stolen_card"),
        ]
        r = await client.get(f"/api/v1/orders/{order['id']}", headers=merchant.headers)
        assert [e["type"] for e in r.json()["timeline"] if e["type"].startswith("refund.")][
            -2:
        ] == ["refund.succeeded", "refund.failed"]
        # No longer counted: the whole amount can be refunded again.
        again_made = await st.refund(client, merchant, order["id"], amount="33.59")
        await st.settled(client, merchant, again_made["id"])

    async def test_refund_failed_opens_an_exception_with_stripes_reason(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
    ) -> None:
        refund = await pending_refund(client, merchant, sim, account)
        obj = refund_object(
            refund["stripe_refund_id"], "failed", failure_reason="expired_or_canceled_card"
        )
        r = await post(client, sim.event("refund.failed", obj))
        assert r.json() == {"status": "processed"}
        got = await client.get(f"/api/v1/refunds/{refund['id']}", headers=merchant.headers)
        assert (got.json()["status"], got.json()["failure_reason"]) == (
            "failed",
            "expired_or_canceled_card",
        )
        async with db.sessionmaker() as session:
            [case] = (
                await session.scalars(
                    select(ExceptionCase).where(ExceptionCase.kind == "refund_failed")
                )
            ).all()
            [event] = (
                await session.scalars(
                    select(LifecycleEvent).where(LifecycleEvent.type == "refund.failed")
                )
            ).all()
        assert case.kind == "refund_failed"
        assert case.data["failure_reason"] == "expired_or_canceled_card"
        assert event.data["failure_reason"] == "expired_or_canceled_card"
        assert event.key == f"refund.failed:{refund['id']}"

    async def test_charge_refunded_applies_every_listed_refund(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
    ) -> None:
        refund = await pending_refund(client, merchant, sim, account)
        charge = copy.deepcopy(st.fixtures()["charge"])
        charge.update(
            amount_refunded=400,
            refunded=False,
            refunds={
                "object": "list",
                "data": [refund_object(refund["stripe_refund_id"], "succeeded")],
                "has_more": False,
                "url": "/v1/charges/ch_x/refunds",
            },
        )
        r = await post(client, sim.event("charge.refunded", charge))
        assert r.json() == {"status": "processed"}
        got = await client.get(f"/api/v1/refunds/{refund['id']}", headers=merchant.headers)
        assert got.json()["status"] == "succeeded"

    async def test_charge_refunded_without_its_refunds_asks_stripe(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
    ) -> None:
        refund = await pending_refund(client, merchant, sim, account)
        sim.set_refund_status(refund["stripe_refund_id"], "succeeded")
        charge = copy.deepcopy(st.fixtures()["charge"])
        charge.pop("refunds", None)  # not expanded: Stripe's default since 2022-11-15
        charge.update(payment_intent=sim.refunds[refund["stripe_refund_id"]]["payment_intent"])
        r = await post(client, sim.event("charge.refunded", charge))
        assert r.json() == {"status": "processed"}
        await st.settled(client, merchant, refund["id"])
        assert [o for _, _, o in await deliveries(db)] == [
            "asking Stripe about 1 pending refund(s)"
        ]
        assert [(q.method, q.path) for q in sim.requests][-1] == (
            "GET",
            f"/v1/refunds/{refund['stripe_refund_id']}",
        )

    async def test_a_pending_refund_no_webhook_moved_is_asked_about_by_the_sweeper(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
        settings: Settings,
    ) -> None:
        refund = await pending_refund(client, merchant, sim, account)
        sim.set_refund_status(
            refund["stripe_refund_id"], "failed", "charge_for_pending_refund_disputed"
        )
        window = StaleWindow(now=utcnow(), cutoff=utcnow() + timedelta(seconds=1), limit=10)
        async with db.sessionmaker() as session:
            assert await service.unsettled(session, window) == [uuid.UUID(refund["id"])]
        ctx = TaskContext(
            settings=st.stripe_settings(settings),
            db=db,
            box=SecretBox(settings.resolved_secret_key()),
        )
        await refresh(ctx, refund["id"])
        got = await client.get(f"/api/v1/refunds/{refund['id']}", headers=merchant.headers)
        assert (got.json()["status"], got.json()["failure_reason"]) == (
            "failed",
            "charge_for_pending_refund_disputed",
        )
        async with db.sessionmaker() as session:
            assert await service.unsettled(session, window) == []

    async def test_metadata_finds_a_refund_whose_answer_was_lost(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        sim.fail_next("timeout_before")  # the job's first try never reaches Stripe
        sim.fail_next("timeout_before")
        made = await st.refund(client, merchant, order["id"], amount="4.00")
        obj = refund_object(
            "re_3MadeElsewhere0000000000",
            "succeeded",
            metadata={"dropship_refund_id": made["id"], "dropship_order_id": order["id"]},
        )
        r = await post(client, sim.event("refund.created", obj))
        assert r.json() == {"status": "processed"}
        got = await st.settled(client, merchant, made["id"])
        assert got["stripe_refund_id"] == "re_3MadeElsewhere0000000000"

    async def test_a_refund_failed_here_before_stripe_answered_moves_on(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
    ) -> None:
        """We were wrong (an older run marked it failed): Stripe's event wins."""
        order = await st.paid_order(client, merchant, sim, account)
        sim.next_statuses = ["pending"]
        made = await st.refund(client, merchant, order["id"], amount="4.00")
        pending = await st.settled(client, merchant, made["id"], "pending")
        async with db.transaction() as session:
            await session.execute(
                update(Refund).values(status="failed", stripe_refund_id=None, failure_reason="x")
            )
        obj = refund_object(
            pending["stripe_refund_id"],
            "succeeded",
            metadata={"dropship_refund_id": made["id"], "dropship_order_id": order["id"]},
        )
        r = await post(client, sim.event("refund.updated", obj))
        assert r.json() == {"status": "processed"}
        got = await client.get(f"/api/v1/refunds/{made['id']}", headers=merchant.headers)
        assert (got.json()["status"], got.json()["stripe_refund_id"]) == (
            "succeeded",
            pending["stripe_refund_id"],
        )
        # Once Stripe's id is known, failed is final again (no going back from Stripe's word).
        async with db.transaction() as session:
            await session.execute(update(Refund).values(status="failed"))
        again = refund_object(pending["stripe_refund_id"], "succeeded")
        await post(client, sim.event("refund.updated", again))
        got = await client.get(f"/api/v1/refunds/{made['id']}", headers=merchant.headers)
        assert got.json()["status"] == "failed"


class TestIgnored:
    async def test_unknown_refunds_accounts_and_types_are_recorded_and_ignored(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
    ) -> None:
        refund = await pending_refund(client, merchant, sim, account)
        unknown = sim.event("refund.updated", refund_object("re_NotOurs000000000000", "succeeded"))
        elsewhere = sim.event(
            "refund.updated",
            refund_object(refund["stripe_refund_id"], "succeeded"),
            account="acct_1SomeoneElse0000",
        )
        plan = sim.event("plan.created", st.fixtures()["event"]["data"]["object"])
        bogus = sim.event(
            "refund.created",
            refund_object("re_x", "succeeded", metadata={"dropship_refund_id": str(uuid.uuid4())}),
        )
        for event in (unknown, elsewhere, plan, bogus):
            r = await post(client, event)
            assert (r.status_code, r.json()) == (200, {"status": "ignored"}), r.text
        assert [o for _, _, o in await deliveries(db)] == [
            "ignored: unknown refund re_NotOurs000000000000",
            f"ignored: {refund['stripe_refund_id']} came for account acct_1SomeoneElse0000, "
            "not the merchant's",
            "ignored: plan.created is not handled",
            "ignored: unknown refund re_x",
        ]
        got = await client.get(f"/api/v1/refunds/{refund['id']}", headers=merchant.headers)
        assert got.json()["status"] == "pending"

    async def test_a_body_that_is_no_event_is_a_400(self, client: Client, db: Database) -> None:
        for body in (b"[1]", b'{"type": "refund.updated"}', b"not json"):
            signature = stripe_signature(body, st.WEBHOOK_SECRET)
            r = await client.post(URL, content=body, headers={"Stripe-Signature": signature})
            assert (r.status_code, r.json()["extra"]) == (400, {"field": "body"}), r.text
        r = await client.post(URL, content=b"\xff\xfe", headers={"Stripe-Signature": "t=1,v1=x"})
        assert r.json()["detail"] == "body: not valid UTF-8"
        assert await deliveries(db) == []
