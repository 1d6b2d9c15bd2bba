"""Outbound merchant webhooks: registered endpoints hear of each lifecycle event once per event,
signed as Standard Webhooks says (checked with the ``standardwebhooks`` package, an independent
verifier), over real HTTP to a receiver on 127.0.0.1; retried under the same id; disabled, with
the merchant told, after a day of failures; never another merchant's events."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update
from standardwebhooks import Webhook

from app.db import Database, utcnow
from app.events.models import LifecycleEvent
from app.jobs.task import StaleWindow, TaskContext
from app.mail.models import OutgoingEmail
from app.outbound import service
from app.outbound.models import EndpointDelivery, WebhookEndpoint
from app.outbound.targets import TargetRefused, check_target, check_url
from app.outbound.tasks import LEASE, _undelivered, deliver, deliveries_for_event
from app.purchasing.models import Shipment
from app.security import SecretBox
from app.settings import Settings
from tests.conftest import MerchantHandle, make_merchant
from tests.support.orders import order_body
from tests.support.portal import bearer, line, offer, portal_supplier, routed_order
from tests.support.wait import eventually
from tests.support.webhook_receiver import Received, Receiver, webhook_receiver
from workers.maintenance import sweep

Client = AsyncTestClient[Litestar]
API = "/api/v1/webhook-endpoints"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The receiver is on 127.0.0.1 over http: the operator's switch for that is on."""
    return settings.model_copy(update={"outbound_allow_http": True})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(
        db, "hooks-shop.myshopify.com", "owner@hooks.example", auto_route=True
    )


@pytest.fixture
async def rival(db: Database) -> MerchantHandle:
    return await make_merchant(db, "rival-hooks.myshopify.com", "rival@hooks.example")


