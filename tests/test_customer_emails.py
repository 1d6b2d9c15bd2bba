"""Customer emails end to end, through a real SMTP server (aiosmtpd): a supplier posts a shipment
and its tracking events through the supplier API, the lifecycle events reach the customer-email
subscriber, and the customer gets exactly one email per event, however often the subscriber
runs, in their language, from the merchant's sender, with the link to the tracking page."""

from __future__ import annotations

import json
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
from app.events.tasks import handle_event
from app.jobs.task import REGISTRY, TaskContext
from app.mail.models import EmailStatus, OutgoingEmail
from app.notifications import service
from app.orders.models import Order
from app.settings import Settings
from dropship.asgi import create_app
from tests.conftest import SHOPIFY_SECRET, MerchantHandle, make_merchant
from tests.support.portal import Client, bearer, line, offer, portal_supplier, routed_order
from tests.support.shopify import order_payload, webhook_headers
from tests.support.smtp import Inbox, smtp_inbox
from tests.support.wait import eventually

CUSTOMER = "ada@example.com"
SUBSCRIBER = "app.notifications.tasks.email_customer"
BRANDING = {
    "store_name": "Acme Mugs",
    "color": "#ff6600",
    "sender_email": "shop@acme.example.com",
    "reply_to": "help@acme.example.com",
}


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    yield from smtp_inbox()


@pytest.fixture
def mail_settings(settings: Settings, inbox: Inbox) -> Settings:
    return settings.model_copy(update={"smtp_url": inbox.url})


@pytest.fixture
def app(mail_settings: Settings) -> Litestar:
    """The app with its workers sending through the test's SMTP server."""
    return create_app(mail_settings, run_workers=True, configure_logs=False)


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, "mug-shop.myshopify.com", auto_route=True)


@pytest.fixture
async def alpha(client: Client, shop: MerchantHandle) -> dict[str, Any]:
    s = await portal_supplier(client, shop, "Alpha")
    await offer(client, shop, s["supplier"]["id"], "RED", stock=5)
    await offer(client, shop, s["supplier"]["id"], "BLUE", stock=5)
    return s


async def put_settings(client: Client, shop: MerchantHandle, **sections: Any) -> None:
    r = await client.put("/api/v1/settings", json=sections, headers=shop.headers)
    assert r.status_code == 200, r.text


def titled(sku: str, quantity: int, title: str) -> dict[str, Any]:
    return {**line(sku, quantity), "title": title}


