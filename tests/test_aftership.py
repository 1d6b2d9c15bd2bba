"""The carrier-tracking aggregator (AfterShip): the connector against its documented API (served
by tests/support/aftership_sim.py behind respx), and the flow: a shipment of a portal supplier
registered once, signed pushes applied exactly once, the poll when pushes do not come."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import delete, func, select, update

from app import limits
from app.aggregator import service
from app.aggregator.models import RegistrationState, TrackingRegistration
from app.aggregator.tasks import apply_push, poll_due, register
from app.db import Database, utcnow
from app.jobs.task import StaleWindow, TaskContext
from app.purchasing.models import Shipment, TrackingEvent
from app.settings import Settings
from app.webhooks import service as inbox
from app.webhooks.models import WebhookDelivery
from connectors.aftership import AfterShipProvider, normalise, parse_tracking, sign
from connectors.base import PermanentConnectorError, RetryableConnectorError
from connectors.tracking import TrackingStatus
from tests.conftest import MerchantHandle, make_merchant
from tests.support import aftership_sim as sim_mod
from tests.support.aftership_sim import API_KEY, API_URL, WEBHOOK_SECRET, AfterShipSim, checkpoint
from tests.support.broker import losing_jobs
from tests.support.portal import bearer, line, offer, portal_supplier, routed_order
from tests.support.wait import eventually

Client = AsyncTestClient[Litestar]
PUSH_URL = "/webhooks/tracking/aftership"


# -- the mapping and the parsing, on their own --------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "subtag", "ours"),
    [
        ("Pending", "Pending_001", None),
        ("InfoReceived", "InfoReceived_001", "info_received"),
        ("InTransit", "InTransit_007", "in_transit"),
        ("OutForDelivery", "OutForDelivery_001", "out_for_delivery"),
        ("AvailableForPickup", "AvailableForPickup_001", "out_for_delivery"),
        ("AttemptFail", "AttemptFail_001", "exception"),
        ("Delivered", "Delivered_001", "delivered"),
        ("Delivered", "Delivered_002", "delivered"),
        ("Delivered", "Delivered_004", "delivered"),
        ("Exception", "Exception_001", "exception"),
        ("Exception", "Exception_004", "exception"),
        ("Exception", "Exception_009", "exception"),
        ("Exception", "Exception_010", "returned"),  # returning to sender
        ("Exception", "Exception_011", "returned"),  # returned to sender
        ("Exception", "Exception_013", "exception"),
        ("Exception", None, "exception"),
        ("Expired", "Expired_001", "exception"),
        ("SomethingNew", None, None),
        (None, None, None),
    ],
)
def test_tag_and_subtag_map_onto_our_vocabulary(
    tag: str | None, subtag: str | None, ours: str | None
) -> None:
    assert normalise(tag, subtag) == ours
    assert ours is None or ours in TrackingStatus.ALL


def test_a_tracking_becomes_events_in_utc_oldest_first() -> None:
    update_ = parse_tracking(
        {
            "id": "a" * 32,
            "tracking_number": "1Z999",
            "slug": "ups",
            "tag": "OutForDelivery",
            "subtag": "OutForDelivery_001",
            "latest_estimated_delivery": {"type": "specific", "datetime": "2026-12-03"},
            "checkpoints": [
                checkpoint(
                    "OutForDelivery", "2026-12-02T08:15:00-05:00", "On the truck", city="Brooklyn"
                ),
                checkpoint("Pending", "2026-11-29T09:00:00+08:00", "Label created"),
                checkpoint(
                    "InTransit",
                    "2026-11-30T23:30:00+08:00",
                    "Departed",
                    subtag="InTransit_007",
                    city="Shenzhen",
                ),
                checkpoint("InfoReceived", "2026-11-29T10:00:00", "Electronic info"),
                {"tag": "InTransit", "message": "no time"},
            ],
        }
    )
    assert update_.provider_ref == "a" * 32
    assert (update_.tracking_number, update_.carrier_slug, update_.status) == (
        "1Z999",
        "ups",
        "out_for_delivery",
    )
    assert update_.estimated_delivery_at == datetime(2026, 12, 3, tzinfo=UTC)
    assert [(e.status, e.occurred_at, e.description, e.location) for e in update_.events] == [
        ("info_received", datetime(2026, 11, 29, 10, 0, tzinfo=UTC), "Electronic info", None),
        ("in_transit", datetime(2026, 11, 30, 15, 30, tzinfo=UTC), "Departed", "Shenzhen, USA"),
        (
            "out_for_delivery",
            datetime(2026, 12, 2, 13, 15, tzinfo=UTC),
            "On the truck",
            "Brooklyn, USA",
        ),
    ]


def test_estimated_delivery_falls_back_to_aftership_then_courier_dates() -> None:
    base = {"tracking_number": "N1", "checkpoints": []}
    ai = {**base, "aftership_estimated_delivery_date": {"estimated_delivery_date": "2026-12-09"}}
    courier = {
        **base,
        "courier_estimated_delivery_date": {"estimated_delivery_date": "2026-12-10T18:00:00+01:00"},
    }
    assert parse_tracking(ai).estimated_delivery_at == datetime(2026, 12, 9, tzinfo=UTC)
    assert parse_tracking(courier).estimated_delivery_at == datetime(2026, 12, 10, 17, tzinfo=UTC)
    assert parse_tracking(base).estimated_delivery_at is None
    assert parse_tracking(base).status is None


def test_push_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    provider = AfterShipProvider(None, api_key=None, webhook_secret="s3cret")
    body = b'{"event":"tracking_update","event_id":"e1"}'
    # Computed independently: printf '%s' BODY | openssl dgst -sha256 -hmac s3cret -binary | base64
    good = "CReZ3oQq5pKQv0Mqplv66x+H77yaIf4CUGJysvMMjaY="
    assert sign(body, "s3cret") == good
    assert provider.verify_push({"aftership-hmac-sha256": good}, body)
    assert not provider.verify_push({"aftership-hmac-sha256": good}, body + b" ")
    assert not provider.verify_push({"aftership-hmac-sha256": sign(body, "other")}, body)
    assert not provider.verify_push({}, body)
    assert not AfterShipProvider(None, api_key=None, webhook_secret=None).verify_push(
        {"aftership-hmac-sha256": good}, body
    )
    assert provider.push_id(body) == "e1"
    assert provider.push_id(b"[]") is None
    assert provider.push_id(b"{not json") is None
    assert provider.parse_push(b'{"event":"tracking_pending_time","event_id":"e2"}') == []


# -- the connector against the simulated API ----------------------------------------------------


@pytest.fixture
def sim() -> Iterator[AfterShipSim]:
    yield from sim_mod.serve()


def provider_for(http: httpx.AsyncClient) -> AfterShipProvider:
    return AfterShipProvider(http, api_key=API_KEY, webhook_secret=WEBHOOK_SECRET, api_url=API_URL)


async def test_register_sends_the_number_and_is_idempotent(sim: AfterShipSim) -> None:
    async with httpx.AsyncClient() as http:
        provider = provider_for(http)
        ref = await provider.register("1ZREG", "ups", "PO-1")
        assert await provider.register("1ZREG", "ups", "PO-1") == ref  # 4003 -> the existing one
    assert list(sim.trackings) == [ref]
    first = sim.requests[0]
    assert (first.method, str(first.url), first.headers["as-api-key"]) == (
        "POST",
        f"{API_URL}/trackings",
        API_KEY,
    )
    assert json.loads(first.content) == {
        "tracking_number": "1ZREG",
        "slug": "ups",
        "order_number": "PO-1",
    }
    lookup = sim.requests[2]
    assert (lookup.method, lookup.url.params["tracking_numbers"], lookup.url.params["slug"]) == (
        "GET",
        "1ZREG",
        "ups",
    )


async def test_rate_limits_and_server_errors_retry_other_refusals_do_not(
    sim: AfterShipSim,
) -> None:
    async with httpx.AsyncClient() as http:
        provider = provider_for(http)
        sim.reset_at = int(time.time()) + 30
        sim.script = [429]
        with pytest.raises(RetryableConnectorError, match="429") as limited:
            await provider.register("1Z", None, None)
        assert limited.value.retry_after is not None
        assert 25 <= limited.value.retry_after <= 30
        sim.script = [503]
        with pytest.raises(RetryableConnectorError, match="503"):
            await provider.fetch("x")
        with pytest.raises(PermanentConnectorError, match="404 \\(4004: Tracking does not exist"):
            await provider.fetch("missing")
        wrong = AfterShipProvider(http, api_key="wrong", webhook_secret=None, api_url=API_URL)
        with pytest.raises(PermanentConnectorError, match="401"):
            await wrong.register("1Z", None, None)


# -- the flow -----------------------------------------------------------------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "aftership_api_key": API_KEY,
            "aftership_webhook_secret": WEBHOOK_SECRET,
            "aftership_api_url": API_URL,
        }
    )


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, "track-shop.myshopify.com", auto_route=True)


async def shipped(
    client: Client, shop: MerchantHandle, number: str, reference: str = "T-1"
) -> uuid.UUID:
    """A portal supplier's shipment with a tracking number, through the supplier API."""
    supplier = await portal_supplier(client, shop, f"Supplier {reference}")
    await offer(client, shop, supplier["supplier"]["id"], f"SKU-{reference}", stock=5)
    _, [po] = await routed_order(client, shop, reference, [line(f"SKU-{reference}")])
    r = await client.post(
        f"/supplier/v1/orders/{po['id']}/shipments",
        json={"carrier": "UPS", "tracking_number": number},
        headers=bearer(supplier["api_key"]),
    )
    assert r.status_code == 201, r.text
    return uuid.UUID(r.json()["id"])


