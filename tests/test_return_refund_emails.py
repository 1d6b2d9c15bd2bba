"""The customer emails of returns and refunds, through a real SMTP server (aiosmtpd): each event
published with the data its domain publishes (the seam of issue 8) gets exactly one email, with
its facts (the amount in the refund's currency, the return's instructions, address and label),
also when the subscriber runs again; each return step and each refund is its own email."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import select

from app.db import Database
from app.events.models import EventReaction, LifecycleEvent
from app.events.service import publish
from app.mail.models import OutgoingEmail
from app.orders.models import Order, OrderLine
from app.settings import Settings
from dropship.asgi import create_app
from tests.conftest import MerchantHandle, make_merchant
from tests.support.orders import order_body
from tests.support.portal import Client
from tests.support.smtp import Inbox, smtp_inbox
from tests.support.wait import eventually
from tests.test_customer_emails import parts, run_subscriber_again

CUSTOMER = "ada@example.com"


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    yield from smtp_inbox()


@pytest.fixture
def mail_settings(settings: Settings, inbox: Inbox) -> Settings:
    return settings.model_copy(update={"smtp_url": inbox.url})


@pytest.fixture
def app(mail_settings: Settings) -> Litestar:
    return create_app(mail_settings, run_workers=True, configure_logs=False)


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, "return-shop.myshopify.com")


async def new_order(
    client: Client, db: Database, shop: MerchantHandle, reference: str, **overrides: Any
) -> tuple[Order, dict[str, str]]:
    r = await client.post(
        "/api/v1/orders", json=order_body(reference, **overrides), headers=shop.headers
    )
    assert r.status_code == 201, r.text
    order_id = uuid.UUID(r.json()["id"])
    async with db.sessionmaker() as session:
        order = await session.get(Order, order_id)
        assert order is not None
        lines = await session.scalars(select(OrderLine).where(OrderLine.order_id == order_id))
        return order, {str(ln.sku): str(ln.id) for ln in lines}


async def emit(db: Database, order: Order, type_: str, key: str, **data: Any) -> LifecycleEvent:
    async with db.transaction() as session:
        event_id = await publish(session, order, type_, key=key, **data)
    assert event_id is not None
    async with db.sessionmaker() as session:
        event = await session.get(LifecycleEvent, event_id)
        assert event is not None
        return event


def subjects(inbox: Inbox) -> list[str]:
    return sorted(str(m["Subject"]) for m in inbox.to(CUSTOMER))


async def only(inbox: Inbox, start: str) -> EmailMessage:
    async def probe() -> EmailMessage | None:
        found = [m for m in inbox.to(CUSTOMER) if str(m["Subject"]).startswith(start)]
        return found[0] if len(found) == 1 else None

    return await eventually(probe, timeout=45)


def return_data(return_id: str, ids: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "return_id": return_id,
        "number": "RMA-1001-1",
        "purchase_order_id": str(uuid.uuid4()),
        "supplier_id": str(uuid.uuid4()),
        "reason": "too small",
        "exchange": False,
        "lines": [
            {
                "order_line_id": ids["SKU-RED"],
                "purchase_order_line_id": str(uuid.uuid4()),
                "quantity": 1,
                "title": "Red mug",
            }
        ],
        **extra,
    }


async def emails_of(db: Database, kind: str) -> list[OutgoingEmail]:
    async with db.sessionmaker() as session:
        return list(await session.scalars(select(OutgoingEmail).where(OutgoingEmail.kind == kind)))


class TestReturnEmails:
    async def test_one_email_per_step_with_instructions_address_and_label(
        self, client: Client, db: Database, shop: MerchantHandle, inbox: Inbox, settings: Settings
    ) -> None:
        order, ids = await new_order(client, db, shop, "R-1", currency="EUR")
        rid = str(uuid.uuid4())
        requested = await emit(
            db, order, "return.requested", f"return.requested:{rid}", **return_data(rid, ids)
        )
        msg = await only(inbox, "We received your return request RMA-1001-1 for order")
        text, _ = parts(msg)
        assert "your request RMA-1001-1 to return these items of order" in text
        assert "(too small)" in text
        assert "- 1 x Red mug\n" in text

        approved = await emit(
            db,
            order,
            "return.approved",
            f"return.approved:{rid}",
            **return_data(
                rid,
                ids,
                instructions="Pack it in the original box.",
                return_address={
                    "name": "Acme Returns",
                    "address1": "500 Dock St",
                    "city": "Austin",
                    "zip": "78702",
                    "province_code": "TX",
                    "country_code": "US",
                },
                label_url="https://labels.example.com/RMA-1001-1.pdf",
            ),
        )
        msg = await only(inbox, "Your return RMA-1001-1 for order")
        text, html = parts(msg)
        assert "Your return label: https://labels.example.com/RMA-1001-1.pdf\n" in text
        assert "Send it to:\nAcme Returns\n500 Dock St\n78702 Austin TX\nUS\n" in text
        assert "\nPack it in the original box.\n" in text
        assert '<a href="https://labels.example.com/RMA-1001-1.pdf">' in html

        rejected_id = str(uuid.uuid4())
        await emit(
            db,
            order,
            "return.rejected",
            f"return.rejected:{rejected_id}",
            **return_data(rejected_id, ids, rejection_reason="the item was worn"),
        )
        msg = await only(inbox, "Your return request RMA-1001-1 for order")
        assert "cannot accept your return RMA-1001-1 for order" in parts(msg)[0]
        assert ": the item was worn." in parts(msg)[0]

        await emit(
            db,
            order,
            "return.received",
            f"return.received:{rid}",
            **return_data(rid, ids, condition="damaged"),
        )
        msg = await only(inbox, "We received your return RMA-1001-1 for order")
        assert "has arrived; the items arrived damaged. Your refund follows." in parts(msg)[0]

        # Each subscriber again (a redelivered job, a lost reaction, a direct call): no more.
        for event in (requested, approved):
            await run_subscriber_again(settings, db, client, event)
        await eventually(lambda: _sent(db, 4), timeout=45)
        assert len([s for s in subjects(inbox) if "RMA-1001-1" in s]) == 4
        keys = sorted([e.key for k in RETURN_KINDS for e in await emails_of(db, k)])
        assert keys == sorted(
            [
                f"customer:return_requested:{rid}",
                f"customer:return_approved:{rid}",
                f"customer:return_rejected:{rejected_id}",
                f"customer:return_received:{rid}",
            ]
        )

    async def test_a_switched_off_step_sends_nothing(
        self, client: Client, db: Database, shop: MerchantHandle, inbox: Inbox
    ) -> None:
        r = await client.put(
            "/api/v1/settings",
            json={"notifications": {"return_requested": False}},
            headers=shop.headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["notifications"]["return_approved"] is True
        order, ids = await new_order(client, db, shop, "R-2")
        rid = str(uuid.uuid4())
        await emit(
            db, order, "return.requested", f"return.requested:{rid}", **return_data(rid, ids)
        )
        await emit(db, order, "return.approved", f"return.approved:{rid}", **return_data(rid, ids))
        await only(inbox, "Your return RMA-1001-1 for order")
        await eventually(lambda: _sent(db, 2), timeout=45)  # confirmation + approved
        assert await emails_of(db, "return_requested") == []


RETURN_KINDS = ("return_requested", "return_approved", "return_rejected", "return_received")


async def _sent(db: Database, n: int) -> bool:
    async with db.sessionmaker() as session:
        rows = list(await session.scalars(select(OutgoingEmail)))
    return len(rows) >= n and all(r.status != "queued" for r in rows)


class TestRefundEmails:
    @pytest.mark.parametrize(
        ("currency", "amount", "shown"),
        [("EUR", "12.30", "€12.30"), ("JPY", "1200", "¥1,200")],
    )
    async def test_one_email_per_refund_with_the_amount_in_its_currency(
        self,
        client: Client,
        db: Database,
        shop: MerchantHandle,
        inbox: Inbox,
        settings: Settings,
        currency: str,
        amount: str,
        shown: str,
    ) -> None:
        prices = {"EUR": ("10.50", "4.99"), "JPY": ("1200", "500")}[currency]
        order, ids = await new_order(
            client,
            db,
            shop,
            f"F-{currency}",
            currency=currency,
            lines=[
                {"sku": "SKU-RED", "quantity": 2, "price": prices[0], "title": "Red mug"},
                {"sku": "SKU-BLUE", "quantity": 1, "price": prices[1], "title": "Blue cap"},
            ],
        )
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        event = await emit(
            db,
            order,
            "refund.succeeded",
            f"refund.succeeded:{first}",
            refund_id=first,
            amount=amount,
            currency=currency,
            reason="returned",
            origin="return",
            lines=[{"line_id": ids["SKU-RED"], "quantity": 1}],
            shipping=True,
        )
        msg = await only(inbox, f"We refunded {shown} for order")
        text, html = parts(msg)
        assert f"we have refunded {shown} for your order" in text
        assert "(returned)" in text
        assert "- 1 x Red mug\n" in text
        assert "The shipping costs are included.\n" in text
        assert shown in html
        # A second, partial refund of the same order is its own email.
        await emit(
            db,
            order,
            "refund.succeeded",
            f"refund.succeeded:{second}",
            refund_id=second,
            amount=amount,
            currency=currency,
            reason="goodwill",
            origin="merchant",
            lines=[],
            shipping=False,
        )
        await run_subscriber_again(settings, db, client, event)
        await eventually(lambda: _sent(db, 3), timeout=45)
        refunds = [s for s in subjects(inbox) if s.startswith("We refunded")]
        assert len(refunds) == 2
        assert sorted(e.key for e in await emails_of(db, "refund_issued")) == sorted(
            [f"customer:refund_issued:{first}", f"customer:refund_issued:{second}"]
        )

    async def test_german_customer_gets_german_amounts(
        self, client: Client, db: Database, shop: MerchantHandle, inbox: Inbox
    ) -> None:
        r = await client.put(
            "/api/v1/settings",
            json={"notifications": {"default_locale": "de"}},
            headers=shop.headers,
        )
        assert r.status_code == 200, r.text
        order, _ = await new_order(client, db, shop, "F-DE", currency="EUR")
        rid = str(uuid.uuid4())
        await emit(
            db,
            order,
            "refund.succeeded",
            f"refund.succeeded:{rid}",
            refund_id=rid,
            amount="12.30",
            currency="EUR",
            reason=None,
            origin="cancel",
            lines=[],
            shipping=False,
        )
        msg = await only(inbox, "Wir haben 12,30 € für Ihre Bestellung")  # subjects fold spaces
        assert "wir haben Ihnen 12,30\xa0€ für Ihre Bestellung" in parts(msg)[0]


class TestCancelledEmail:
    async def test_a_partial_cancellation_lists_what_was_cancelled(
        self, client: Client, db: Database, shop: MerchantHandle, inbox: Inbox, settings: Settings
    ) -> None:
        order, ids = await new_order(client, db, shop, "X-1")
        event = await emit(
            db,
            order,
            "order.cancelled",
            f"order.cancelled:{order.id}",
            reason="customer changed their mind",
            origin="merchant",
            lines=[{"line_id": ids["SKU-RED"], "quantity": 2}],
            shipping=False,
        )
        msg = await only(inbox, f"Your order {order.name} has been cancelled")
        text, html = parts(msg)
        assert f"part of your order {order.name} of " in text
        assert "- 2 x Red mug\n" in text
        assert "SKU-BLUE" not in text
        assert "2 &times; Red mug" in html
        await run_subscriber_again(settings, db, client, event)
        await eventually(lambda: _sent(db, 2), timeout=45)
        assert len(await emails_of(db, "cancelled")) == 1

    async def test_nothing_cancelled_sends_no_cancelled_email(
        self, client: Client, db: Database, shop: MerchantHandle, inbox: Inbox
    ) -> None:
        order, _ = await new_order(client, db, shop, "X-2")
        await emit(
            db,
            order,
            "order.cancelled",
            f"order.cancelled:{order.id}",
            reason="r",
            origin="shopify",
            lines=[],
            shipping=False,
        )
        await only(inbox, f"Order {order.name} confirmed")
        await eventually(lambda: _handled(db), timeout=45)
        assert await emails_of(db, "cancelled") == []


async def _handled(db: Database) -> bool:
    async with db.sessionmaker() as session:
        done = (
            await session.scalars(
                select(EventReaction.done_at).where(
                    EventReaction.subscriber == "app.notifications.tasks.email_customer"
                )
            )
        ).all()
    return len(done) == 2 and all(done)