async def order_view(client: Client, shop: MerchantHandle, order_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def ship(
    client: Client, supplier: dict[str, Any], po_id: str, *lines: tuple[str, int]
) -> str:
    r = await client.post(
        f"/supplier/v1/orders/{po_id}/shipments",
        json={
            "carrier": "UPS",
            "tracking_number": "1Z999AA10123456784",
            "tracking_url": "https://www.ups.com/track?tracknum=1Z999AA10123456784",
            "lines": [{"sku": s, "quantity": q} for s, q in lines],
        },
        headers=bearer(supplier["api_key"]),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def tracking_event(
    client: Client, supplier: dict[str, Any], shipment_id: str, status: str, at: str, **extra: Any
) -> None:
    r = await client.post(
        f"/supplier/v1/shipments/{shipment_id}/events",
        json={"status": status, "occurred_at": at, **extra},
        headers=bearer(supplier["api_key"]),
    )
    assert r.status_code in (200, 201), r.text


def with_subject(inbox: Inbox, to: str, start: str) -> list[EmailMessage]:
    return [m for m in inbox.to(to) if str(m["Subject"]).startswith(start)]


async def one_email(inbox: Inbox, to: str, start: str) -> EmailMessage:
    async def probe() -> EmailMessage | None:
        found = with_subject(inbox, to, start)
        return found[0] if len(found) == 1 else None

    return await eventually(probe, timeout=45)


async def emails(db: Database, **where: Any) -> list[OutgoingEmail]:
    async with db.sessionmaker() as session:
        query = select(OutgoingEmail).filter_by(**where).order_by(OutgoingEmail.id)
        return list(await session.scalars(query))


async def lifecycle_event(db: Database, key: str) -> LifecycleEvent:
    async def probe() -> LifecycleEvent | None:
        async with db.sessionmaker() as session:
            found: LifecycleEvent | None = await session.scalar(
                select(LifecycleEvent).where(LifecycleEvent.key == key)
            )
            return found

    return await eventually(probe, timeout=45)


def parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None
    assert html is not None
    # Lines travel as CRLF (SMTP); compare them as written.
    return (
        str(text.get_content()).replace("\r\n", "\n"),
        str(html.get_content()).replace("\r\n", "\n"),
    )


async def run_subscriber_again(
    settings: Settings, db: Database, client: Client, event: LifecycleEvent
) -> None:
    """The subscriber's job delivered twice, the subscriber run again as if its reaction had
    been lost, and the handler called once more by hand."""
    ctx = TaskContext(settings=settings, db=db, box=client.app.state.services.box)
    async with db.transaction() as session:
        reaction = await session.scalar(
            select(EventReaction.id).where(
                EventReaction.event_id == event.id, EventReaction.subscriber == SUBSCRIBER
            )
        )
    assert reaction is not None
    await handle_event(ctx, str(reaction))
    async with db.transaction() as session:
        again = await session.get(LifecycleEvent, event.id)
        assert again is not None
        await REGISTRY.subscribers[SUBSCRIBER].fn(ctx, session, again)
    async with db.transaction() as session:
        assert await service.notify(session, settings, event) is None


class TestShippingEmails:
    async def test_one_shipped_email_with_the_tracking_link_then_one_delivered(
        self,
        client: Client,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        db: Database,
        inbox: Inbox,
        mail_settings: Settings,
    ) -> None:
        await put_settings(client, shop, branding=BRANDING)
        order_id, [po] = await routed_order(
            client, shop, "C-1", [titled("RED", 2, "Red mug"), titled("BLUE", 1, "Blue cap")]
        )
        order = await order_view(client, shop, order_id)
        tracking_page = order["tracking_url"]
        async with db.sessionmaker() as session:
            o = await session.get(Order, uuid.UUID(order_id))
            assert o is not None
            assert tracking_page == f"http://testserver.local/track/{o.tracking_token}"

        shipment_id = await ship(client, alpha, po["id"], ("RED-S", 2))
        msg = await one_email(inbox, CUSTOMER, f"Your order {order['name']} is on its way")
        assert msg["From"] == "Acme Mugs <shop@acme.example.com>"
        assert msg["Reply-To"] == "help@acme.example.com"
        text, html = parts(msg)
        assert f"Follow your parcel: {tracking_page}\n" in text
        assert "- 2 x Red mug\n" in text
        assert "Blue cap" not in text  # not in this parcel
        assert "Carrier: UPS\n" in text
        assert "Tracking number: 1Z999AA10123456784\n" in text
        assert f'href="{tracking_page}"' in html
        assert 'href="https://www.ups.com/track?tracknum=1Z999AA10123456784"' in html
        assert "background-color:#ff6600" in html

        # The notification runs twice (and thrice): still the one email.
        shipped = await lifecycle_event(db, f"shipment.shipped:{shipment_id}")
        await run_subscriber_again(mail_settings, db, client, shipped)
        [row] = await emails(db, key=f"customer:shipped:{shipment_id}")
        assert row.order_id == uuid.UUID(order_id)
        assert row.kind == "shipped"

        await tracking_event(client, alpha, shipment_id, "in_transit", "2026-11-28T08:00:00Z")
        await tracking_event(client, alpha, shipment_id, "delivered", "2026-11-29T10:00:00Z")
        delivered = await one_email(
            inbox, CUSTOMER, f"Your order {order['name']} has been delivered"
        )
        assert "was delivered on November 29, 2026." in parts(delivered)[0]
        event = await lifecycle_event(db, f"shipment.delivered:{shipment_id}")
        await run_subscriber_again(mail_settings, db, client, event)
        # The same event reported again by the supplier changes nothing either.
        await tracking_event(client, alpha, shipment_id, "delivered", "2026-11-29T10:00:00Z")
        await eventually(lambda: _all_sent(db), timeout=45)

        assert len(with_subject(inbox, CUSTOMER, "Your order")) == 2
        assert len(with_subject(inbox, CUSTOMER, f"Order {order['name']} confirmed")) == 1
        kinds = sorted(e.kind for e in await emails(db, order_id=uuid.UUID(order_id)))
        assert kinds == ["delivered", "order_confirmation", "shipped"]
        timeline = (await order_view(client, shop, order_id))["timeline"]
        queued = [e["message"] for e in timeline if e["type"] == "email.queued"]
        assert queued == [
            f"order_confirmation email to {CUSTOMER} queued (en)",
            f"shipped email to {CUSTOMER} queued (en)",
            f"delivered email to {CUSTOMER} queued (en)",
        ]

    async def test_out_for_delivery_and_one_delay_email_whichever_comes_first(
        self,
        client: Client,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        db: Database,
        inbox: Inbox,
    ) -> None:
        order_id, [po] = await routed_order(client, shop, "C-2", [titled("RED", 1, "Red mug")])
        name = (await order_view(client, shop, order_id))["name"]
        shipment_id = await ship(client, alpha, po["id"])
        await tracking_event(
            client,
            alpha,
            shipment_id,
            "exception",
            "2026-11-28T08:00:00Z",
            description="Address could not be found",
        )
        delayed = await one_email(inbox, CUSTOMER, f"Your order {name} is delayed")
        assert "The carrier says: Address could not be found\n" in parts(delayed)[0]
        # The parcel then also goes stale: no second delay email.
        async with db.transaction() as session:
            o = await session.get(Order, uuid.UUID(order_id))
            await publish(
                session,
                o,
                "shipment.delayed",
                key=f"shipment.delayed:{shipment_id}",
                shipment_id=shipment_id,
            )
        await lifecycle_event(db, f"shipment.delayed:{shipment_id}")
        await tracking_event(client, alpha, shipment_id, "out_for_delivery", "2026-11-29T07:00:00Z")
        await one_email(inbox, CUSTOMER, f"Your order {name} is out for delivery")
        await eventually(lambda: _all_sent(db), timeout=45)
        assert len(with_subject(inbox, CUSTOMER, f"Your order {name} is delayed")) == 1
        assert len(await emails(db, key=f"customer:delayed:{shipment_id}")) == 1

    async def test_a_switched_off_email_is_not_sent(
        self,
        client: Client,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        db: Database,
        inbox: Inbox,
        mail_settings: Settings,
    ) -> None:
        await put_settings(
            client, shop, notifications={"order_confirmation": False, "shipped": False}
        )
        order_id, [po] = await routed_order(client, shop, "C-3", [titled("RED", 1, "Red mug")])
        name = (await order_view(client, shop, order_id))["name"]
        shipment_id = await ship(client, alpha, po["id"])
        shipped = await lifecycle_event(db, f"shipment.shipped:{shipment_id}")
        async with db.transaction() as session:
            assert await service.notify(session, mail_settings, shipped) is None
        await tracking_event(client, alpha, shipment_id, "delivered", "2026-11-29T10:00:00Z")
        await one_email(inbox, CUSTOMER, f"Your order {name} has been delivered")
        await eventually(lambda: _all_sent(db), timeout=45)
        assert [e.kind for e in await emails(db, order_id=uuid.UUID(order_id))] == ["delivered"]
        assert [m["Subject"] for m in inbox.to(CUSTOMER)] == [
            f"Your order {name} has been delivered"
        ]

    async def test_a_permanent_refusal_lands_on_the_orders_timeline(
        self,
        client: Client,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        db: Database,
        inbox: Inbox,
    ) -> None:
        inbox.refuse = ["550 5.1.1 <ada@example.com>: no such user here"]
        order_id, _ = await routed_order(client, shop, "C-4", [titled("RED", 1, "Red mug")])

        async def failed() -> OutgoingEmail | None:
            rows = await emails(db, order_id=uuid.UUID(order_id))
            return rows[0] if rows and rows[0].status == EmailStatus.FAILED else None

        email = await eventually(failed, timeout=45)
        assert (email.kind, email.attempts) == ("order_confirmation", 1)
        assert inbox.to(CUSTOMER) == []
        timeline = (await order_view(client, shop, order_id))["timeline"]
        [entry] = [e for e in timeline if e["type"] == "email.failed"]
        assert entry["message"].startswith(f"order_confirmation email to {CUSTOMER} failed: ")
        assert "550" in entry["message"]
        assert "no such user here" in entry["message"]


class TestMerchantTemplates:
    async def test_the_merchants_template_is_used_and_a_failing_one_falls_back(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any], inbox: Inbox
    ) -> None:
        templates = "/api/v1/notifications/templates"
        mine = {
            "subject": "{{ shop.name }} shipped {{ order.name }}",
            "text": "{{ shipment.carrier }} {{ shipment.tracking_number }}: {{ tracking_url }}\n",
            "html": "<p>{{ shipment.carrier }}</p>",
        }
        r = await client.put(f"{templates}/shipped", json=mine, headers=shop.headers)
        assert r.status_code == 200, r.text
        # Renders the two-line sample order, not an order of one line.
        fragile = {
            "subject": "Delivered: {{ order.lines[1].title }}",
            "text": "t",
            "html": "<p>h</p>",
        }
        r = await client.put(f"{templates}/delivered", json=fragile, headers=shop.headers)
        assert r.status_code == 200, r.text

        order_id, [po] = await routed_order(client, shop, "C-5", [titled("RED", 1, "Red mug")])
        order = await order_view(client, shop, order_id)
        shipment_id = await ship(client, alpha, po["id"])
        msg = await one_email(inbox, CUSTOMER, "mug-shop.myshopify.com shipped C-5")
        assert parts(msg) == (
            f"UPS 1Z999AA10123456784: {order['tracking_url']}\n",
            "<p>UPS</p>\n",
        )
        await tracking_event(client, alpha, shipment_id, "delivered", "2026-11-29T10:00:00Z")
        await one_email(inbox, CUSTOMER, "Your order C-5 has been delivered")
        timeline = (await order_view(client, shop, order_id))["timeline"]
        [failed] = [e for e in timeline if e["type"] == "email.template_failed"]
        assert failed["message"] == (
            "delivered template (en) failed, the default was used: subject: line 1: cannot "
            "render: list object has no element 1"
        )


async def _all_sent(db: Database) -> bool:
    rows = await emails(db)
    return bool(rows) and all(r.status != EmailStatus.QUEUED for r in rows)


class TestShopifyOrders:
    SHOP = "berlin-shop.myshopify.com"

    async def webhook(self, client: Client, topic: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        r = await client.post(
            "/webhooks/shopify",
            content=body,
            headers=webhook_headers(body, secret=SHOPIFY_SECRET, topic=topic, shop=self.SHOP),
        )
        assert r.status_code == 200, r.text

    async def test_a_german_customer_gets_german_and_euros_and_no_second_confirmation(
        self, client: Client, db: Database, inbox: Inbox
    ) -> None:
        await make_merchant(db, self.SHOP)
        german = {"customer_locale": "de-DE", "currency": "EUR"}
        await self.webhook(client, "orders/create", order_payload(**german))
        await self.webhook(
            client,
            "orders/cancelled",
            order_payload(
                **german,
                updated_at="2008-01-10T11:05:00-05:00",
                cancelled_at="2008-01-10T11:05:00-05:00",
            ),
        )
        to = "bob.norman@hostmail.com"
        msg = await one_email(inbox, to, "Ihre Bestellung #1001 wurde storniert")
        text, html = parts(msg)
        assert text.startswith("Hallo Bob Norman,\n\nIhre Bestellung #1001 vom 10. Januar 2008")
        assert "Bestellwert: 409,94\xa0€\n" in text
        assert "<strong>409,94&nbsp;€</strong>" in html or "<strong>409,94\xa0€</strong>" in html
        assert '<html lang="de">' in html
        assert msg["From"] == f'"{self.SHOP}" <orders@localhost>'
        assert msg["Reply-To"] is None
        await eventually(lambda: _all_sent(db), timeout=45)
        # Shopify sent its own order confirmation: ours would be the second.
        assert [e.kind for e in await emails(db)] == ["cancelled"]
        async with db.sessionmaker() as session:
            order = await session.scalar(select(Order))
            assert order is not None
            assert order.customer_locale == "de-DE"
