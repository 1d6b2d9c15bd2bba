"""``rest_json`` tracking: the per-order and batch endpoints against respx, the supplier's words
mapped to ours, unknown words and unreadable times skipped (never a crash), and the settings
check naming the field."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from connectors.base import ConnectorConfigError, RetryableConnectorError, TrackingRefDTO
from connectors.rest_json import RestJsonConnector
from connectors.tracking import TrackingEventDTO, TrackingStatus, TrackingUpdateDTO

BASE = "https://api.supplier.test/v2"
STATUS_MAP = {"Shipped": "in_transit", "OutForDelivery": "out_for_delivery", "Done": "delivered"}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def supplier() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def connector(http: httpx.AsyncClient, tracking: dict[str, Any]) -> RestJsonConnector:
    config = RestJsonConnector.validate_config(
        {"base_url": BASE, "auth_value": "Bearer k", "tracking": tracking}
    )
    return RestJsonConnector(config, http)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, 1, hour, minute, tzinfo=UTC)


class TestBatch:
    async def test_post_json_maps_statuses_and_fields(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        route = supplier.post("/tracking").respond(
            200,
            json={
                "parcels": [
                    {
                        "no": "1Z1",
                        "state": "OutForDelivery",
                        "courier": "ups",
                        "eta": "2026-12-01T18:00:00+01:00",
                        "history": [
                            {
                                "code": "OutForDelivery",
                                "at": "2026-12-01T09:00:00Z",
                                "text": "On the van",
                                "where": "Austin, US",
                            },
                            {"code": "Shipped", "at": "2026-11-30T10:00:00"},
                        ],
                    },
                    {"no": "NOT-ASKED", "state": "Done", "history": []},
                ]
            },
        )
        c = connector(
            http,
            {
                "batch": {"path": "/tracking", "max_numbers": 50, "param": "ids"},
                "status_map": STATUS_MAP,
                "fields": {
                    "list": "parcels",
                    "number": "no",
                    "status": "state",
                    "carrier": "courier",
                    "events": "history",
                    "event_status": "code",
                    "event_time": "at",
                    "event_description": "text",
                    "event_location": "where",
                    "estimated_delivery": "eta",
                },
            },
        )
        assert (c.supports_tracking, c.tracking_batch_size) == (True, 50)
        got = await c.fetch_tracking(["1Z1", "1Z2"])
        assert list(got) == [
            TrackingUpdateDTO(
                tracking_number="1Z1",
                carrier_slug="ups",
                status=TrackingStatus.OUT_FOR_DELIVERY,
                events=(  # oldest first; no offset means UTC
                    TrackingEventDTO(TrackingStatus.IN_TRANSIT, at(10).replace(day=30, month=11)),
                    TrackingEventDTO(
                        TrackingStatus.OUT_FOR_DELIVERY, at(9), "On the van", "Austin, US"
                    ),
                ),
                estimated_delivery_at=at(17),
            )
        ]
        request = route.calls.last.request
        assert json.loads(request.content) == {"ids": ["1Z1", "1Z2"]}
        assert request.headers["authorization"] == "Bearer k"

    async def test_get_query_and_a_bare_list(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        route = supplier.get("/track").respond(
            200,
            json=[
                {
                    "tracking_number": "A",
                    "status": "delivered",
                    "events": [{"status": "delivered", "occurred_at": "2026-12-01T08:00:00Z"}],
                }
            ],
        )
        c = connector(http, {"batch": {"method": "GET", "path": "/track", "send_as": "query"}})
        got = await c.fetch_tracking(["A", "B"])
        assert route.calls.last.request.url.params["numbers"] == "A,B"
        assert [(u.tracking_number, u.status, len(u.events)) for u in got] == [
            ("A", TrackingStatus.DELIVERED, 1)
        ]

    async def test_unknown_words_and_bad_times_are_skipped_with_a_log(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        supplier.post("/tracking").respond(
            200,
            json={
                "trackings": [
                    {
                        "tracking_number": "A",
                        "status": "Teleported",
                        "events": [
                            {"status": "Teleported", "occurred_at": "2026-12-01T08:00:00Z"},
                            {"status": "in_transit", "occurred_at": "yesterday"},
                            {"status": "in_transit", "occurred_at": "2026-12-01T07:00:00Z"},
                            "garbage",
                        ],
                    }
                ]
            },
        )
        c = connector(http, {"batch": {"path": "/tracking"}})
        with capture_logs() as logs:
            (got,) = await c.fetch_tracking(["A"])
        assert got.status is None
        assert got.events == (TrackingEventDTO(TrackingStatus.IN_TRANSIT, at(7)),)
        assert [(e["event"], e.get("status")) for e in logs] == [
            ("tracking.unknown_status", "Teleported"),
            ("tracking.bad_event_time", None),
            ("tracking.unknown_status", "Teleported"),
        ]

    async def test_429_is_retryable_with_retry_after(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        supplier.post("/tracking").respond(429, headers={"Retry-After": "2"})
        c = connector(http, {"batch": {"path": "/tracking"}})
        with pytest.raises(RetryableConnectorError) as caught:
            await c.fetch_tracking(["A"])
        assert caught.value.retry_after == 2.0


class TestPerOrder:
    async def test_one_request_per_number_with_the_order_reference(
        self, http: httpx.AsyncClient, supplier: respx.MockRouter
    ) -> None:
        one = supplier.get("/orders/SUP%2F7/tracking").respond(
            200, json={"tracking_number": "A", "status": "in_transit", "events": []}
        )
        two = supplier.get("/orders/SUP-8/tracking").respond(404, json={"error": "unknown"})
        c = connector(http, {"path": "/orders/{reference}/tracking"})
        assert (c.supports_tracking, c.tracking_batch_size) == (True, 0)
        refs = {
            "A": TrackingRefDTO("1001-1", "SUP/7"),
            "B": TrackingRefDTO("1002-1", "SUP-8"),
            "C": TrackingRefDTO("1003-1", None),  # no reference: skipped, not asked
        }
        got = await c.fetch_tracking(["A", "B", "C"], refs)
        assert [(u.tracking_number, u.status) for u in got] == [("A", TrackingStatus.IN_TRANSIT)]
        assert (one.call_count, two.call_count, len(supplier.calls)) == (1, 1, 2)

    async def test_without_tracking_settings_it_is_unsupported(
        self, http: httpx.AsyncClient
    ) -> None:
        c = RestJsonConnector(RestJsonConnector.validate_config({"base_url": BASE}), http)
        assert (c.supports_tracking, c.tracking_batch_size) == (False, 0)


@pytest.mark.parametrize(
    ("tracking", "field"),
    [
        ("yes", "tracking"),
        ({}, "tracking.path"),
        ({"path": "orders"}, "tracking.path"),
        ({"path": "/o/{id}"}, "tracking.path"),
        ({"colour": 1, "path": "/x"}, "tracking.colour"),
        ({"batch": {"path": "/t", "max_numbers": 101}}, "tracking.batch.max_numbers"),
        ({"batch": {"path": "/t", "max_numbers": True}}, "tracking.batch.max_numbers"),
        ({"batch": {"path": "/t", "max_numbers": 0}}, "tracking.batch.max_numbers"),
        ({"batch": {"path": "/t", "method": "PUT"}}, "tracking.batch.method"),
        ({"batch": {"path": "/t", "send_as": "xml"}}, "tracking.batch.send_as"),
        ({"batch": {"path": "/t", "method": "GET"}}, "tracking.batch.send_as"),
        ({"batch": {"path": "/t", "param": ""}}, "tracking.batch.param"),
        ({"batch": {"path": "/t", "size": 3}}, "tracking.batch.size"),
        ({"batch": {}}, "tracking.batch.path"),
        ({"batch": []}, "tracking.batch"),
        ({"path": "/x", "status_map": {"Gone": "vanished"}}, "tracking.status_map.Gone"),
        ({"path": "/x", "status_map": []}, "tracking.status_map"),
        ({"path": "/x", "fields": {"colour": "c"}}, "tracking.fields.colour"),
        ({"path": "/x", "fields": {"number": 3}}, "tracking.fields.number"),
    ],
)
def test_settings_errors_name_the_field(tracking: Any, field: str) -> None:
    with pytest.raises(ConnectorConfigError) as caught:
        RestJsonConnector.validate_config({"base_url": BASE, "tracking": tracking})
    assert caught.value.field == field


def test_settings_defaults_are_filled_in() -> None:
    out = RestJsonConnector.validate_config(
        {"base_url": BASE, "tracking": {"batch": {"path": "/t"}}}
    )
    assert out["tracking"] == {
        "batch": {
            "path": "/t",
            "method": "POST",
            "max_numbers": 100,
            "send_as": "json",
            "param": "numbers",
        }
    }


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+05:00", "not a time", "", "9" * 65, None, 12]
)
def test_an_unreadable_time_is_none_never_an_error(value: object) -> None:
    from connectors.aftership import _utc
    from connectors.rest_json import _moment

    assert _moment(value) is None
    assert _utc(value) is None