async def follow(db: Database, settings: Settings, shipment_id: uuid.UUID) -> uuid.UUID | None:
    """What the ``shipment.shipped`` subscriber does."""
    async with db.transaction() as session:
        return await service.follow_shipment(session, settings, shipment_id)


async def registration(db: Database, shipment_id: uuid.UUID) -> TrackingRegistration:
    async with db.sessionmaker() as session:
        reg = await service.registration_of_shipment(session, shipment_id)
    assert reg is not None
    return reg


async def registered(db: Database, shipment_id: uuid.UUID) -> TrackingRegistration:
    async def probe() -> TrackingRegistration | None:
        async with db.sessionmaker() as session:
            reg = await service.registration_of_shipment(session, shipment_id)
        return reg if reg is not None and reg.state == RegistrationState.REGISTERED else None

    return await eventually(probe)


async def events(db: Database, shipment_id: uuid.UUID) -> list[tuple[str, datetime]]:
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(TrackingEvent.status, TrackingEvent.occurred_at)
            .where(TrackingEvent.shipment_id == shipment_id)
            .order_by(TrackingEvent.occurred_at)
        )
        return [(s, t) for s, t in rows]


async def shipment_status(db: Database, shipment_id: uuid.UUID) -> str:
    async with db.sessionmaker() as session:
        status = await session.scalar(select(Shipment.status).where(Shipment.id == shipment_id))
    assert status is not None
    return status


