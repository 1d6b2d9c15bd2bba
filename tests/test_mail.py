"""Outgoing email, end to end through a real SMTP server (aiosmtpd): the portal supplier's notice
of a new purchase order, sent once per purchase order, retried when the server says "later",
failed (and said so) when it says "never", and written to ``var/mail`` when there is no SMTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import select

from app.db import Database
from app.mail.models import EmailStatus, OutgoingEmail
from app.settings import Settings
from dropship.asgi import create_app
from tests.conftest import MerchantHandle, make_merchant
from tests.support.broker import losing_jobs, outbox_empty
from tests.support.routing import (
    SHOP,
    Client,
    create_supplier,
    import_catalog,
    send_order,
    wait_pos,
)
from tests.support.shopify import order_payload
from tests.support.smtp import Inbox, smtp_inbox
from tests.support.wait import eventually

SUPPLIER_EMAIL = "orders@portalco.example"
RED_ONLY = ["IPOD2008RED,PortalCo,PC-RED,75.50,USD,5,4,*,1"]


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    yield from smtp_inbox()


@pytest.fixture
def app(settings: Settings, inbox: Inbox) -> Litestar:
    """The app with its workers sending through the test's SMTP server."""
    return create_app(
        settings.model_copy(update={"smtp_url": inbox.url}), run_workers=True, configure_logs=False
    )


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, SHOP, auto_route=True)


async def portal_supplier(client: Client, shop: MerchantHandle, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "PortalCo", "connector": "portal", **extra}
    return await create_supplier(client, shop, **body)


async def portal_order(
    client: Client, shop: MerchantHandle, *, quantity: int = 3, **supplier: Any
) -> dict[str, Any]:
    """A portal supplier (``supplier``: extra fields) offering the red iPod, and an order of it."""
    created = await portal_supplier(client, shop, **supplier)
    await import_catalog(client, shop, RED_ONLY)
    line = dict(order_payload()["line_items"][1], quantity=quantity)
    await send_order(client, line_items=[line])
    return created


async def stored_emails(db: Database) -> list[OutgoingEmail]:
    async with db.sessionmaker() as session:
        return list(await session.scalars(select(OutgoingEmail).order_by(OutgoingEmail.id)))


async def wait_email_status(db: Database, status: str) -> OutgoingEmail:
    async def probe() -> OutgoingEmail | None:
        rows = await stored_emails(db)
        return rows[0] if len(rows) == 1 and rows[0].status == status else None

    return await eventually(probe, timeout=45)


async def _some(items: list[Any]) -> bool:
    return bool(items)