async def register(
    client: Client, shop: MerchantHandle, url: str, events: list[str], **extra: Any
) -> dict[str, Any]:
    r = await client.post(API, json={"url": url, "events": events, **extra}, headers=shop.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def verified(secret: str, request: Received) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


async def deliveries(client: Client, shop: MerchantHandle, endpoint_id: str) -> list[Any]:
    r = await client.get(f"{API}/{endpoint_id}/deliveries", headers=shop.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def test_a_shipped_order_reaches_the_endpoint_once_per_event_signed_and_retried_under_one_id(
    client: Client,
    db: Database,
    settings: Settings,
    shop: MerchantHandle,
    rival: MerchantHandle,
    receiver: Receiver,
) -> None:
    receiver.fail_once.add(
        "shipment.shipped"
    )  # order.created goes through, the shipment fails once
    erp = await register(
        client, shop, f"{receiver.base_url}/erp", ["order.created", "shipment.shipped"]
    )
    crm = await register(client, shop, f"{receiver.base_url}/crm", ["order.cancelled"])
    await register(client, rival, f"{receiver.base_url}/rival", ["*"])
    secret = erp["secret"]

    supplier = await portal_supplier(client, shop, "Alpha")
    await offer(client, shop, supplier["supplier"]["id"], "RED", stock=5)
    order_id, [po] = await routed_order(client, shop, "HOOK-1", [line("RED", 2)])
    r = await client.post(
        f"/supplier/v1/orders/{po['id']}/shipments",
        json={"carrier": "UPS", "tracking_number": "1Z999AA10123456784"},
        headers=bearer(supplier["api_key"]),
    )
    assert r.status_code == 201, r.text
    shipment_id = r.json()["id"]

    # The shipment's retry comes 2.5 to 5 s later (the first step of the backoff).
    await eventually(lambda: _n(receiver, "/erp", 3), timeout=30)
    got = receiver.of_type("/erp", "order.created") + receiver.of_type("/erp", "shipment.shipped")
    created, shipped_failed, shipped = (verified(secret, req) for req in got)
    assert [req.answered for req in got] == [200, 500, 200]

    async with db.sessionmaker() as session:
        events = {
            e.type: e
            for e in await session.scalars(
                select(LifecycleEvent).where(LifecycleEvent.order_id == uuid.UUID(order_id))
            )
        }
        stored = await session.get(Shipment, uuid.UUID(shipment_id))
        assert stored is not None
    ship_event = events["shipment.shipped"]
    assert shipped_failed == shipped
    assert shipped == {
        "id": f"evt_{ship_event.id}",
        "type": "shipment.shipped",
        "timestamp": ship_event.created_at.isoformat().replace("+00:00", "Z"),
        "data": {
            **shipped["data"],  # the event's own fields, checked below
            "order": {
                "id": order_id,
                "name": "HOOK-1",
                "reference": "HOOK-1",
                "shopify_order_id": None,
                "source": "manual",
                "status": shipped["data"]["order"]["status"],
                "currency": "USD",
                "total_price": shipped["data"]["order"]["total_price"],
                "placed_at": shipped["data"]["order"]["placed_at"],
                "cancelled_at": None,
            },
            "purchase_order": {
                "id": po["id"],
                "number": po["number"],
                "status": "shipped",
                "supplier_id": supplier["supplier"]["id"],
                "supplier_reference": po["supplier_reference"],
                "placed_at": shipped["data"]["purchase_order"]["placed_at"],
            },
            "shipment": {
                "id": shipment_id,
                "purchase_order_id": po["id"],
                "carrier": "UPS",
                "tracking_number": "1Z999AA10123456784",
                "tracking_url": stored.tracking_url,
                "status": "shipped",
                "shipped_at": stored.shipped_at.isoformat().replace("+00:00", "Z"),
                "delivered_at": None,
                "estimated_delivery_at": None,
            },
        },
    }
    assert stored.tracking_url is not None
    assert "1Z999AA10123456784" in stored.tracking_url
    assert shipped["data"]["shipment_id"] == shipment_id
    assert shipped["data"]["purchase_order_id"] == po["id"]
    assert created["type"] == "order.created"
    assert created["id"] == f"evt_{events['order.created'].id}"
    assert created["data"]["order"]["name"] == "HOOK-1"
    assert "shipment" not in created["data"]
    assert "purchase_order" not in created["data"]

    # The same webhook-id on both attempts of the shipment, each with its own timestamp and
    # signature; the order's has another id.
    first, retry = got[1].headers, got[2].headers
    assert first["webhook-id"] == retry["webhook-id"] == f"evt_{ship_event.id}"
    assert got[0].headers["webhook-id"] == f"evt_{events['order.created'].id}"
    assert int(retry["webhook-timestamp"]) > int(first["webhook-timestamp"])
    assert first["webhook-signature"] != retry["webhook-signature"]
    assert got[1].body == got[2].body
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(base64.b64encode(b"\x01" * 32).decode()).verify(got[2].body, got[2].headers)

    # The delivery log, newest first, with every attempt.
    log = await deliveries(client, shop, erp["endpoint"]["id"])
    assert [(d["event_type"], d["status"], d["attempts"], d["last_status_code"]) for d in log] == [
        ("shipment.shipped", "delivered", 2, 200),
        ("order.created", "delivered", 1, 200),
    ]
    assert [a["status_code"] for a in log[0]["attempt_log"]] == [200, 500]
    assert log[0]["attempt_log"][1]["response_excerpt"] == "receiver is down"
    assert log[0]["message_id"] == f"evt_{ship_event.id}"
    assert log[0]["payload"] == shipped
    assert log[0]["next_attempt_at"] is None
    assert log[0]["last_error"] is None

    # Not subscribed: nothing. Another merchant's endpoint: none of this merchant's events.
    assert await deliveries(client, shop, crm["endpoint"]["id"]) == []
    assert receiver.at("/crm") == []
    assert receiver.at("/rival") == []

    # The subscriber handling the event again (at least once) adds no delivery and no request.
    ctx = TaskContext(settings, db, SecretBox(settings.resolved_secret_key()))
    async with db.transaction() as session:
        event = await session.get(LifecycleEvent, ship_event.id)
        assert event is not None
        await deliveries_for_event(ctx, session, event)
    async with db.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(EndpointDelivery))
    assert count == 2
    assert len(receiver.at("/erp")) == 3
    # The task run again once delivered (a duplicate job) sends nothing.
    await deliver(ctx, log[0]["id"])
    assert len(receiver.at("/erp")) == 3

    # A worker that died after the receiver's 2xx and before our commit leaves the delivery
    # claimed: left alone during the lease, sent again by the sweeper after it, same webhook-id.
    order_delivery = uuid.UUID(log[1]["id"])
    for claimed, swept in [(utcnow(), False), (utcnow() - LEASE - timedelta(seconds=5), True)]:
        async with db.transaction() as session:
            await session.execute(
                update(EndpointDelivery)
                .where(EndpointDelivery.id == order_delivery)
                .values(status="pending", delivered_at=None, claimed_at=claimed)
            )
            now = utcnow()
            window = StaleWindow(now=now, cutoff=now, limit=100)
            assert (order_delivery in await _undelivered(session, window)) is swept
    await sweep(TaskContext(settings.model_copy(update={"stale_after": 0}), db, ctx.box))
    client.app.state.workers.relay.wake()
    again = await eventually(lambda: _n(receiver, "/erp", 4))
    assert again[3].headers["webhook-id"] == got[0].headers["webhook-id"]
    assert verified(secret, again[3]) == created
    [_, resent] = await eventually(lambda: _delivered(client, shop, erp["endpoint"]["id"]))
    assert (resent["id"], resent["attempts"]) == (str(order_delivery), 2)


async def _delivered(client: Client, shop: MerchantHandle, endpoint_id: str) -> list[Any] | None:
    log = await deliveries(client, shop, endpoint_id)
    return log if all(d["status"] == "delivered" for d in log) else None


async def _n(receiver: Receiver, path: str, n: int) -> list[Received] | None:
    got = receiver.at(path)
    assert len(got) <= n, [g.body for g in got]
    return got if len(got) == n else None


async def test_an_endpoint_failing_for_a_day_is_disabled_and_the_merchant_told_once(
    client: Client, db: Database, settings: Settings, shop: MerchantHandle, receiver: Receiver
) -> None:
    receiver.always["/down"] = 503
    url = f"{receiver.base_url}/down"
    hook = await register(client, shop, url, ["order.created"])
    endpoint_id = hook["endpoint"]["id"]
    r = await client.post("/api/v1/orders", json=order_body("DOWN-1"), headers=shop.headers)
    assert r.status_code == 201, r.text

    async def first_failure() -> list[Any] | None:
        log = await deliveries(client, shop, endpoint_id)
        return log if log and log[0]["attempts"] == 1 and log[0]["next_attempt_at"] else None

    [delivery] = await eventually(first_failure)
    assert (delivery["status"], delivery["last_status_code"]) == ("pending", 503)
    assert delivery["last_error"] == "HTTP 503 receiver is down"
    verified(hook["secret"], receiver.at("/down")[0])

    # A day of failures, as if it had passed: the next failed attempt disables the endpoint.
    async with db.transaction() as session:
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == uuid.UUID(endpoint_id))
            .values(
                failing_since=datetime.now(UTC) - timedelta(hours=25),
                consecutive_failures=service.DISABLE_MIN_FAILURES - 1,
            )
        )
    r = await client.post(
        f"{API}/{endpoint_id}/deliveries/{delivery['id']}/retry", headers=shop.headers
    )
    assert r.status_code == 202, r.text

    async def disabled() -> dict[str, Any] | None:
        r = await client.get(f"{API}/{endpoint_id}", headers=shop.headers)
        return dict(r.json()) if not r.json()["enabled"] else None

    endpoint = await eventually(disabled, timeout=30)
    assert endpoint["disabled_reason"].startswith("every attempt failed since ")
    assert endpoint["consecutive_failures"] == service.DISABLE_MIN_FAILURES
    [delivery] = await deliveries(client, shop, endpoint_id)
    assert (delivery["status"], delivery["attempts"]) == ("failed", 2)
    assert delivery["last_error"] == "HTTP 503 receiver is down"

    r = await client.get("/api/v1/exceptions", headers=shop.headers)
    cases = [c for c in r.json()["items"] if c["kind"] == "webhook_endpoint_disabled"]
    assert [(c["order_id"], c["data"]) for c in cases] == [
        (None, {"endpoint_id": endpoint_id, "url": url})
    ]
    assert (
        cases[0]["reason"] == f"Webhook endpoint {url} was disabled: {endpoint['disabled_reason']}."
    )
    async with db.sessionmaker() as session:
        emails = list(
            await session.scalars(
                select(OutgoingEmail).where(OutgoingEmail.kind == "webhook_endpoint_disabled")
            )
        )
    assert [(e.to_address, e.subject) for e in emails] == [
        ("owner@hooks.example", f"Webhook endpoint disabled: {url}")
    ]
    assert f"PATCH /api/v1/webhook-endpoints/{endpoint_id}" in emails[0].text_body

    # Disabled: a retry is refused, and a new event makes no delivery.
    r = await client.post(
        f"{API}/{endpoint_id}/deliveries/{delivery['id']}/retry", headers=shop.headers
    )
    assert r.status_code == 409
    async with db.transaction() as session:
        event = await session.scalar(
            select(LifecycleEvent).where(LifecycleEvent.type == "order.created")
        )
        assert event is not None
        assert await service.fan_out(session, event) == []

    # Turned back on by the merchant: counting starts again.
    r = await client.patch(f"{API}/{endpoint_id}", json={"enabled": True}, headers=shop.headers)
    assert r.status_code == 200, r.text
    back = r.json()
    assert (back["enabled"], back["consecutive_failures"], back["disabled_reason"]) == (
        True,
        0,
        None,
    )
    assert len(receiver.at("/down")) == 2