async def deliveries(db: Database) -> list[tuple[str, str | None]]:
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(WebhookDelivery.webhook_id, WebhookDelivery.outcome)
            .where(WebhookDelivery.source == "aftership")
            .order_by(WebhookDelivery.received_at)
        )
        return [(w, o) for w, o in rows]


async def applied(db: Database, n: int) -> list[tuple[str, str | None]]:
    async def probe() -> list[tuple[str, str | None]] | None:
        rows = await deliveries(db)
        return rows if len(rows) == n and all(o is not None for _, o in rows) else None

    return await eventually(probe)


def ctx_of(client: Client, settings: Settings, db: Database) -> TaskContext:
    return TaskContext(settings=settings, db=db, box=client.app.state.services.box)


IN_TRANSIT = checkpoint("InTransit", "2026-12-01T10:00:00+08:00", "Departed", city="Shenzhen")
OUT = checkpoint("OutForDelivery", "2026-12-03T08:00:00-05:00", "Out", city="Brooklyn")
DELIVERED = checkpoint("Delivered", "2026-12-03T15:00:00-05:00", "Delivered", city="Brooklyn")


class TestRegistration:
    async def test_registered_once_even_when_the_task_runs_twice(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        settings: Settings,
        sim: AfterShipSim,
    ) -> None:
        shipment_id = await shipped(client, shop, "1ZONCE")
        reg = await registered(db, shipment_id)  # by the shipment.shipped subscriber
        assert await follow(db, settings, shipment_id) is None  # a repeated event
        ctx = ctx_of(client, settings, db)
        await register(ctx, str(reg.id))
        await register(ctx, str(reg.id))
        assert sim.creates() == 1
        [(tracking_id, tracking)] = sim.trackings.items()
        assert tracking["tracking_number"] == "1ZONCE"
        reg = await registration(db, shipment_id)
        assert (reg.provider_ref, reg.attempts, reg.last_error) == (tracking_id, 1, None)
        body = json.loads(sim.requests[0].content)
        assert body["tracking_number"] == "1ZONCE"
        assert body["order_number"] == "T-1-1"  # the purchase order's number

    async def test_a_tracking_aftership_has_already_is_taken_not_duplicated(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        settings: Settings,
        sim: AfterShipSim,
    ) -> None:
        # As after a crash between AfterShip's answer and our commit: it has the tracking.
        existing = sim.add("1ZLOST")
        shipment_id = await shipped(client, shop, "1ZLOST")
        reg = await registered(db, shipment_id)
        assert reg.provider_ref == existing["id"]
        assert list(sim.trackings) == [existing["id"]]

    async def test_a_transient_failure_is_retried_later(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        settings: Settings,
        sim: AfterShipSim,
    ) -> None:
        sim.script = [503]
        shipment_id = await shipped(client, shop, "1ZRETRY")
        reg = await registered(db, shipment_id)
        assert reg.attempts == 2
        assert sim.creates() == 2
        assert len(sim.trackings) == 1

    async def test_nothing_without_a_key_or_a_tracking_number(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        settings: Settings,
        sim: AfterShipSim,
    ) -> None:
        shipment_id = await shipped(client, shop, "1ZNOKEY")
        await registered(db, shipment_id)
        async with db.transaction() as session:
            await session.execute(delete(TrackingRegistration))
        unset = settings.model_copy(update={"aftership_api_key": None})
        assert await follow(db, unset, shipment_id) is None
        async with db.transaction() as session:
            await session.execute(
                update(Shipment).where(Shipment.id == shipment_id).values(tracking_number=None)
            )
        assert await follow(db, settings, shipment_id) is None
        async with db.sessionmaker() as session:
            assert await session.scalar(select(func.count(TrackingRegistration.id))) == 0
        assert sim.creates() == 1  # the subscriber's, before the registration was dropped


