"""``GET /metrics``: Prometheus' text format, parsed with the official client's parser.

Counters are per process and other tests move them too, so a test asserts what it added (the
difference between two scrapes); gauges are read from this test's own database and broker, so
they are asserted as they are.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import dramatiq
import httpx
import pytest
import respx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from app.db import Database
from app.settings import Settings
from connectors.base import RetryableConnectorError
from connectors.portal import PortalConnector
from connectors.rest_json import RestJsonConnector
from dropship.asgi import create_app
from tests.conftest import SHOPIFY_SECRET, MerchantHandle
from tests.support.shopify import order_payload, webhook_headers
from tests.support.wait import eventually
from tests.test_connector_rest_json import BASE, purchase_order
from workers.broker import build_broker
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