class TestSupplierNotice:
    async def test_a_portal_purchase_order_is_emailed_to_the_supplier_once(
        self, client: Client, shop: MerchantHandle, db: Database, inbox: Inbox
    ) -> None:
        supplier = await portal_order(client, shop, contact_email=SUPPLIER_EMAIL)
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "placed")
        email = await wait_email_status(db, EmailStatus.SENT)

        [msg] = inbox.to(SUPPLIER_EMAIL)
        assert msg["Message-ID"] == email.message_id
        assert po["number"] in msg["Subject"]
        assert SHOP in msg["Subject"]
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        assert text is not None
        assert html is not None
        body = text.get_content()
        assert "3 x PC-RED" in body
        assert "Bob Norman" in body
        assert "Louisville" in body
        assert f"/supplier/v1/orders/{po['id']}" in body
        # What the supplier must not see: the customer's email, the merchant's prices.
        raw = bytes(msg).decode()
        assert "bob.norman" not in raw
        assert "199.00" not in raw

        # The link in the email works with the supplier's key.
        key = {"Authorization": f"Bearer {supplier['api_key']}"}
        r = await client.get(f"/supplier/v1/orders/{po['id']}", headers=key)
        assert r.status_code == 200, r.text
        assert r.json()["number"] == po["number"]

        timeline = (
            await client.get(f"/api/v1/orders/{po['order_id']}", headers=shop.headers)
        ).json()["timeline"]
        types = [e["type"] for e in timeline]
        assert "purchase_order.notice_queued" in types
        assert "email.sent" in types

    async def test_the_same_event_or_job_again_sends_nothing_more(
        self, client: Client, shop: MerchantHandle, db: Database, inbox: Inbox, settings: Settings
    ) -> None:
        from app.jobs.task import TaskContext
        from app.mail.tasks import send_email
        from app.purchasing.tasks import place

        await portal_order(client, shop, contact_email=SUPPLIER_EMAIL)
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "placed")
        email = await wait_email_status(db, EmailStatus.SENT)

        ctx = TaskContext(
            settings=settings.model_copy(update={"smtp_url": inbox.url}),
            db=db,
            box=client.app.state.services.box,
        )
        await send_email(ctx, str(email.id))  # the job delivered twice
        await place(ctx, po["id"])  # the placement run again
        assert len(inbox.to(SUPPLIER_EMAIL)) == 1
        assert len(await stored_emails(db)) == 1

    async def test_a_temporary_refusal_is_retried_and_delivered_once(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        inbox: Inbox,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr("app.mail.tasks.retry_delay_ms", lambda attempt: 50)
        inbox.refuse = ["451 4.3.0 Mailbox busy, try again later"]
        await portal_order(client, shop, contact_email=SUPPLIER_EMAIL)
        email = await wait_email_status(db, EmailStatus.SENT)
        assert email.attempts == 2
        assert len(inbox.to(SUPPLIER_EMAIL)) == 1

    async def test_a_session_refusal_is_a_configuration_problem_retried_not_a_failed_email(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        inbox: Inbox,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """530 at MAIL FROM (say, the server wants STARTTLS or a login) is about our settings,
        not this email: retried with backoff, delivered once the server accepts."""
        monkeypatch.setattr("app.mail.tasks.retry_delay_ms", lambda attempt: 50)
        inbox.refuse_sender = ["530 5.7.0 Must issue a STARTTLS command first"]
        await portal_order(client, shop, contact_email=SUPPLIER_EMAIL)
        email = await wait_email_status(db, EmailStatus.SENT)
        assert email.attempts == 2
        assert len(inbox.to(SUPPLIER_EMAIL)) == 1

    async def test_a_permanent_refusal_fails_the_email_and_says_so(
        self, client: Client, shop: MerchantHandle, db: Database, inbox: Inbox
    ) -> None:
        inbox.refuse = ["550 5.1.1 No such user here"]
        await portal_order(client, shop, contact_email=SUPPLIER_EMAIL)
        email = await wait_email_status(db, EmailStatus.FAILED)
        assert email.attempts == 1
        assert "550" in (email.last_error or "")
        assert inbox.to(SUPPLIER_EMAIL) == []
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1)
        timeline = (
            await client.get(f"/api/v1/orders/{po['order_id']}", headers=shop.headers)
        ).json()["timeline"]
        failed = [e for e in timeline if e["type"] == "email.failed"]
        assert failed
        assert "No such user" in failed[0]["message"]
        assert po["status"] == "placed"  # the purchase order itself stands

    async def test_recording_the_send_fails_once_still_one_email(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        inbox: Inbox,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The message went out, then our commit failed: we record it again, we do not send it
        again."""
        from sqlalchemy.exc import OperationalError

        import app.mail.tasks as mail_tasks

        real = mail_tasks._note
        failures: list[str] = []

        async def flaky(session: Any, email: Any, type_: str, message: str) -> None:
            if type_ == "email.sent" and not failures:
                failures.append(message)
                raise OperationalError("UPDATE emails", {}, Exception("connection lost"))
            await real(session, email, type_, message)

        monkeypatch.setattr(mail_tasks, "_note", flaky)
        await portal_order(client, shop, contact_email=SUPPLIER_EMAIL)
        email = await wait_email_status(db, EmailStatus.SENT)
        assert failures
        assert email.attempts == 1
        assert len(inbox.to(SUPPLIER_EMAIL)) == 1

    async def test_a_sender_that_died_mid_send_is_replaced_after_its_lease_with_the_same_id(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        inbox: Inbox,
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A worker crashed after claiming the email (we cannot know whether the server got it):
        within the lease nobody sends it; after the lease the sweeper sends it, under the same
        Message-ID so the repeat is recognisable."""
        from app.jobs.task import TaskContext
        from app.mail.tasks import send_email
        from workers.maintenance import sweep

        with losing_jobs(client.app.state.workers.broker, "email.send") as lost:
            await portal_order(client, shop, contact_email=SUPPLIER_EMAIL)
            email = await wait_email_status(db, EmailStatus.QUEUED)
            await eventually(lambda: _some(lost))  # its job reached the broker, and vanished
        # The dead worker's claim, as it left it.
        async with db.transaction() as session:
            row = await session.get(OutgoingEmail, email.id)
            assert row is not None
            from app.db import utcnow

            row.claimed_at = utcnow()
            row.attempts = 1

        ctx = TaskContext(
            settings=settings.model_copy(update={"smtp_url": inbox.url}),
            db=db,
            box=client.app.state.services.box,
        )
        await send_email(ctx, str(email.id))  # a redelivered job, within the lease: no send
        assert inbox.to(SUPPLIER_EMAIL) == []

        monkeypatch.setattr("app.mail.tasks.LEASE", timedelta(0))
        await sweep(ctx, 0)
        client.app.state.workers.relay.wake()
        sent = await wait_email_status(db, EmailStatus.SENT)
        [msg] = inbox.to(SUPPLIER_EMAIL)
        assert msg["Message-ID"] == sent.message_id == email.message_id
        assert sent.attempts == 2

    async def test_no_contact_email_or_notices_off_sends_nothing_and_says_why(
        self, client: Client, shop: MerchantHandle, db: Database, inbox: Inbox
    ) -> None:
        await portal_order(client, shop)  # a supplier with no contact email
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "placed")
        timeline = (
            await client.get(f"/api/v1/orders/{po['order_id']}", headers=shop.headers)
        ).json()["timeline"]
        skipped = [e for e in timeline if e["type"] == "purchase_order.notice_skipped"]
        assert skipped
        assert "no contact email" in skipped[0]["message"]
        assert await stored_emails(db) == []
        assert inbox.messages == []

    async def test_notices_can_be_turned_off(
        self, client: Client, shop: MerchantHandle, db: Database, inbox: Inbox
    ) -> None:
        quiet = await portal_order(
            client, shop, contact_email=SUPPLIER_EMAIL, config={"email_notice": False}
        )
        assert quiet["supplier"]["config"] == {"email_notice": False}
        await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "placed")
        await asyncio.sleep(0.2)
        assert await stored_emails(db) == []
        assert inbox.messages == []

    async def test_the_sweeper_leaves_an_email_alone_while_it_backs_off(
        self, client: Client, shop: MerchantHandle, db: Database, settings: Settings
    ) -> None:
        from app.db import utcnow
        from app.jobs.task import TaskContext
        from workers.maintenance import sweep

        broker = client.app.state.workers.broker
        with losing_jobs(broker, "email.send") as lost:
            await portal_order(client, shop, contact_email=SUPPLIER_EMAIL)
            email = await wait_email_status(db, EmailStatus.QUEUED)
            await eventually(lambda: _some(lost))
        async with db.transaction() as session:
            row = await session.get(OutgoingEmail, email.id)
            assert row is not None
            row.attempts = 1
            row.next_attempt_at = utcnow() + timedelta(minutes=10)
        ctx = TaskContext(settings=settings, db=db, box=client.app.state.services.box)

        async def swept() -> list[Any]:
            with losing_jobs(broker, "email.send") as lost:
                await sweep(ctx, 0)
                client.app.state.workers.relay.wake()
                await eventually(lambda: outbox_empty(db), timeout=10)
            return lost

        assert await swept() == []  # backing off: not re-enqueued
        async with db.transaction() as session:
            row = await session.get(OutgoingEmail, email.id)
            assert row is not None
            row.next_attempt_at = utcnow() - timedelta(seconds=1)
        assert len(await swept()) == 1  # due: re-enqueued

    async def test_a_notice_that_cannot_be_queued_does_not_undo_the_placement(
        self, client: Client, shop: MerchantHandle, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def broken(*args: Any) -> None:
            raise RuntimeError("template exploded")

        monkeypatch.setattr("app.purchasing.tasks.queue_supplier_notice", broken)
        await portal_order(client, shop, contact_email=SUPPLIER_EMAIL)
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "placed")
        timeline = (
            await client.get(f"/api/v1/orders/{po['order_id']}", headers=shop.headers)
        ).json()["timeline"]
        failed = [e for e in timeline if e["type"] == "purchase_order.notice_failed"]
        assert len(failed) == 1
        assert "template exploded" in failed[0]["message"]


