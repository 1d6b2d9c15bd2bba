"""``GET /metrics``: Prometheus' text format, parsed with the official client's parser.

Counters are per process and other tests move them too, so a test asserts what it added (the
difference between two scrapes); gauges are read from this test's own database and broker, so
they are asserted as they are.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any, cast

import dramatiq
import httpx
import pytest
import respx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from app.db import Database, utcnow
from app.exceptions.models import ExceptionCase
from app.jobs.models import OutboxMessage
from app.jobs.outbox import enqueue
from app.jobs.task import TaskContext
from app.mail.service import store_email
from app.mail.tasks import send_email
from app.security import SecretBox
from app.settings import Settings
from connectors.base import RetryableConnectorError
from connectors.portal import PortalConnector
from connectors.rest_json import RestJsonConnector
from connectors.shopify_admin import (
    BudgetExceeded,
    MemoryCostStore,
    ShopifyAdmin,
    ShopifyAuthError,
    admin_http_client,
)
from dropship.asgi import create_app
from dropship.simulators import StripeSim
from tests.conftest import SHOPIFY_SECRET, MerchantHandle
from tests.support import stripe as st
from tests.support.shopify import order_payload, webhook_headers
from tests.support.shopify_admin import ShopifyAdminSim, throttled, unauthorized
from tests.support.wait import eventually
from tests.test_connector_rest_json import BASE, purchase_order
from workers.broker import build_broker, worker_tasks
from workers.metrics import depth_reader
from workers.relay import OutboxRelay

Client = AsyncTestClient[Litestar]
#: ``(sample name, sorted labels) -> value``
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    """The metric family names, and every sample."""
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return names, samples


async def scrape(client: Client, **headers: str) -> tuple[set[str], Samples]:
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(r.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def api(settings: Settings) -> Litestar:
    """The API alone (workers elsewhere): this test relays and runs the jobs itself."""
    return create_app(settings, run_workers=False, configure_logs=False)


@pytest.fixture
async def client(api: Litestar) -> AsyncIterator[Client]:
    async with AsyncTestClient(api, timeout=30) as c:
        yield c


@pytest.fixture
def broker(settings: Settings, api: Litestar) -> Iterator[dramatiq.Broker]:
    broker = build_broker(settings)
    if settings.redis_url is None:
        # The in-process broker's depths, as ``dropship serve`` wires them when it runs workers.
        api.state.queue_depths = depth_reader(broker, None)
    yield broker
    broker.close()


async def test_a_webhook_then_its_job_in_the_metrics(
    client: Client, merchant: MerchantHandle, db: Database, broker: dramatiq.Broker
) -> None:
    names, before = await scrape(client)
    assert {
        "dropship_webhooks",
        "dropship_webhook_duration_seconds",
        "dropship_jobs",
        "dropship_job_duration_seconds",
        "dropship_emails",
        "dropship_refunds",
        "dropship_placements",
        "dropship_placement_duration_seconds",
        "dropship_shopify_calls",
        "dropship_shopify_budget_waits",
        "dropship_outbox_depth",
        "dropship_outbox_oldest_age_seconds",
        "dropship_tracking_poll_lag_seconds",
        "dropship_exceptions_open",
        "dropship_queue_depth",
    } <= names
    assert value(before, "dropship_outbox_depth") == 0
    assert value(before, "dropship_outbox_oldest_age_seconds") == 0
    assert value(before, "dropship_tracking_poll_lag_seconds") == 0

    body = json.dumps(order_payload()).encode()
    r = await client.post(
        "/webhooks/shopify", content=body, headers=webhook_headers(body, secret=SHOPIFY_SECRET)
    )
    assert r.json() == {"status": "accepted"}
    forged = webhook_headers(body, secret="not-the-secret", topic="made/up")
    assert (await client.post("/webhooks/shopify", content=body, headers=forged)).status_code == 401

    _, stored = await scrape(client)
    webhooks = "dropship_webhooks_total"
    assert (
        value(stored, webhooks, topic="orders/create", outcome="accepted")
        - value(before, webhooks, topic="orders/create", outcome="accepted")
        == 1
    )
    # An unknown topic is not a label of its own: labels stay few whatever is sent.
    assert (
        value(stored, webhooks, topic="other", outcome="unauthorized")
        - value(before, webhooks, topic="other", outcome="unauthorized")
        == 1
    )
    count = "dropship_webhook_duration_seconds_count"
    assert value(stored, count) - value(before, count) == 2
    assert value(stored, "dropship_outbox_depth") == 1  # its webhook.process job
    assert value(stored, "dropship_outbox_oldest_age_seconds") >= 0
    assert value(stored, "dropship_queue_depth", queue="intake", state="ready") == 0

    assert await OutboxRelay(db, broker).relay_once() == 1
    _, relayed = await scrape(client)
    assert value(relayed, "dropship_outbox_depth") == 0
    assert {
        labels: n for (name, labels), n in relayed.items() if name == "dropship_queue_depth" and n
    } == {(("queue", "intake"), ("state", "ready")): 1}

    ok = {"task": "webhook.process", "outcome": "ok"}
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:

        async def ran() -> bool:
            _, now = await scrape(client)
            return value(now, "dropship_jobs_total", **ok) > value(
                before, "dropship_jobs_total", **ok
            )

        await eventually(ran, timeout=60)
    finally:
        worker.stop()
    _, after = await scrape(client)
    assert (
        value(after, "dropship_jobs_total", **ok) - value(before, "dropship_jobs_total", **ok) == 1
    )
    runs = "dropship_job_duration_seconds_count"
    task = {"task": "webhook.process"}
    assert value(after, runs, **task) - value(before, runs, **task) == 1
    assert value(after, "dropship_queue_depth", queue="intake", state="ready") == 0
    # No tenant data in any label: no merchant id, no shop.
    text = (await client.get("/metrics")).text
    assert str(merchant.id) not in text
    assert merchant.shop not in text


async def test_placements_are_counted_and_timed_by_connector_kind() -> None:
    placed = {"connector": "portal", "outcome": "placed"}
    retryable = {"connector": "rest_json", "outcome": "retryable"}
    _, before = parse(_exposition())
    async with httpx.AsyncClient() as http:
        await PortalConnector({}, http).place_order(purchase_order())
        rest = RestJsonConnector(RestJsonConnector.validate_config({"base_url": BASE}), http)
        with respx.mock(base_url=BASE) as supplier:
            supplier.post("/orders").respond(503)
            with pytest.raises(RetryableConnectorError):
                await rest.place_order(purchase_order())
    _, after = parse(_exposition())
    total = "dropship_placements_total"
    assert value(after, total, **placed) - value(before, total, **placed) == 1
    assert value(after, total, **retryable) - value(before, total, **retryable) == 1
    count = "dropship_placement_duration_seconds_count"
    for kind in ("portal", "rest_json"):
        assert value(after, count, connector=kind) - value(before, count, connector=kind) == 1


def _exposition() -> str:
    from prometheus_client import REGISTRY, generate_latest

    return generate_latest(REGISTRY).decode()


async def test_a_metrics_token_is_asked_for_when_set(settings: Settings) -> None:
    guarded = settings.model_copy(update={"metrics_token": "scrape-secret"})
    app = create_app(guarded, run_workers=False, configure_logs=False)
    async with AsyncTestClient(app, timeout=30) as c:
        refused = await c.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["detail"] == (
            "GET /metrics needs Authorization: Bearer <metrics token>"
        )
        wrong = await c.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        names, _ = await scrape(c, Authorization="Bearer scrape-secret")
        assert "dropship_outbox_depth" in names


def test_metrics_is_not_in_the_openapi_document(api: Litestar) -> None:
    schema: Any = api.openapi_schema
    assert "/metrics" not in (schema.paths or {})


async def test_shopify_calls_throttling_budget_waits_and_refusals_are_counted() -> None:
    shop, version = "acme-store.myshopify.com", "2025-10"
    endpoint = f"http://shopify.test/{shop}/admin/api/{version}/graphql.json"
    order, line = "gid://shopify/Order/450789469", "gid://shopify/LineItem/466157049"
    simulator = ShopifyAdminSim()
    simulator.add_order(order, {line: 1})
    api = ShopifyAdmin(
        admin_http_client("http://shopify.test/{shop}/admin/api/{version}"),
        shop,
        "shpat_0123456789abcdef0123456789abcdef",
        version,
        MemoryCostStore(),
    )
    _, before = parse(_exposition())
    with respx.mock(assert_all_called=False) as mock:
        mock.post(endpoint).mock(side_effect=simulator.handle)
        await api.fulfillment_orders(order)
        simulator.overrides["OrderFulfillmentOrders"] = [lambda: throttled(530, 66, 50)]
        with pytest.raises(RetryableConnectorError):
            await api.fulfillment_orders(order)
        with pytest.raises(BudgetExceeded):  # held back, not sent
            await api.fulfillment_orders(order)
        api.costs = MemoryCostStore()
        simulator.overrides["OrderFulfillments"] = [unauthorized]
        with pytest.raises(ShopifyAuthError):
            await api.order_fulfillments(order)
    _, after = parse(_exposition())

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    calls = "dropship_shopify_calls_total"
    assert added(calls, operation="OrderFulfillmentOrders", outcome="ok") == 1
    assert added(calls, operation="OrderFulfillmentOrders", outcome="throttled") == 1
    assert added(calls, operation="OrderFulfillments", outcome="refused") == 1
    waits = "dropship_shopify_budget_waits_total"
    assert added(waits, operation="OrderFulfillmentOrders") == 1
    # No shop in any label.
    assert shop not in _exposition()


async def test_emails_are_counted_by_outcome(
    settings: Settings, db: Database, merchant: MerchantHandle
) -> None:
    ctx = TaskContext(settings=settings, db=db, box=SecretBox(settings.resolved_secret_key()))
    ids = []
    async with db.transaction() as session:
        for key, to in (("good", "ada@example.com"), ("bad", "ada@example.com\r\nBcc: x@y")):
            email_id = await store_email(
                session,
                merchant_id=cast(uuid.UUID, merchant.id),
                key=key,
                kind="probe",
                to=to,
                sender="orders@example.com",
                content=("Hello", "Hello there", None),
            )
            ids.append(str(email_id))
    _, before = parse(_exposition())
    for email_id in ids:
        await send_email(ctx, email_id)
    _, after = parse(_exposition())
    emails = "dropship_emails_total"
    for outcome, n in (("sent", 1), ("failed", 1), ("retry", 0)):
        assert value(after, emails, outcome=outcome) - value(before, emails, outcome=outcome) == n
    await ctx.aclose()


class TestRefunds:
    @pytest.fixture
    def sim(self) -> Iterator[StripeSim]:
        yield from st.serve()

    @pytest.fixture
    def client_app(self, settings: Settings, sim: StripeSim) -> Litestar:
        return create_app(st.stripe_settings(settings), run_workers=True, configure_logs=False)

    @pytest.fixture
    async def client(self, client_app: Litestar) -> AsyncIterator[Client]:
        async with AsyncTestClient(client_app, timeout=30) as c:
            yield c

    async def test_a_refund_sent_is_counted(
        self, client: Client, merchant: MerchantHandle, sim: StripeSim
    ) -> None:
        account = await st.connect(client, merchant, sim)
        order = await st.paid_order(client, merchant, sim, account)
        _, before = await scrape(client)
        made = await st.refund(client, merchant, order["id"], amount="7.00")
        await st.settled(client, merchant, made["id"])
        _, after = await scrape(client)
        refunds = "dropship_refunds_total"
        for outcome, n in (("sent", 1), ("retry", 0), ("given_up", 0), ("refused", 0)):
            assert (
                value(after, refunds, outcome=outcome) - value(before, refunds, outcome=outcome)
                == n
            ), outcome
        ok = {"task": "refunds.issue", "outcome": "ok"}
        assert (
            value(after, "dropship_jobs_total", **ok) - value(before, "dropship_jobs_total", **ok)
            == 1
        )


async def test_the_gauges_are_read_from_the_database_when_scraped(
    client: Client, db: Database, merchant: MerchantHandle
) -> None:
    now = utcnow()
    async with db.transaction() as session:
        await enqueue(session, worker_tasks().tasks["email.send"], str(uuid.uuid4()))
        await enqueue(session, worker_tasks().tasks["email.send"], str(uuid.uuid4()))
        await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id
                == select(OutboxMessage.id).order_by(OutboxMessage.id).limit(1).scalar_subquery()
            )
            .values(available_at=now - timedelta(seconds=120))
        )
        for kind, resolved in (("probe_a", None), ("probe_a", None), ("probe_b", now)):
            session.add(
                ExceptionCase(
                    merchant_id=merchant.id, kind=kind, reason="probe", resolved_at=resolved
                )
            )
    _, samples = await scrape(client)
    assert value(samples, "dropship_outbox_depth") == 2
    age = value(samples, "dropship_outbox_oldest_age_seconds")
    assert 120 <= age < 120 + 600  # the scrape came after; a slow box is not a failure
    opened = {
        labels: n for (name, labels), n in samples.items() if name == "dropship_exceptions_open"
    }
    assert opened == {(("kind", "probe_a"),): 2}


@pytest.mark.parametrize(("port", "ok"), [(0, False), (1, True), (65535, True), (65536, False)])
def test_the_worker_metrics_port_is_a_tcp_port(port: int, ok: bool) -> None:
    from pydantic import ValidationError

    if ok:
        assert Settings(metrics_port=port).metrics_port == port
    else:
        with pytest.raises(ValidationError, match="metrics_port"):
            Settings(metrics_port=port)
