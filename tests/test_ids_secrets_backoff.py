"""Shopify ids are unsigned 64-bit and stay exact; a secret answer is shown once and never stored
in clear; a placement's backoff (and a supplier's ``Retry-After``) holds for the sweeper and for
duplicate runs too; one backoff function for every retry."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import func, select, update

from app.db import Database, utcnow
from app.idempotency.models import IdempotencyRecord
from app.jobs import backoff
from app.jobs.task import TaskContext
from app.mail import tasks as mail_tasks
from app.mail.sender import SmtpTarget
from app.orders.models import Customer, Order
from app.purchasing import tasks as placement
from app.purchasing.models import PurchaseOrder
from app.settings import Settings
from app.suppliers.models import Supplier
from app.suppliers.service import SUPPLIER_KEY_PREFIX
from tests.conftest import MerchantHandle, make_merchant
from tests.support.broker import outbox_empty
from tests.support.order_flow import (
    Client,
    accepted,
    all_processed,
    detail,
    order_id_of,
    outcomes,
    wait_status,
)
from tests.support.routing import SHOP, create_supplier, import_catalog, send_order, wait_pos
from tests.support.shopify import order_payload
from tests.support.supplier_sim import BASE_URL, SupplierSim, rest_config
from tests.support.wait import eventually
from workers.maintenance import sweep
from workers.relay import OutboxRelay

#: Above the signed 64-bit range: what BIGINT and the old parser refused.
BIG_IDS = [2**63, 2**64 - 1]


def ids_from(top: int) -> list[int]:
    """Five distinct ids starting at ``top``, staying inside 2**63 … 2**64-1."""
    step = -1 if top > 2**64 - 8 else 1
    return [top + step * i for i in range(5)]


def big_order(top: int, **overrides: Any) -> dict[str, Any]:
    """The Shopify fixture order with every Shopify id (order, customer, line, variant,
    product) unsigned 64-bit and above 2**63-1."""
    order_id, customer_id, line_id, variant_id, product_id = ids_from(top)
    payload = order_payload(id=order_id, **overrides)
    payload["admin_graphql_api_id"] = f"gid://shopify/Order/{order_id}"
    payload["customer"]["id"] = customer_id
    payload["line_items"] = payload["line_items"][:1]
    payload["line_items"][0].update(id=line_id, variant_id=variant_id, product_id=product_id)
    return payload


def at(minutes: int) -> str:
    return f"2008-01-10T11:{minutes:02d}:00-05:00"


class TestUnsignedShopifyIds:
    @pytest.mark.parametrize("top", BIG_IDS)
    async def test_create_update_cancel_keep_every_id_exact(
        self, client: Client, merchant: MerchantHandle, db: Database, top: int
    ) -> None:
        order_id, customer_id, line_id, variant_id, product_id = ids_from(top)
        await accepted(client, "orders/create", big_order(top, updated_at=at(0)))
        oid = await order_id_of(db, order_id)
        order = await detail(client, merchant, oid)
        assert order["shopify_order_id"] == str(order_id)
        [line] = order["lines"]
        assert (line["shopify_line_id"], line["variant_id"], line["product_id"]) == (
            str(line_id),
            str(variant_id),
            str(product_id),
        )
        async with db.sessionmaker() as session:
            row = await session.get(Order, oid)
            customer = await session.scalar(select(Customer))
        assert row is not None
        assert row.shopify_order_id == order_id
        assert customer is not None
        assert customer.shopify_customer_id == customer_id

        # orders/updated finds the same order (an exact, indexed lookup) and applies the change.
        await accepted(client, "orders/updated", big_order(top, updated_at=at(5), note="leave it"))
        await all_processed(db, 2)
        updated = await detail(client, merchant, oid)
        assert updated["note"] == "leave it"
        async with db.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Order)) == 1
            assert await session.scalar(select(func.count()).select_from(Customer)) == 1

        cancelled = big_order(top, updated_at=at(9), cancelled_at=at(9), cancel_reason="customer")
        await accepted(client, "orders/cancelled", cancelled)
        final = await wait_status(client, merchant, "cancelled", order_id, db=db)
        assert final["id"] == str(oid)
        assert final["shopify_order_id"] == str(order_id)

    @pytest.mark.parametrize("top", BIG_IDS)
    async def test_customers_redact_finds_the_customer_by_its_id(
        self, client: Client, merchant: MerchantHandle, db: Database, top: int
    ) -> None:
        order_id, customer_id, *_ = ids_from(top)
        await accepted(client, "orders/create", big_order(top))
        oid = await order_id_of(db, order_id)
        # Only the customer id names them: no email, no order ids.
        redact = {"shop_id": 1, "shop_domain": merchant.shop, "customer": {"id": customer_id}}
        await accepted(client, "customers/redact", redact)
        await all_processed(db, 2)
        assert (await outcomes(db))[-1] == "redacted 1 orders (1 stored webhook bodies)"
        order = await detail(client, merchant, oid)
        assert (order["email"], order["shipping_address"]) == (None, None)
        async with db.sessionmaker() as session:
            customer = await session.scalar(select(Customer))
        assert customer is not None
        assert (customer.shopify_customer_id, customer.email) == (customer_id, None)
        assert customer.redacted_at is not None

    @pytest.mark.parametrize(
        ("where", "field"),
        [
            ("order", "id"),
            ("customer", "customer.id"),
            ("line", "line_items[0].id"),
            ("variant", "line_items[0].variant_id"),
            ("product", "line_items[0].product_id"),
        ],
    )
    async def test_2_to_the_64_is_out_of_range(
        self, client: Client, merchant: MerchantHandle, db: Database, where: str, field: str
    ) -> None:
        payload = big_order(2**63)
        too_big = 2**64
        if where == "order":
            payload["id"] = too_big
        elif where == "customer":
            payload["customer"]["id"] = too_big
        else:
            payload["line_items"][0][{"line": "id"}.get(where, f"{where}_id")] = too_big
        await accepted(client, "orders/create", payload)
        await all_processed(db, 1)
        assert await outcomes(db) == [f"rejected: {field}: out of range: {too_big}"]
        async with db.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Order)) == 0

    async def test_order_number_is_not_an_id_and_stays_signed_64_bit(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await accepted(client, "orders/create", big_order(2**63, order_number=2**63))
        await all_processed(db, 1)
        assert await outcomes(db) == [f"rejected: order_number: out of range: {2**63}"]


def keyed(merchant: MerchantHandle, key: str) -> dict[str, str]:
    return {**merchant.headers, "Idempotency-Key": key}


async def stored_answers(db: Database) -> list[bytes]:
    async with db.sessionmaker() as session:
        rows = (await session.scalars(select(IdempotencyRecord.response_body))).all()
    return [r for r in rows if r is not None]


async def supplier_key_works(client: Client, key: str) -> bool:
    r = await client.get("/supplier/v1/orders", headers={"Authorization": f"Bearer {key}"})
    return r.status_code == 200


class TestSecretsShownOnce:
    WHY = (
        "the API key is shown only in the first answer and is not kept; if it was lost, issue "
        "a new one with POST /api/v1/suppliers/{id}/rotate-key (new Idempotency-Key)"
    )

    async def test_a_replayed_create_answers_without_the_key_and_says_why(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        body = {"name": "Acme Supply", "connector": "portal", "contact_email": "ops@acme.example"}
        first = await client.post("/api/v1/suppliers", json=body, headers=keyed(merchant, "s-1"))
        assert first.status_code == 201, first.text
        key = first.json()["api_key"]
        assert key.startswith(f"{SUPPLIER_KEY_PREFIX}_")
        assert first.json()["redacted"] is None
        assert await supplier_key_works(client, key)

        again = await client.post("/api/v1/suppliers", json=body, headers=keyed(merchant, "s-1"))
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        replay = again.json()
        assert replay["api_key"] is None
        assert replay["redacted"] == {"api_key": self.WHY}
        assert replay["supplier"] == first.json()["supplier"]
        async with db.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Supplier)) == 1

        [stored] = await stored_answers(db)
        assert key.encode() not in stored
        assert json.loads(stored)["api_key"] is None

    async def test_a_replayed_rotation_answers_without_the_new_key(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        created = await client.post(
            "/api/v1/suppliers",
            json={"name": "Acme Supply", "connector": "portal"},
            headers=merchant.headers,
        )
        supplier_id, old_key = created.json()["supplier"]["id"], created.json()["api_key"]
        path = f"/api/v1/suppliers/{supplier_id}/rotate-key"
        first = await client.post(path, headers=keyed(merchant, "r-1"))
        assert first.status_code == 200, first.text
        new_key = first.json()["api_key"]
        assert new_key != old_key
        again = await client.post(path, headers=keyed(merchant, "r-1"))
        assert (again.status_code, again.headers["idempotent-replayed"]) == (200, "true")
        assert again.json()["api_key"] is None
        assert again.json()["redacted"] == {"api_key": self.WHY}
        # The replay rotated nothing: the key of the first answer is the one that works.
        assert await supplier_key_works(client, new_key)
        assert not await supplier_key_works(client, old_key)
        [stored] = await stored_answers(db)
        assert new_key.encode() not in stored
        assert old_key.encode() not in stored

    async def test_answers_without_secrets_are_replayed_byte_for_byte(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        bad = {"name": "", "connector": "portal"}
        first = await client.post("/api/v1/suppliers", json=bad, headers=keyed(merchant, "b-1"))
        again = await client.post("/api/v1/suppliers", json=bad, headers=keyed(merchant, "b-1"))
        assert first.status_code == again.status_code == 400
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"


def test_settings_never_show_url_passwords() -> None:
    s = Settings(
        database_url="postgresql+asyncpg://dropship:pg-pass-1@db:5432/dropship",
        redis_url="redis://:redis-pass-2@cache:6379/0",
        smtp_url="smtp://mailer:smtp-pass-3@mail:587",
        secret_key="secret-key-4",
        shopify_api_secret="shopify-secret-5",
        stripe_webhook_secret="whsec-6",
        stripe_secret_key="sk_live_platform-9",
    )
    for shown in (repr(s), str(s)):
        for secret in (
            "pg-pass-1",
            "redis-pass-2",
            "smtp-pass-3",
            "secret-key-4",
            "secret-5",
            "whsec-6",
            "platform-9",
        ):
            assert secret not in shown
        assert "postgresql+asyncpg://dropship:***@db:5432/dropship" in shown
        assert "redis://:***@cache:6379/0" in shown
        assert "smtp://mailer:***@mail:587" in shown
    assert s.database_url == "postgresql+asyncpg://dropship:pg-pass-1@db:5432/dropship"
    with pytest.raises(ValueError, match="expected smtp:") as refused:
        Settings(smtp_url="ftp://mailer:smtp-pass-7@mail")
    assert "smtp-pass-7" not in str(refused.value)
    assert "smtp-pass-8" not in repr(SmtpTarget.parse("smtp://mailer:smtp-pass-8@mail:587"))


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, SHOP, auto_route=True)


@pytest.fixture
def busy_supplier() -> Iterator[SupplierSim]:
    """A supplier whose first answer is 503 with ``Retry-After: 900``; then it behaves."""
    sim = SupplierSim()

    def place(request: httpx.Request) -> httpx.Response:
        if not sim.requests:
            sim.requests.append(request)
            return httpx.Response(503, json={"error": "busy"}, headers={"Retry-After": "900"})
        return sim.place(request)

    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"{BASE_URL}/orders").mock(side_effect=place)
        yield sim


async def only_po(db: Database) -> PurchaseOrder | None:
    async with db.sessionmaker() as session:
        return await session.scalar(select(PurchaseOrder))


class TestPlacementBackoff:
    async def test_the_sweeper_and_a_duplicate_run_wait_for_retry_after(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        settings: Settings,
        busy_supplier: SupplierSim,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        await create_supplier(
            client, shop, name="RestCo", connector="rest_json", config=rest_config()
        )
        await import_catalog(client, shop, ["IPOD2008GREEN,RestCo,RC-GREEN,80.00,USD,10,3,*,1"])
        await send_order(client, line_items=[order_payload()["line_items"][0]])

        async def backing_off() -> PurchaseOrder | None:
            po = await only_po(db)
            return po if po is not None and po.next_attempt_at is not None else None

        po = await eventually(backing_off)
        assert po.next_attempt_at is not None
        assert (po.status, po.attempts, len(busy_supplier.requests)) == ("pending", 1, 1)
        ahead = (po.next_attempt_at - utcnow()).total_seconds()
        assert 890 < ahead <= 900

        # Whatever the relay hands the broker from now on (the delayed retry is already there).
        broker = client.app.state.workers.broker
        real = broker.enqueue
        handed: list[str] = []

        def spy(message: Any, **kwargs: Any) -> Any:
            if not kwargs.get("delay"):  # not a Retry scheduled by the first run
                handed.append(message.actor_name)
            return real(message, **kwargs)

        monkeypatch.setattr(broker, "enqueue", spy)
        ctx = TaskContext(settings=settings, db=db, box=client.app.state.services.box)
        await sweep(ctx, 0)
        client.app.state.workers.relay.wake()
        await eventually(lambda: outbox_empty(db))
        assert "purchase_order.place" not in handed
        # A duplicate message (or a re-enqueue) arriving early does nothing either.
        await placement.place(ctx, str(po.id))
        await ctx.aclose()
        assert len(busy_supplier.requests) == 1
        same = await only_po(db)
        assert same is not None
        assert (same.attempts, same.next_attempt_at) == (1, po.next_attempt_at)

        # Once the time has come, the sweeper places it (its delayed retry could be lost).
        async with db.transaction() as session:
            await session.execute(
                update(PurchaseOrder)
                .where(PurchaseOrder.id == po.id)
                .values(
                    next_attempt_at=utcnow() - timedelta(seconds=1),
                    updated_at=utcnow() - timedelta(seconds=1),
                )
            )
        await sweep(ctx, 0)
        client.app.state.workers.relay.wake()
        [placed] = await wait_pos(client, shop, lambda p: p[0]["status"] == "accepted")
        assert placed["attempts"] == 2
        assert len(busy_supplier.requests) == 2
        assert len(busy_supplier.orders) == 1
        done = await only_po(db)
        assert done is not None
        assert done.next_attempt_at is None
        await ctx.aclose()


class TestOneBackoff:
    def test_equal_jitter_between_half_and_the_whole_step(self) -> None:
        random.seed(6)
        draws = []
        for attempt in range(1, 12):
            step = min(10_000, 1_000 * 2 ** (attempt - 1))
            for _ in range(50):
                delay = backoff.backoff_ms(attempt, base_ms=1_000, cap_ms=10_000)
                assert step / 2 <= delay <= step
                draws.append(delay / step)
        # Spread over the upper half, not stuck at an end.
        assert min(draws) < 0.55
        assert max(draws) > 0.95
        # A huge attempt number neither overflows nor passes the cap.
        assert 5_000 <= backoff.backoff_ms(10**6, base_ms=1_000, cap_ms=10_000) <= 10_000

    def test_retry_after_is_a_floor_even_past_the_cap(self) -> None:
        assert backoff.backoff_ms(1, base_ms=1_000, cap_ms=10_000, floor_ms=900_000) == 900_000
        assert placement.retry_delay_ms(1, 900) == 900_000
        # Past a day, a day.
        assert placement.retry_delay_ms(1, 10**9) == placement.MAX_RETRY_AFTER_MS

    def test_every_caller_keeps_its_base_and_cap(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The top of the jitter range: the step itself.
        monkeypatch.setattr(backoff.random, "uniform", lambda low, high: high)
        assert [placement.retry_delay_ms(n) for n in (1, 2, 3, 11)] == [
            1_000,
            2_000,
            4_000,
            600_000,
        ]
        assert [mail_tasks.retry_delay_ms(n) for n in (1, 2, 10)] == [5_000, 10_000, 1_800_000]
        monkeypatch.setattr(backoff.random, "uniform", lambda low, high: low)
        assert placement.retry_delay_ms(3) == 2_000
        assert mail_tasks.retry_delay_ms(2) == 5_000

    async def test_the_relay_backs_off_with_the_same_function(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A relay whose database fails waits interval * 2**failures (equal jitter), at most
        30 s, as before."""
        waits: list[float] = []
        relay = OutboxRelay(None, broker=None, interval=0.2)  # type: ignore[arg-type]

        async def failing() -> int:
            if len(waits) >= 9:
                relay.stop()
            raise RuntimeError("database unreachable")

        async def no_sleep(seconds: float) -> None:
            waits.append(seconds)

        monkeypatch.setattr(relay, "relay_once", failing)
        monkeypatch.setattr(relay, "_sleep", no_sleep)
        monkeypatch.setattr(backoff.random, "uniform", lambda low, high: high)
        await relay.run()
        assert waits == [0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]