class TestPortalSettings:
    @pytest.mark.parametrize(
        ("config", "field"),
        [({"email_notice": "yes"}, "email_notice"), ({"notify": True}, "notify")],
    )
    async def test_bad_portal_settings_are_400_naming_the_setting(
        self, client: Client, shop: MerchantHandle, config: dict[str, Any], field: str
    ) -> None:
        r = await client.post(
            "/api/v1/suppliers",
            json={"name": "PortalCo", "connector": "portal", "config": config},
            headers=shop.headers,
        )
        assert r.status_code == 400, r.text
        assert f"config.{field}" in r.json()["detail"]
        listed = (await client.get("/api/v1/suppliers", headers=shop.headers)).json()["items"]
        assert listed == []

    @pytest.mark.parametrize(
        "address",
        [
            "orders@portalco.example\r\nBcc: all@evil.example",
            "orders@portalco.example\n",
            "PortalCo <o@portalco.example>",
            "x",
        ],
    )
    async def test_a_contact_email_must_be_one_plain_address(
        self, client: Client, shop: MerchantHandle, address: str
    ) -> None:
        r = await client.post(
            "/api/v1/suppliers",
            json={"name": "PortalCo", "connector": "portal", "contact_email": address},
            headers=shop.headers,
        )
        assert r.status_code == 400, r.text
        assert r.json()["detail"] == (
            "contact_email: expected one email address, like orders@example.com"
        )