async def test_a_410_disables_the_endpoint_at_once(
    client: Client, db: Database, shop: MerchantHandle, receiver: Receiver
) -> None:
    receiver.always["/gone"] = 410
    hook = await register(client, shop, f"{receiver.base_url}/gone", ["*"])
    r = await client.post("/api/v1/orders", json=order_body("GONE-1"), headers=shop.headers)
    assert r.status_code == 201, r.text

    async def disabled() -> dict[str, Any] | None:
        r = await client.get(f"{API}/{hook['endpoint']['id']}", headers=shop.headers)
        return dict(r.json()) if not r.json()["enabled"] else None

    endpoint = await eventually(disabled, timeout=45)
    assert endpoint["disabled_reason"] == "it answered 410 Gone"
    async with db.sessionmaker() as session:
        n = await session.scalar(
            select(func.count())
            .select_from(OutgoingEmail)
            .where(OutgoingEmail.kind == "webhook_endpoint_disabled")
        )
    assert n == 1
    assert len(receiver.at("/gone")) == 1


async def test_endpoints_are_validated_tenant_scoped_and_their_secret_shown_once(
    client: Client, shop: MerchantHandle, rival: MerchantHandle
) -> None:
    bad = [
        ({"url": "ftp://erp.example.com/hook", "events": ["*"]}, "url", "must be an https:// URL"),
        ({"url": "http://erp.example.com/hook", "events": ["*"]}, "url", "must be an https:// URL"),
        (
            {"url": "https://10.0.0.5/hook", "events": ["*"]},
            "url",
            "must not point at a private, link-local or reserved address (10.0.0.5)",
        ),
        (
            {"url": "https://169.254.169.254/latest", "events": ["*"]},
            "url",
            "must not point at a private, link-local or reserved address (169.254.169.254)",
        ),
        (
            {"url": "https://[fd00::1]/hook", "events": ["*"]},
            "url",
            "must not point at a private, link-local or reserved address (fd00::1)",
        ),
        (
            {"url": "https://2130706433/hook", "events": ["*"]},
            "url",
            "not a valid address (write IPv4 addresses as four decimal numbers)",
        ),
        (
            {"url": "https://user:pw@erp.example.com/hook", "events": ["*"]},
            "url",
            "must not carry a user name or password (put credentials in the path)",
        ),
        (
            {
                "url": "https://erp.example.com/hook",
                "events": ["order.created", "order.teleported"],
            },
            "events[1]",
            None,
        ),
        ({"url": "https://erp.example.com/hook", "events": []}, "events", None),
        ({"url": "https://erp.example.com/hook", "events": ["*", "*"]}, "events[1]", None),
        ({"url": "https://erp.example.com/hook", "events": ["*"], "color": "red"}, "color", None),
    ]
    for body, field, message in bad:
        r = await client.post(API, json=body, headers=shop.headers)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["extra"]["field"] == field, (body, r.json())
        if message is not None:
            assert r.json()["detail"] == f"{field}: {message}"
    r = await client.get(API, headers=shop.headers)
    assert r.json()["items"] == []

    created = await register(
        client, shop, "https://erp.example.com/hook", ["order.created"], description="ERP"
    )
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32
    endpoint = created["endpoint"]
    eid = endpoint["id"]
    assert (endpoint["url"], endpoint["events"], endpoint["description"], endpoint["enabled"]) == (
        "https://erp.example.com/hook",
        ["order.created"],
        "ERP",
        True,
    )
    for path in (API, f"{API}/{eid}"):
        r = await client.get(path, headers=shop.headers)
        assert r.status_code == 200
        assert secret not in r.text
        assert "secret" not in r.text

    # A replayed create answers without the secret, and says why.
    key = {"Idempotency-Key": "hook-create-1", **shop.headers}
    body = {"url": "https://crm.example.com/hook", "events": ["*"]}
    first = await client.post(API, json=body, headers=key)
    replay = await client.post(API, json=body, headers=key)
    assert first.status_code == replay.status_code == 201
    assert first.json()["secret"].startswith("whsec_")
    assert replay.json()["secret"] is None
    assert "rotate-secret" in replay.json()["redacted"]["secret"]

    # A PATCH that is wrong changes nothing.
    r = await client.patch(
        f"{API}/{eid}", json={"url": "https://192.168.1.10/x"}, headers=shop.headers
    )
    assert r.status_code == 400
    assert r.json()["extra"]["field"] == "url"
    r = await client.patch(
        f"{API}/{eid}", json={"events": ["shipment.delivered", "*"]}, headers=shop.headers
    )
    assert r.status_code == 200
    assert r.json()["events"] == ["shipment.delivered", "*"]
    assert r.json()["url"] == "https://erp.example.com/hook"

    rotated = await client.post(f"{API}/{eid}/rotate-secret", headers=shop.headers)
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != secret

    # Another merchant's endpoint does not exist for this one.
    for method, path in [
        ("GET", f"{API}/{eid}"),
        ("PATCH", f"{API}/{eid}"),
        ("DELETE", f"{API}/{eid}"),
        ("GET", f"{API}/{eid}/deliveries"),
        ("POST", f"{API}/{eid}/rotate-secret"),
        ("POST", f"{API}/{eid}/deliveries/{uuid.uuid4()}/retry"),
    ]:
        r = await client.request(
            method, path, json={} if method == "PATCH" else None, headers=rival.headers
        )
        assert r.status_code == 404, (method, path, r.text)
    r = await client.get(API, headers=rival.headers)
    assert r.json()["items"] == []

    # At most so many per store.
    for i in range(18):
        await register(client, shop, f"https://erp.example.com/hook/{i}", ["*"])
    r = await client.post(
        API, json={"url": "https://erp.example.com/21", "events": ["*"]}, headers=shop.headers
    )
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == "at most 20 webhook endpoints per store; delete one first"

    r = await client.delete(f"{API}/{eid}", headers=shop.headers)
    assert r.status_code == 204
    r = await client.get(f"{API}/{eid}", headers=shop.headers)
    assert r.status_code == 404