class TestPushes:
    async def test_a_signed_push_applies_its_events_exactly_once(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        settings: Settings,
        sim: AfterShipSim,
    ) -> None:
        shipment_id = await shipped(client, shop, "1ZPUSH")
        await registered(db, shipment_id)
        tracking = sim.scan("1ZPUSH", IN_TRANSIT, OUT)
        body, headers = sim_mod.push(tracking, event_id="evt-1")
        first = await client.post(PUSH_URL, content=body, headers=headers)
        again = await client.post(PUSH_URL, content=body, headers=headers)
        assert (first.status_code, first.json()) == (200, {"status": "accepted"})
        assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
        assert await applied(db, 1) == [("evt-1", "2 event(s) on 1 shipment(s)")]
        # The same scans in a new push (AfterShip resends the whole tracking): nothing new.
        body2, headers2 = sim_mod.push(tracking, event_id="evt-2")
        assert (await client.post(PUSH_URL, content=body2, headers=headers2)).status_code == 200
        assert (await applied(db, 2))[1] == ("evt-2", "0 event(s) on 1 shipment(s)")
        assert await events(db, shipment_id) == [
            ("in_transit", datetime(2026, 12, 1, 2, tzinfo=UTC)),
            ("out_for_delivery", datetime(2026, 12, 3, 13, tzinfo=UTC)),
        ]
        assert await shipment_status(db, shipment_id) == "out_for_delivery"

    async def test_a_replay_of_older_events_does_not_move_the_shipment_back(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        settings: Settings,
        sim: AfterShipSim,
    ) -> None:
        shipment_id = await shipped(client, shop, "1ZREPLAY")
        await registered(db, shipment_id)
        old = json.loads(json.dumps(sim.scan("1ZREPLAY", IN_TRANSIT)))
        delivered = sim.scan("1ZREPLAY", DELIVERED)
        body, headers = sim_mod.push(delivered)
        assert (await client.post(PUSH_URL, content=body, headers=headers)).status_code == 200
        await applied(db, 1)
        assert await shipment_status(db, shipment_id) == "delivered"
        reg = await registration(db, shipment_id)
        assert (reg.state, reg.next_poll_at) == (RegistrationState.DONE, None)
        # An older snapshot arrives late, with one scan we had not seen.
        old["checkpoints"].append(OUT)
        body, headers = sim_mod.push(old)
        assert (await client.post(PUSH_URL, content=body, headers=headers)).status_code == 200
        await applied(db, 2)
        assert await shipment_status(db, shipment_id) == "delivered"
        assert [s for s, _ in await events(db, shipment_id)] == [
            "in_transit",
            "out_for_delivery",
            "delivered",
        ]

    async def test_a_bad_or_missing_signature_is_401_and_stores_nothing(
        self, client: Client, sim: AfterShipSim, db: Database
    ) -> None:
        body, headers = sim_mod.push(sim.add("1ZBAD"))
        for bad in (
            {**headers, "aftership-hmac-sha256": sign(body, "not-the-secret")},
            {k: v for k, v in headers.items() if k != "aftership-hmac-sha256"},
        ):
            r = await client.post(PUSH_URL, content=body, headers=bad)
            assert (r.status_code, r.json()["detail"]) == (
                401,
                "aftership-hmac-sha256 missing or not matching the body",
            )
        tampered = body.replace(b"1ZBAD", b"1ZBAE")
        assert (await client.post(PUSH_URL, content=tampered, headers=headers)).status_code == 401
        assert await deliveries(db) == []

    async def test_an_oversized_body_is_413(self, client: Client, db: Database) -> None:
        body = b"{" + b" " * limits.MAX_WEBHOOK_BODY + b"}"
        r = await client.post(
            PUSH_URL,
            content=body,
            headers={"aftership-hmac-sha256": sign(body, WEBHOOK_SECRET)},
        )
        assert (r.status_code, r.json()["extra"]) == (
            413,
            {"field": "body", "limit": limits.MAX_WEBHOOK_BODY},
        )
        assert await deliveries(db) == []

    async def test_a_signed_body_without_event_id_is_400(
        self, client: Client, db: Database
    ) -> None:
        body = b'{"event":"tracking_update","msg":{}}'
        r = await client.post(
            PUSH_URL, content=body, headers={"aftership-hmac-sha256": sign(body, WEBHOOK_SECRET)}
        )
        assert (r.status_code, r.json()["extra"]) == (400, {"field": "body"})
        assert await deliveries(db) == []

    async def test_a_push_for_a_tracking_no_shipment_follows_is_accepted_and_ignored(
        self, client: Client, db: Database, sim: AfterShipSim
    ) -> None:
        tracking = sim.scan(sim.add("1ZSTRANGER")["tracking_number"], IN_TRANSIT)
        body, headers = sim_mod.push(tracking, event_id="evt-x")
        r = await client.post(PUSH_URL, content=body, headers=headers)
        assert (r.status_code, r.json()) == (200, {"status": "accepted"})
        assert await applied(db, 1) == [("evt-x", "ignored: no shipment follows 1ZSTRANGER")]
        async with db.sessionmaker() as session:
            assert await session.scalar(select(func.count(TrackingEvent.id))) == 0

    async def test_a_lost_job_is_swept_by_ours_never_by_the_shopify_processor(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        settings: Settings,
        sim: AfterShipSim,
    ) -> None:
        shipment_id = await shipped(client, shop, "1ZLOSTJOB")
        await registered(db, shipment_id)
        body, headers = sim_mod.push(sim.scan("1ZLOSTJOB", IN_TRANSIT), event_id="evt-lost")
        with losing_jobs(client.app.state.workers.broker, "aggregator.apply_push") as lost:
            assert (await client.post(PUSH_URL, content=body, headers=headers)).status_code == 200

            async def lost_one() -> bool:
                return bool(lost)

            await eventually(lost_one)
        window = StaleWindow(now=utcnow(), cutoff=utcnow() + timedelta(seconds=1), limit=10)
        async with db.sessionmaker() as session:
            assert await inbox.unprocessed(session, window, 20) == []
            [delivery_id] = await service.unapplied_pushes(session, window)
        await apply_push(ctx_of(client, settings, db), str(delivery_id))
        assert await deliveries(db) == [("evt-lost", "1 event(s) on 1 shipment(s)")]
        assert await events(db, shipment_id) == [
            ("in_transit", datetime(2026, 12, 1, 2, tzinfo=UTC))
        ]


