"""No accepted webhook is lost and no work is doubled when the broker, a worker or the server
fails. Each test breaks a real component and checks the end state."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from app.db import Database
from app.jobs.models import OutboxMessage
from app.orders.models import Order
from app.settings import Settings
from app.timeline.models import OrderEvent
from app.webhooks.models import WebhookDelivery
from dropship.asgi import create_app
from tests.conftest import SHOPIFY_SECRET, MerchantHandle
from tests.support import services as svc
from tests.support.broker import losing_jobs, outbox_empty
from tests.support.processes import dropship_env, start_dropship
from tests.support.shopify import order_payload, webhook_headers
from tests.support.wait import eventually

Client = AsyncTestClient[Litestar]


async def send(client: Client, n: int, *, first_id: int = 1000) -> list[int]:
    """Send ``n`` distinct orders/create webhooks; return the status codes."""
    codes = []
    for i in range(n):
        body = json.dumps(order_payload(id=first_id + i, name=f"#{first_id + i}")).encode()
        r = await client.post(
            "/webhooks/shopify", content=body, headers=webhook_headers(body, secret=SHOPIFY_SECRET)
        )
        codes.append(r.status_code)
    return codes


async def scalar_count(db: Database, model: Any, *where: Any) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def orders_count(db: Database) -> int:
    return await scalar_count(db, Order)


class TestBrokerOutage:
    async def test_webhooks_accepted_while_broker_refuses_all_become_orders(
        self, client: Client, merchant: MerchantHandle, db: Database, monkeypatch: Any
    ) -> None:
        broker = client.app.state.workers.broker
        real_enqueue = broker.enqueue
        refused = 0

        def down(*args: Any, **kwargs: Any) -> Any:
            nonlocal refused
            refused += 1
            raise ConnectionError("broker is down")

        monkeypatch.setattr(broker, "enqueue", down)
        assert await send(client, 20) == [200] * 20
        # Durably stored, waiting in the outbox; nothing processed.
        await eventually(lambda: _gt(lambda: refused, 0))
        assert await scalar_count(db, WebhookDelivery) == 20
        waiting = OutboxMessage.actor == "webhook.process"
        assert await scalar_count(db, OutboxMessage, waiting) == 20
        assert await orders_count(db) == 0

        monkeypatch.setattr(broker, "enqueue", real_enqueue)
        client.app.state.workers.relay.wake()
        await eventually(lambda: _equals(orders_count(db), 20), timeout=30)
        assert await scalar_count(db, OutboxMessage, OutboxMessage.actor == "webhook.process") == 0

    @pytest.mark.parametrize("backend", ["postgres"], indirect=True)
    async def test_redis_killed_and_restarted_loses_nothing(
        self,
        request: pytest.FixtureRequest,
        client: Client,
        merchant: MerchantHandle,
        db: Database,
    ) -> None:
        redis_server: svc.Redis = request.getfixturevalue("redis_server")
        redis_server.stop()  # SIGKILL: the broker disappears mid-run
        try:
            assert await send(client, 15) == [200] * 15
            await asyncio.sleep(0.5)
            assert await scalar_count(db, WebhookDelivery) == 15
            assert await orders_count(db) == 0
        finally:
            redis_server.start()
        await eventually(lambda: _equals(orders_count(db), 15), timeout=60)


class TestWorkerFailure:
    async def test_transient_failure_mid_task_rolls_back_and_retries_once_more(
        self, client: Client, merchant: MerchantHandle, db: Database, monkeypatch: Any
    ) -> None:
        import app.orders.service as order_service

        real = order_service.publish
        failures = 0

        async def flaky(*args: Any, **kwargs: Any) -> None:
            nonlocal failures
            if failures == 0:
                failures += 1
                # The order and its timeline were already written in this transaction (the
                # ``order.created`` event comes after them): they must roll back.
                raise OperationalError("INSERT", {}, Exception("connection reset"))
            await real(*args, **kwargs)

        monkeypatch.setattr(order_service, "publish", flaky)
        assert await send(client, 1) == [200]
        await eventually(lambda: _equals(orders_count(db), 1), timeout=30)
        assert failures == 1
        await eventually(
            lambda: _equals(
                scalar_count(db, WebhookDelivery, WebhookDelivery.processed_at.is_(None)), 0
            )
        )
        assert await scalar_count(db, OrderEvent, OrderEvent.type == "order.received") == 1

    async def test_lost_job_is_recovered_by_the_sweeper(
        self, client: Client, merchant: MerchantHandle, db: Database, settings: Settings
    ) -> None:
        with losing_jobs(client.app.state.workers.broker, "webhook.process") as lost:
            assert await send(client, 3) == [200] * 3
            await eventually(lambda: _gt(lambda: len(lost), 2))
        assert await orders_count(db) == 0

        from app.jobs.task import TaskContext
        from workers.maintenance import sweep

        ctx = TaskContext(
            settings=settings.model_copy(update={"stale_after": 0}),
            db=db,
            box=None,  # type: ignore[arg-type]
        )
        await sweep(ctx)
        client.app.state.workers.relay.wake()
        await eventually(lambda: _equals(orders_count(db), 3), timeout=30)


class TestServerCrash:
    async def test_every_2xx_survives_sigkill_of_the_server(
        self, settings: Settings, merchant: MerchantHandle, db: Database, tmp_path: Any
    ) -> None:
        """Run the real server in a subprocess, SIGKILL it right after it answered, restart:
        every webhook that got a 2xx becomes an order."""
        port = svc.free_port()
        proc = start_dropship(
            "serve", "--port", str(port), env=dropship_env(settings, tmp_path / "var")
        )
        accepted = 0
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                await eventually(lambda: _up(http), timeout=60)  # a cold start on a loaded CI box

                async def one(i: int) -> int:
                    body = json.dumps(order_payload(id=5000 + i, name=f"#{5000 + i}")).encode()
                    r = await http.post(
                        "/webhooks/shopify",
                        content=body,
                        headers=webhook_headers(body, secret=SHOPIFY_SECRET),
                    )
                    return r.status_code

                codes = await asyncio.gather(*(one(i) for i in range(40)))
                accepted = codes.count(200)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert accepted == 40
        assert await scalar_count(db, WebhookDelivery) == 40

        # A new process (here: the app in-process) picks the work up from the outbox.
        app = create_app(settings, run_workers=True, configure_logs=False)
        async with AsyncTestClient(app, timeout=30):
            await eventually(lambda: _equals(orders_count(db), 40), timeout=60)


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def _gt(get: Any, n: int) -> bool:
    return bool(get() > n)


async def _up(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/health/live")).status_code == 200
    except httpx.TransportError:
        return False


class TestOutboxRelay:
    async def test_job_for_an_unknown_actor_is_parked_and_does_not_block_others(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        from app.jobs.outbox import enqueue
        from app.jobs.task import Task

        async def nobody(*args: Any) -> None:
            pass

        async with db.transaction() as session:  # a task this code never declared
            await enqueue(session, Task("nobody.knows.me", nobody), "x")
        assert await send(client, 2) == [200, 200]
        await eventually(lambda: _equals(orders_count(db), 2), timeout=30)
        async with db.sessionmaker() as session:
            parked = await session.scalar(
                select(OutboxMessage).where(OutboxMessage.actor == "nobody.knows.me")
            )
        assert parked is not None
        assert parked.last_error == "unknown actor"
        assert parked.attempts == 1


class TestDatabaseOutage:
    async def test_webhook_is_503_when_it_cannot_be_stored(
        self, client: Client, merchant: MerchantHandle, db: Database, monkeypatch: Any
    ) -> None:
        writer = client.app.state.services.ingest

        async def broken(batch: Any) -> Any:
            raise OperationalError("INSERT", {}, Exception("database is down"))

        monkeypatch.setattr(writer, "_write_sqlite", broken)
        monkeypatch.setattr(writer, "_write_pg", lambda conn, batch: broken(batch))
        assert await send(client, 1) == [503]
        monkeypatch.undo()
        assert await scalar_count(db, WebhookDelivery) == 0
        # Shopify's retry then succeeds.
        assert await send(client, 1) == [200]


class TestPoisonDelivery:
    async def test_a_delivery_that_keeps_failing_is_given_up_and_reported(
        self,
        client: Client,
        merchant: MerchantHandle,
        db: Database,
        settings: Settings,
        monkeypatch: Any,
    ) -> None:
        """A bug in a handler fails the same delivery every time: each failed run is counted,
        the sweeper retries it until the limit, then stops and a person is told."""
        from app.jobs.task import TaskContext
        from workers.maintenance import sweep

        monkeypatch.setattr("app.webhooks.tasks.MAX_FAILURES", 3)

        async def buggy(*args: Any) -> str:
            raise RuntimeError("a bug in the handler")

        monkeypatch.setattr("app.webhooks.tasks._handle", buggy)
        assert await send(client, 1) == [200]

        async def failures(n: int) -> bool:
            async with db.sessionmaker() as session:
                delivery = await session.scalar(select(WebhookDelivery))
            return delivery is not None and delivery.failures == n

        await eventually(lambda: failures(1))
        ctx = TaskContext(settings=settings, db=db, box=client.app.state.services.box)
        relay = client.app.state.workers.relay
        for n in (2, 3):
            await sweep(ctx, 0)
            relay.wake()
            await eventually(lambda n=n: failures(n))

        with losing_jobs(client.app.state.workers.broker, "webhook.process") as lost:
            await sweep(ctx, 0)
            relay.wake()
            await eventually(lambda: outbox_empty(db))
        assert lost == []  # at the limit: no longer retried
        async with db.sessionmaker() as session:
            delivery = await session.scalar(select(WebhookDelivery))
        assert delivery is not None
        assert delivery.processed_at is None
        assert "a bug in the handler" in (delivery.outcome or "")
        r = await client.get("/api/v1/exceptions", headers=merchant.headers)
        [case] = [c for c in r.json()["items"] if c["kind"] == "webhook_failed"]
        assert "failed 3 times" in case["reason"]
        assert "a bug in the handler" in case["reason"]

    async def test_transient_trouble_is_retried_and_not_counted_against_the_delivery(
        self, client: Client, merchant: MerchantHandle, db: Database, monkeypatch: Any
    ) -> None:
        import app.webhooks.tasks as webhook_tasks

        real = webhook_tasks._handle
        calls: list[int] = []

        async def flaky(*args: Any) -> str:
            calls.append(1)
            if len(calls) == 1:
                raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
            return str(await real(*args))

        monkeypatch.setattr(webhook_tasks, "_handle", flaky)
        assert await send(client, 1) == [200]
        await eventually(lambda: _equals(orders_count(db), 1), timeout=30)
        async with db.sessionmaker() as session:
            delivery = await session.scalar(select(WebhookDelivery))
        assert delivery is not None
        assert delivery.failures == 0
        assert len(calls) == 2


def test_postgres_deadlocks_and_serialization_failures_are_transient() -> None:
    from sqlalchemy.exc import DBAPIError

    from app.jobs.errors import is_transient

    class PgError(Exception):
        def __init__(self, code: str) -> None:
            super().__init__(code)
            self.pgcode = self.sqlstate = code

    for code, expected in (("40P01", True), ("40001", True), ("23505", False)):
        exc = DBAPIError("UPDATE x", {}, PgError(code))
        assert is_transient(exc) is expected, code