def test_loopback_and_plain_http_need_the_operator_switch() -> None:
    for url in ("http://127.0.0.1:8080/hook", "https://localhost/hook", "https://[::1]/hook"):
        assert check_url(url, allow_http=True) == url
        with pytest.raises(ValueError, match="url: must"):
            check_url(url, allow_http=False)
    with pytest.raises(ValueError, match="url: must be an https:// URL"):
        check_url("http://erp.example.com/hook", allow_http=True)


async def test_the_host_is_checked_again_when_sending() -> None:
    # A name (or numeric form) that resolves inward is refused at delivery time.
    for url in ("http://localhost:9/x", "https://127.1/x", "https://0x7f000001/x"):
        with pytest.raises(TargetRefused, match="private or reserved address"):
            await check_target(url, allow_loopback=False)
    await check_target("http://localhost:9/x", allow_loopback=True)
    await check_target("https://93.184.215.14/x", allow_loopback=False)


async def test_a_rotated_secret_signs_beside_the_old_one_for_a_day(
    client: Client, db: Database, shop: MerchantHandle, receiver: Receiver
) -> None:
    hook = await register(client, shop, f"{receiver.base_url}/rot", ["order.created"])
    eid, old = hook["endpoint"]["id"], hook["secret"]
    r = await client.post(f"{API}/{eid}/rotate-secret", headers=shop.headers)
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    r = await client.post("/api/v1/orders", json=order_body("ROT-1"), headers=shop.headers)
    assert r.status_code == 201, r.text
    [first] = await eventually(lambda: _n(receiver, "/rot", 1))
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    assert verified(new, first) == verified(old, first)

    # The overlap over: only the new secret signs.
    async with db.transaction() as session:
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == uuid.UUID(eid))
            .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
        )
    [delivery] = await deliveries(client, shop, eid)
    r = await client.post(f"{API}/{eid}/deliveries/{delivery['id']}/retry", headers=shop.headers)
    assert r.status_code == 202, r.text
    [_, second] = await eventually(lambda: _n(receiver, "/rot", 2))
    assert second.headers["webhook-signature"].count("v1,") == 1
    assert verified(new, second)["id"] == delivery["message_id"]
    with pytest.raises(Exception, match="No matching signature"):
        verified(old, second)