class TestPoll:
    async def test_the_poll_applies_what_pushes_did_not_bring(
        self,
        client: Client,
        shop: MerchantHandle,
        db: Database,
        settings: Settings,
        sim: AfterShipSim,
    ) -> None:
        shipment_id = await shipped(client, shop, "1ZPOLL")
        reg = await registered(db, shipment_id)
        ctx = ctx_of(client, settings, db)
        assert await poll_due(ctx) == 0  # pushes had their chance: nothing is due yet
        sim.scan("1ZPOLL", IN_TRANSIT, OUT)
        async with db.transaction() as session:
            await session.execute(
                update(TrackingRegistration)
                .where(TrackingRegistration.id == reg.id)
                .values(next_poll_at=datetime(2026, 1, 1, tzinfo=UTC))
            )
        assert await poll_due(ctx) == 1
        assert [s for s, _ in await events(db, shipment_id)] == ["in_transit", "out_for_delivery"]
        assert await shipment_status(db, shipment_id) == "out_for_delivery"
        after = await registration(db, shipment_id)
        assert after.last_polled_at is not None
        assert after.next_poll_at is not None
        assert after.next_poll_at - after.last_polled_at >= service.POLL_AFTER
        assert await poll_due(ctx) == 0
        gets = [r for r in sim.requests if r.url.path.endswith(f"/trackings/{reg.provider_ref}")]
        assert len(gets) == 1
