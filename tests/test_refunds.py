"""Refunds end to end: the merchant API, the ``refunds.issue`` job through the app's workers,
the real ``stripe`` library against the Stripe simulator (``dropship.simulators.StripeSim``)
behind respx at ``DROPSHIP_STRIPE_API_BASE``.

Never more than captured (partial then full, concurrent requests), the same Idempotency-Key
after a timeout (one Stripe refund), JPY in whole units, Stripe's refusals and failures in the
exceptions queue, tenant isolation, and the policy refunds after a cancellation or a return."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dramatiq
import prometheus_client
import pytest
from litestar import Litestar
from sqlalchemy import select, update

from app.db import Database, utcnow
from app.events.models import LifecycleEvent
from app.events.service import publish
from app.exceptions.models import ExceptionCase
from app.jobs.task import StaleWindow, TaskContext
from app.orders.models import Order
from app.refunds import service
from app.refunds.models import Refund
from app.refunds.tasks import issue, refund_cancellation, refund_return
from app.security import SecretBox
from app.settings import Settings
from dropship.asgi import create_app
from dropship.simulators import StripeSim
from tests.conftest import MerchantHandle, make_merchant
from tests.support import stripe as st
from tests.support.broker import losing_jobs
from tests.support.order_flow import accepted, order_id_of
from tests.support.orders import Client
from tests.support.shopify import order_payload
from tests.support.wait import eventually


@pytest.fixture
def sim() -> Iterator[StripeSim]:
    yield from st.serve()


@pytest.fixture
def stripe_settings(settings: Settings) -> Settings:
    return st.stripe_settings(settings)


@pytest.fixture
def app(stripe_settings: Settings, sim: StripeSim) -> Litestar:
    return create_app(stripe_settings, run_workers=True, configure_logs=False)


@pytest.fixture
async def account(client: Client, merchant: MerchantHandle, sim: StripeSim) -> str:
    return await st.connect(client, merchant, sim)


def ctx_of(settings: Settings, db: Database) -> TaskContext:
    return TaskContext(settings=settings, db=db, box=SecretBox(settings.resolved_secret_key()))


async def published(db: Database, type_: str) -> list[dict[str, Any]]:
    async with db.sessionmaker() as session:
        rows = await session.scalars(
            select(LifecycleEvent)
            .where(LifecycleEvent.type == type_)
            .order_by(LifecycleEvent.created_at)
        )
        return [dict(e.data) for e in rows]


async def timeline(client: Client, merchant: MerchantHandle, order_id: str) -> list[str]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=merchant.headers)
    return [e["type"] for e in r.json()["timeline"] if e["type"].startswith("refund.")]


async def cases(db: Database, kind: str) -> list[ExceptionCase]:
    async with db.sessionmaker() as session:
        return list(await session.scalars(select(ExceptionCase).where(ExceptionCase.kind == kind)))


async def _any(items: list[Any]) -> bool:
    return bool(items)


class TestNeverMoreThanCaptured:
    async def test_a_partial_then_a_full_refund_then_nothing_is_left(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        assert order["total_price"] == "33.59"
        first = await st.refund(client, merchant, order["id"], amount="10.00", reason="damaged")
        assert (first["status"], first["amount"], first["amount_minor"], first["origin"]) == (
            "requested",
            "10.00",
            1000,
            "merchant",
        )
        done = await st.settled(client, merchant, first["id"])
        second = await st.refund(client, merchant, order["id"], amount="23.59")
        await st.settled(client, merchant, second["id"])

        r = await client.post(
            f"/api/v1/orders/{order['id']}/refunds",
            json={"amount": "0.01"},
            headers=merchant.headers,
        )
        assert r.status_code == 409
        assert r.json()["extra"] == {"field": "amount", "remaining": "0.00"}
        assert "0.01 USD is more than what is left to refund: 0.00 of 33.59" in r.json()["detail"]

        posts = sim.refund_requests()
        assert [dict(p.form)["amount"] for p in posts] == ["1000", "2359"]
        assert [p.idempotency_key for p in posts] == [
            f"dropship-refund-{first['id']}",
            f"dropship-refund-{second['id']}",
        ]
        assert dict(posts[0].form) == {
            "payment_intent": order["stripe_payment_reference"],
            "amount": "1000",
            "metadata[dropship_refund_id]": first["id"],
            "metadata[dropship_order_id]": order["id"],
        }
        assert {p.headers["stripe-version"] for p in posts} == {"2026-10-28.endive"}
        assert sim.payments[order["stripe_payment_reference"]].refunded() == 3359
        assert done["stripe_refund_id"] in sim.refunds
        assert done["stripe_refund_id"].startswith("re_")

        r = await client.get(
            f"/api/v1/refunds?order_id={order['id']}&status=succeeded", headers=merchant.headers
        )
        assert [x["id"] for x in r.json()["items"]] == [second["id"], first["id"]]
        assert [e["amount"] for e in await published(db, "refund.succeeded")] == ["10.00", "23.59"]
        assert (await published(db, "refund.succeeded"))[0] == {
            "order_id": order["id"],
            "refund_id": first["id"],
            "amount": "10.00",
            "currency": "USD",
            "reason": "damaged",
            "origin": "merchant",
            "lines": [],
            "shipping": False,
        }
        assert await timeline(client, merchant, order["id"]) == [
            "refund.requested",
            "refund.succeeded",
            "refund.requested",
            "refund.succeeded",
        ]
        detail = await client.get(f"/api/v1/orders/{order['id']}", headers=merchant.headers)
        assert [
            (r["id"], r["amount"], r["status"], r["origin"]) for r in detail.json()["refunds"]
        ] == [
            (first["id"], "10.00", "succeeded", "merchant"),
            (second["id"], "23.59", "succeeded", "merchant"),
        ]

    async def test_lines_and_shipping_at_their_share_each_once(
        self, client: Client, merchant: MerchantHandle, account: str, sim: StripeSim
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        red, blue = (ln["id"] for ln in order["lines"])
        one_red = await st.refund(
            client, merchant, order["id"], lines=[{"line_id": red, "quantity": 1}]
        )
        # 10.50 of 25.99 of goods; goods paid 33.59 - 5.00 shipping = 28.59 (tax included).
        assert (one_red["amount"], one_red["amount_minor"]) == ("11.55", 1155)
        rest = await st.refund(
            client,
            merchant,
            order["id"],
            lines=[{"line_id": red, "quantity": 1}, {"line_id": blue, "quantity": 1}],
            shipping=True,
        )
        # (10.50 + 4.99) * 28.59 / 25.99 = 17.04, plus 5.00 shipping: the rest of 33.59.
        assert rest["amount"] == "22.04"
        assert rest["lines"] == [
            {"line_id": red, "quantity": 1},
            {"line_id": blue, "quantity": 1},
        ]
        for body, field in (
            ({"lines": [{"line_id": red, "quantity": 1}]}, "lines[0].quantity"),
            ({"shipping": True}, "shipping"),
        ):
            r = await client.post(
                f"/api/v1/orders/{order['id']}/refunds", json=body, headers=merchant.headers
            )
            assert (r.status_code, r.json()["extra"]["field"]) == (409, field), r.text
        await st.settled(client, merchant, rest["id"])
        assert sim.payments[order["stripe_payment_reference"]].refunded() == 3359

    async def test_a_line_refunded_unit_by_unit_sums_to_its_value(
        self, client: Client, merchant: MerchantHandle, account: str, sim: StripeSim
    ) -> None:
        order = await st.paid_order(
            client,
            merchant,
            sim,
            account,
            lines=[{"sku": "SKU-RED", "quantity": 3, "price": "1.00", "title": "Mug"}],
            shipping_price="0",
            tax="0.20",
        )
        assert order["total_price"] == "3.20"
        line = order["lines"][0]["id"]
        made = [
            await st.refund(client, merchant, order["id"], lines=[{"line_id": line, "quantity": 1}])
            for _ in range(3)
        ]
        # 3.20 / 3 a unit: worth 1.07, 2.13, 3.20 after each refund, each rounded once.
        assert [m["amount"] for m in made] == ["1.07", "1.06", "1.07"]
        for m in made:
            await st.settled(client, merchant, m["id"])
        assert sim.payments[order["stripe_payment_reference"]].refunded() == 320

    async def test_two_concurrent_full_refunds_make_one_stripe_refund(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        url = f"/api/v1/orders/{order['id']}/refunds"
        answers = await asyncio.gather(
            *(client.post(url, json={"amount": "33.59"}, headers=merchant.headers) for _ in "ab")
        )
        assert sorted(a.status_code for a in answers) == [201, 409]
        [made] = [a.json() for a in answers if a.status_code == 201]
        await st.settled(client, merchant, made["id"])
        assert [r.id for r in await st.refund_rows(db)] == [uuid.UUID(made["id"])]
        assert len(sim.refund_requests()) == 1
        assert len(sim.refunds) == 1

    async def test_a_refused_amount_and_bad_input_change_nothing(
        self, client: Client, merchant: MerchantHandle, account: str, sim: StripeSim, db: Database
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        url = f"/api/v1/orders/{order['id']}/refunds"
        for body, status, field in (
            ({"amount": "33.60"}, 409, "amount"),
            ({"amount": "0"}, 400, "amount"),
            ({"amount": "1.005"}, 400, "amount"),
            ({"amount": "-1"}, 400, "amount"),
            ({}, 400, "amount"),
            ({"amount": "1.00", "shipping": True}, 400, "amount"),
            ({"lines": [{"line_id": str(uuid.uuid4()), "quantity": 1}]}, 400, "lines[0].line_id"),
            (
                {"lines": [{"line_id": order["lines"][1]["id"], "quantity": 2}]},
                409,
                "lines[0].quantity",
            ),
            ({"lines": [{"line_id": "x", "quantity": 0}]}, 400, "lines[0].quantity"),
        ):
            r = await client.post(url, json=body, headers=merchant.headers)
            assert (r.status_code, r.json()["extra"].get("field")) == (status, field), (
                body,
                r.text,
            )
        assert await st.refund_rows(db) == []
        assert sim.refund_requests() == []


class TestExactlyOnceAtStripe:
    async def test_a_timeout_is_retried_with_the_same_key_and_makes_one_refund(
        self, client: Client, merchant: MerchantHandle, account: str, sim: StripeSim, db: Database
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        sim.fail_next("timeout")  # Stripe makes the refund; its answer never arrives
        made = await st.refund(client, merchant, order["id"], amount="12.30")
        done = await st.settled(client, merchant, made["id"])
        first, retry = sim.refund_requests()
        assert first.idempotency_key == retry.idempotency_key == f"dropship-refund-{made['id']}"
        assert first.form == retry.form
        assert len(sim.refunds) == 1
        assert done["stripe_refund_id"] == next(iter(sim.refunds))
        assert done["attempts"] == 2
        assert sim.payments[order["stripe_payment_reference"]].refunded() == 1230
        assert await timeline(client, merchant, order["id"]) == [
            "refund.requested",
            "refund.retry",
            "refund.succeeded",
        ]

    async def test_a_lost_job_is_redriven_by_the_sweeper_and_a_rerun_sends_nothing_more(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
        stripe_settings: Settings,
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        with losing_jobs(client.app.state.workers.broker, "refunds.issue") as lost:
            made = await st.refund(client, merchant, order["id"], amount="5.00")

            async def lost_one() -> bool:
                return bool(lost)

            await eventually(lost_one)
        assert sim.refund_requests() == []
        window = StaleWindow(now=utcnow(), cutoff=utcnow() + timedelta(seconds=1), limit=10)
        async with db.sessionmaker() as session:
            assert await service.unsent(session, window) == [uuid.UUID(made["id"])]
        ctx = ctx_of(stripe_settings, db)
        await issue(ctx, made["id"])
        await issue(ctx, made["id"])  # a duplicate delivery: answered already, nothing sent
        assert len(sim.refund_requests()) == 1
        [row] = await st.refund_rows(db)
        assert (row.status, row.attempts, row.next_attempt_at) == ("succeeded", 1, None)
        async with db.sessionmaker() as session:
            assert await service.unsent(session, window) == []

    async def test_a_crash_after_stripe_answered_replays_the_same_refund(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
        stripe_settings: Settings,
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        with losing_jobs(client.app.state.workers.broker, "refunds.issue") as lost:
            made = await st.refund(client, merchant, order["id"], amount="7.00")

            async def lost_one() -> bool:
                return bool(lost)

            await eventually(lost_one)
        ctx = ctx_of(stripe_settings, db)
        rid = uuid.UUID(made["id"])
        # The first run: claimed and sent, then the worker dies before recording the answer.
        async with db.transaction() as session:
            claim = await service.claim(session, stripe_settings, ctx.box, rid)
        assert claim is not None
        assert claim.credentials is not None
        from connectors.stripe_payments import StripePayments

        async with StripePayments(claim.credentials, stripe_settings.stripe_api_base) as s:
            await s.create_refund(
                refund_id=claim.refund_id,
                order_id=claim.order_id,
                reference=claim.reference,
                amount=claim.amount_minor,
            )
        # Its lease runs out; the sweeper's rerun sends the same key and gets the same refund.
        async with db.transaction() as session:
            await session.execute(update(Refund).values(next_attempt_at=utcnow()))
        await issue(ctx, made["id"])
        first, second = sim.refund_requests()
        assert first.idempotency_key == second.idempotency_key
        assert second.status == 200
        assert len(sim.refunds) == 1
        [row] = await st.refund_rows(db)
        assert (row.status, row.stripe_refund_id, row.attempts) == (
            "succeeded",
            next(iter(sim.refunds)),
            2,
        )

    async def test_a_refund_stripe_may_have_made_is_never_failed(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
        stripe_settings: Settings,
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        with losing_jobs(client.app.state.workers.broker, "refunds.issue") as lost:
            made = await st.refund(client, merchant, order["id"], amount="12.30")
            await eventually(lambda: _any(lost))
        ctx = ctx_of(stripe_settings, db)
        sim.fail_next("timeout")  # Stripe makes the refund; its answer never arrives
        with pytest.raises(dramatiq.Retry):
            await issue(ctx, made["id"])
        assert len(sim.refunds) == 1
        r = await client.delete("/api/v1/settings/stripe", headers=merchant.headers)
        assert r.status_code == 204
        async with db.transaction() as session:
            await session.execute(update(Refund).values(next_attempt_at=None))
        await issue(ctx, made["id"])  # the retry: no credentials any more

        [row] = await st.refund_rows(db)
        assert (row.status, row.attempts, row.given_up_at is not None) == ("requested", 2, True)
        assert row.failure_reason == "Stripe was disconnected before the refund was sent"
        assert await cases(db, "refund_failed") == []
        [case] = await cases(db, "refund_unsent")
        assert case.data == {"refund_id": made["id"]}
        assert await published(db, "refund.failed") == []
        assert await timeline(client, merchant, order["id"]) == [
            "refund.requested",
            "refund.retry",
            "refund.given_up",
        ]
        await issue(ctx, made["id"])  # given up: nothing more
        assert len(sim.refund_requests()) == 1
        # Still counted: the whole amount again is more than what is left.
        await st.connect(client, merchant, sim)
        r = await client.post(
            f"/api/v1/orders/{order['id']}/refunds",
            json={"amount": "33.59"},
            headers=merchant.headers,
        )
        assert (r.status_code, r.json()["extra"]) == (
            409,
            {"field": "amount", "remaining": "21.29"},
        ), r.text

    async def test_a_permanent_error_on_a_retry_gives_up_too(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
        stripe_settings: Settings,
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        with losing_jobs(client.app.state.workers.broker, "refunds.issue") as lost:
            made = await st.refund(client, merchant, order["id"], amount="5.00")
            await eventually(lambda: _any(lost))
        ctx = ctx_of(stripe_settings, db)
        sim.fail_next("timeout_before")
        with pytest.raises(dramatiq.Retry):
            await issue(ctx, made["id"])
        sim.keys.clear()  # the key was revoked meanwhile: a 401, permanent
        async with db.transaction() as session:
            await session.execute(update(Refund).values(next_attempt_at=None))
        before = {outcome: _refunds_counted(outcome) for outcome in ("refused", "given_up")}
        await issue(ctx, made["id"])
        counted = {outcome: _refunds_counted(outcome) - before[outcome] for outcome in before}
        assert counted == {"refused": 0, "given_up": 1}  # one outcome, counted once
        [row] = await st.refund_rows(db)
        assert (row.status, row.given_up_at is not None) == ("requested", True)
        assert await cases(db, "refund_failed") == []
        assert len(await cases(db, "refund_unsent")) == 1


class TestCurrencies:
    async def test_yen_are_whole_units(
        self, client: Client, merchant: MerchantHandle, account: str, sim: StripeSim
    ) -> None:
        order = await st.paid_order(
            client,
            merchant,
            sim,
            account,
            currency="JPY",
            lines=[{"sku": "SKU-RED", "quantity": 3, "price": "2000", "title": "Mug"}],
            shipping_price="500",
            tax="0",
        )
        assert order["total_price"] == "6500"
        made = await st.refund(client, merchant, order["id"], amount="1200")
        assert (made["amount"], made["amount_minor"], made["currency"]) == ("1200", 1200, "JPY")
        line = await st.refund(
            client,
            merchant,
            order["id"],
            lines=[{"line_id": order["lines"][0]["id"], "quantity": 1}],
        )
        assert (line["amount"], line["amount_minor"]) == ("2000", 2000)
        r = await client.post(
            f"/api/v1/orders/{order['id']}/refunds",
            json={"amount": "12.5"},
            headers=merchant.headers,
        )
        assert r.status_code == 400
        assert r.json()["detail"] == "amount: JPY amounts have 0 decimal place(s) at most, got 12.5"
        await st.settled(client, merchant, line["id"])
        await st.settled(client, merchant, made["id"])
        assert sorted(dict(p.form)["amount"] for p in sim.refund_requests()) == ["1200", "2000"]
        assert {r["currency"] for r in sim.refunds.values()} == {"jpy"}

    async def test_rupiah_and_forint_go_to_stripe_in_hundredths(
        self, client: Client, merchant: MerchantHandle, account: str, sim: StripeSim
    ) -> None:
        order = await st.paid_order(
            client,
            merchant,
            sim,
            account,
            currency="IDR",
            lines=[{"sku": "SKU-RED", "quantity": 1, "price": "150000", "title": "Mug"}],
            shipping_price="0",
            tax="0",
        )
        made = await st.refund(client, merchant, order["id"], amount="15000")
        assert (made["amount"], made["amount_minor"]) == ("15000", 1500000)
        await st.settled(client, merchant, made["id"])
        assert [dict(p.form)["amount"] for p in sim.refund_requests()] == ["1500000"]
        assert sim.payments[order["stripe_payment_reference"]].refunded() == 1500000

    async def test_a_fraction_of_a_unit_stripe_cannot_take_is_a_400(
        self, client: Client, merchant: MerchantHandle, account: str, sim: StripeSim, db: Database
    ) -> None:
        order = await st.paid_order(
            client,
            merchant,
            sim,
            account,
            currency="TWD",
            lines=[{"sku": "SKU-RED", "quantity": 1, "price": "300.00", "title": "Mug"}],
            shipping_price="0",
            tax="0",
        )
        r = await client.post(
            f"/api/v1/orders/{order['id']}/refunds",
            json={"amount": "10.50"},
            headers=merchant.headers,
        )
        assert (r.status_code, r.json()["extra"]) == (400, {"field": "amount"}), r.text
        assert r.json()["detail"] == (
            "amount: TWD amounts have 0 decimal place(s) at most, got 10.50 (what Stripe takes)"
        )
        made = await st.refund(client, merchant, order["id"], amount="10")
        assert made["amount_minor"] == 1000
        await st.settled(client, merchant, made["id"])
        assert [dict(p.form)["amount"] for p in sim.refund_requests()] == ["1000"]


class TestStripeSaysNo:
    async def test_more_than_stripe_holds_is_refused_into_the_exceptions_queue(
        self, client: Client, merchant: MerchantHandle, account: str, sim: StripeSim, db: Database
    ) -> None:
        from decimal import Decimal

        order = await st.paid_order(client, merchant, sim, account, captured=Decimal("10.00"))
        made = await st.refund(client, merchant, order["id"], amount="20.00")
        failed = await st.settled(client, merchant, made["id"], "failed")
        reason = "Stripe: Refund amount (2000) is greater than unrefunded amount on charge (1000)"
        assert failed["failure_reason"] == reason
        [case] = await cases(db, "refund_failed")
        assert str(case.order_id) == order["id"]
        assert case.data == {"refund_id": made["id"], "failure_reason": reason}
        [event] = await published(db, "refund.failed")
        assert (event["refund_id"], event["failure_reason"], event["amount"]) == (
            made["id"],
            reason,
            "20.00",
        )
        # A failed refund gives its amount back to what can be refunded.
        again = await st.refund(client, merchant, order["id"], amount="10.00")
        await st.settled(client, merchant, again["id"])

    async def test_a_refund_stripe_fails_carries_stripes_reason(
        self, client: Client, merchant: MerchantHandle, account: str, sim: StripeSim, db: Database
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        sim.next_statuses = ["failed"]
        made = await st.refund(client, merchant, order["id"], amount="3.00")
        failed = await st.settled(client, merchant, made["id"], "failed")
        assert failed["failure_reason"] == "lost_or_stolen_card"
        [case] = await cases(db, "refund_failed")
        assert "lost_or_stolen_card" in case.reason
        assert await timeline(client, merchant, order["id"]) == [
            "refund.requested",
            "refund.failed",
        ]

    async def test_a_pending_refund_waits_for_stripe(
        self, client: Client, merchant: MerchantHandle, account: str, sim: StripeSim, db: Database
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        sim.next_statuses = ["pending"]
        made = await st.refund(client, merchant, order["id"], amount="3.00")
        pending = await st.settled(client, merchant, made["id"], "pending")
        assert pending["stripe_refund_id"] in sim.refunds
        assert await published(db, "refund.succeeded") == []


class TestRefusedBeforeStripe:
    async def test_no_stripe_payment_or_no_connection_is_a_409(
        self, client: Client, merchant: MerchantHandle, sim: StripeSim, db: Database
    ) -> None:
        order = await st.paid_order(client, merchant, sim, None)  # not connected yet
        r = await client.post(
            f"/api/v1/orders/{order['id']}/refunds",
            json={"amount": "1.00"},
            headers=merchant.headers,
        )
        assert r.status_code == 409
        assert r.json()["detail"] == (
            "order_id: Stripe is not connected: PUT /api/v1/settings/stripe first"
        )
        await st.connect(client, merchant, sim)
        async with db.transaction() as session:
            await session.execute(update(Order).values(stripe_payment_reference=None))
        r = await client.post(
            f"/api/v1/orders/{order['id']}/refunds",
            json={"amount": "1.00"},
            headers=merchant.headers,
        )
        assert r.status_code == 409
        assert "no Stripe payment to refund" in r.json()["detail"]
        assert await st.refund_rows(db) == []

    async def test_another_merchants_orders_and_refunds_are_404(
        self,
        client: Client,
        merchant: MerchantHandle,
        other_merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        made = await st.refund(client, merchant, order["id"], amount="1.00")
        r = await client.post(
            f"/api/v1/orders/{order['id']}/refunds",
            json={"amount": "1.00"},
            headers=other_merchant.headers,
        )
        assert r.status_code == 404
        r = await client.get(f"/api/v1/refunds/{made['id']}", headers=other_merchant.headers)
        assert r.status_code == 404
        r = await client.get("/api/v1/refunds", headers=other_merchant.headers)
        assert r.json() == {"items": [], "next_cursor": None}
        r = await client.get("/api/v1/refunds?status=nope", headers=merchant.headers)
        assert (r.status_code, r.json()["extra"]["field"]) == (400, "status")


class TestPolicyRefunds:
    async def _cancelled(
        self,
        db: Database,
        order_id: str,
        lines: list[dict[str, Any]],
        shipping: bool,
        origin: str = "customer",
    ) -> LifecycleEvent:
        async with db.transaction() as session:
            order = await session.get(Order, uuid.UUID(order_id))
            assert order is not None
            await publish(
                session,
                order,
                "order.cancelled",
                key=f"order.cancelled:{order_id}",
                reason="customer changed their mind",
                origin=origin,
                lines=lines,
                shipping=shipping,
            )
            event = await session.scalar(
                select(LifecycleEvent).where(LifecycleEvent.type == "order.cancelled")
            )
            assert event is not None
            return event

    async def test_a_cancellation_refunds_its_lines_and_shipping_once(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
        stripe_settings: Settings,
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        lines = [{"line_id": ln["id"], "quantity": ln["quantity"]} for ln in order["lines"]]
        event = await self._cancelled(db, order["id"], lines, shipping=True)

        async def one_refund() -> list[Refund]:
            return await st.refund_rows(db)

        [row] = await eventually(one_refund)
        done = await st.settled(client, merchant, str(row.id))
        assert (done["amount"], done["origin"], done["shipping"], done["lines"]) == (
            "33.59",
            "policy-cancel",
            True,
            lines,
        )
        assert done["reason"] == "customer changed their mind"
        assert row.key == f"cancel:{order['id']}"
        # The subscriber again (an at-least-once redelivery): the same refund, nothing new.
        async with db.transaction() as session:
            await refund_cancellation(ctx_of(stripe_settings, db), session, event)
        assert len(await st.refund_rows(db)) == 1
        assert len(sim.refund_requests()) == 1

    @pytest.mark.parametrize("paid", ["refunded", "partially_refunded", "voided"])
    async def test_a_shopify_cancellation_shopify_refunded_is_not_refunded_again(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
        stripe_settings: Settings,
        paid: str,
    ) -> None:
        order = await st.paid_order(client, merchant, sim, account)
        async with db.transaction() as session:
            await session.execute(update(Order).values(financial_status=paid))
        lines = [{"line_id": ln["id"], "quantity": ln["quantity"]} for ln in order["lines"]]
        event = await self._cancelled(db, order["id"], lines, shipping=True, origin="shopify")
        async with db.transaction() as session:
            await refund_cancellation(ctx_of(stripe_settings, db), session, event)

        async def skipped() -> list[dict[str, Any]]:
            r = await client.get(f"/api/v1/orders/{order['id']}", headers=merchant.headers)
            return [e for e in r.json()["timeline"] if e["type"] == "refund.policy_skipped"]

        [note] = await eventually(skipped)
        assert note["message"] == (
            f"no automatic refund: Shopify refunded it already (payment {paid})"
        )
        assert await st.refund_rows(db) == []
        assert sim.refund_requests() == []

    async def test_shopifys_cancel_webhook_records_its_payment_state_for_the_policy(
        self,
        client: Client,
        db: Database,
        sim: StripeSim,
    ) -> None:
        shop = await make_merchant(db, "acme-store.myshopify.com")
        account = await st.connect(client, shop, sim)
        await accepted(client, "orders/create", order_payload(), shop=shop.shop)
        order_id = await order_id_of(db)
        async with db.transaction() as session:
            await session.execute(
                update(Order).values(stripe_payment_reference="pi_3ShopifyCancel0001")
            )
        sim.add_payment("pi_3ShopifyCancel0001", 40994, "usd", scope=account)
        await accepted(
            client,
            "orders/cancelled",
            order_payload(
                updated_at="2008-01-10T11:05:00-05:00",
                cancelled_at="2008-01-10T11:05:00-05:00",
                financial_status="refunded",
            ),
            shop=shop.shop,
        )

        async def skipped() -> list[str]:
            r = await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)
            got = r.json()
            notes = [e["message"] for e in got["timeline"] if e["type"] == "refund.policy_skipped"]
            return notes if got["status"] == "cancelled" else []

        assert await eventually(skipped) == [
            "no automatic refund: Shopify refunded it already (payment refunded)"
        ]
        r = await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)
        assert r.json()["financial_status"] == "refunded"
        assert await st.refund_rows(db) == []
        assert sim.refund_requests() == []

    async def test_a_manual_policy_refunds_nothing(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
        stripe_settings: Settings,
    ) -> None:
        r = await client.put(
            "/api/v1/settings",
            json={"refunds": {"on_cancel": "manual", "on_return": "auto"}},
            headers=merchant.headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["refunds"] == {
            "on_cancel": "manual",
            "on_return": "auto",
            "restocking_fee": None,
        }
        order = await st.paid_order(client, merchant, sim, account)
        event = await self._cancelled(db, order["id"], [], shipping=True)
        async with db.transaction() as session:
            await refund_cancellation(ctx_of(stripe_settings, db), session, event)
        assert await st.refund_rows(db) == []

    async def test_a_received_return_refunds_its_lines_less_the_fee_not_an_exchange(
        self,
        client: Client,
        merchant: MerchantHandle,
        account: str,
        sim: StripeSim,
        db: Database,
        stripe_settings: Settings,
    ) -> None:
        r = await client.put(
            "/api/v1/settings",
            json={"refunds": {"restocking_fee": "0.10"}},
            headers=merchant.headers,
        )
        assert r.status_code == 200, r.text
        order = await st.paid_order(client, merchant, sim, account)
        red = order["lines"][0]["id"]
        ctx = ctx_of(stripe_settings, db)
        for return_id, exchange in ((uuid.uuid4(), True), (uuid.uuid4(), False)):
            async with db.transaction() as session:
                o = await session.get(Order, uuid.UUID(order["id"]))
                assert o is not None
                await publish(
                    session,
                    o,
                    "return.received",
                    key=f"return.received:{return_id}",
                    return_id=str(return_id),
                    number="RMA-1001",
                    reason="too small",
                    exchange=exchange,
                    condition="resellable",
                    lines=[
                        {
                            "order_line_id": red,
                            "purchase_order_line_id": str(uuid.uuid4()),
                            "quantity": 1,
                            "title": "Red mug",
                        }
                    ],
                )
                event = await session.scalar(
                    select(LifecycleEvent).where(
                        LifecycleEvent.key == f"return.received:{return_id}"
                    )
                )
                assert event is not None
            async with db.transaction() as session:
                await refund_return(ctx, session, event)
        [row] = await st.refund_rows(db)
        # One red mug: 11.5504 (its share of what was paid) less 10 %.
        assert (str(row.amount), row.origin, row.key) == (
            "10.40",
            "policy-return",
            f"return:{return_id}",
        )
        await st.settled(client, merchant, str(row.id))


def _refunds_counted(outcome: str) -> float:
    return (
        prometheus_client.REGISTRY.get_sample_value("dropship_refunds_total", {"outcome": outcome})
        or 0.0
    )