class TestWithoutSmtp:
    async def test_each_email_is_one_eml_file_under_var_mail(
        self, settings: Settings, db: Database, tmp_path: Path
    ) -> None:
        from litestar.testing import AsyncTestClient

        from app.jobs.task import TaskContext
        from app.mail.tasks import send_email

        assert settings.smtp_url is None
        app = create_app(settings, run_workers=True, configure_logs=False)
        shop = await make_merchant(db, SHOP, auto_route=True)
        async with AsyncTestClient(app, timeout=30) as client:
            await portal_order(client, shop, quantity=2, contact_email=SUPPLIER_EMAIL)
            email = await wait_email_status(db, EmailStatus.SENT)
            mail_dir = settings.var_dir / "mail"
            [eml] = list(mail_dir.glob("*.eml"))
            msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
            assert msg["To"] == SUPPLIER_EMAIL
            assert msg["Message-ID"] == email.message_id

            # Sending it again (say, after a crash) replaces the file: still one.
            async with db.transaction() as session:
                row = await session.get(OutgoingEmail, email.id)
                assert row is not None
                row.status = EmailStatus.QUEUED
                row.claimed_at = None
            ctx = TaskContext(settings=settings, db=db, box=client.app.state.services.box)
            await send_email(ctx, str(email.id))
            resent = await wait_email_status(db, EmailStatus.SENT)
            assert resent.attempts == 2  # it was written again...
            assert len(list(mail_dir.glob("*.eml"))) == 1  # ...over the same file
            assert list(mail_dir.glob("*.tmp")) == []


class TestSettings:
    def test_a_malformed_smtp_url_is_refused_naming_the_variable(self) -> None:
        from pydantic import ValidationError

        with pytest.raises(ValidationError, match="smtp_url"):
            Settings(smtp_url="mail.example.com:25")
