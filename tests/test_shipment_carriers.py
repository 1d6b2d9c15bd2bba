"""A supplier that names no carrier or no link: the tracking number tells (``app.carriers``)."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from app.db import Database
from tests.conftest import MerchantHandle, make_merchant
from tests.support.portal import bearer, line, offer, portal_supplier, routed_order

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, "carrier-shop.myshopify.com", auto_route=True)


async def ship(client: Client, shop: MerchantHandle, body: dict[str, Any]) -> dict[str, Any]:
    supplier = await portal_supplier(client, shop, "Alpha")
    await offer(client, shop, supplier["supplier"]["id"], "RED", stock=5)
    _, [po] = await routed_order(client, shop, "CR-1", [line("RED")])
    r = await client.post(
        f"/supplier/v1/orders/{po['id']}/shipments", json=body, headers=bearer(supplier["api_key"])
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_a_bare_tracking_number_gets_its_carrier_and_link(
    client: Client, shop: MerchantHandle
) -> None:
    shipment = await ship(client, shop, {"tracking_number": "1Z 999 AA1 01 2345 6784"})
    assert (shipment["tracking_number"], shipment["carrier"], shipment["tracking_url"]) == (
        "1Z999AA10123456784",
        "UPS",
        "https://wwwapps.ups.com/WebTracking/track?track=yes&trackNums=1Z999AA10123456784",
    )


async def test_a_named_carrier_is_kept_and_gets_its_link(
    client: Client, shop: MerchantHandle
) -> None:
    shipment = await ship(client, shop, {"carrier": "fedex", "tracking_number": "986578788855"})
    assert shipment["carrier"] == "fedex"
    assert shipment["tracking_url"] == (
        "https://www.fedex.com/apps/fedextrack/?tracknumbers=986578788855"
    )


async def test_the_suppliers_own_link_wins_and_an_unknown_number_gets_none(
    client: Client, shop: MerchantHandle
) -> None:
    mine = "https://track.example.com/ABC"
    shipment = await ship(client, shop, {"tracking_number": "ABC", "tracking_url": mine})
    assert (shipment["carrier"], shipment["tracking_url"]) == (None, mine)


@pytest.mark.parametrize(
    ("carrier", "number", "company"),
    [
        ("ups", "1Z999AA10123456784", "UPS"),  # the supplier's spelling, Shopify's name
        (None, "1Z999AA10123456784", "UPS"),
        ("Acme Courier", "ABC123", "Acme Courier"),  # unknown: the supplier's text
        ("DHL", None, "DHL"),
    ],
)
def test_shopify_gets_the_carrier_name_it_knows(
    carrier: str | None, number: str | None, company: str
) -> None:
    from app.fulfillment.service import tracking_company
    from app.purchasing.models import Shipment

    assert tracking_company(Shipment(carrier=carrier, tracking_number=number)) == company


async def test_a_supplier_reports_where_the_parcel_is_and_when_it_is_expected(
    client: Client, db: Database, shop: MerchantHandle
) -> None:
    import uuid

    from app.purchasing.models import Shipment, TrackingEvent

    supplier = await portal_supplier(client, shop, "Alpha")
    await offer(client, shop, supplier["supplier"]["id"], "RED", stock=5)
    _, [po] = await routed_order(client, shop, "CR-2", [line("RED")])
    headers = bearer(supplier["api_key"])
    r = await client.post(
        f"/supplier/v1/orders/{po['id']}/shipments",
        json={"tracking_number": "1Z999AA10123456784"},
        headers=headers,
    )
    shipment_id = r.json()["id"]
    r = await client.post(
        f"/supplier/v1/shipments/{shipment_id}/events",
        json={
            "status": "in_transit",
            "occurred_at": "2026-11-30T08:00:00Z",
            "location": "Louisville, US",
            "estimated_delivery_at": "2026-12-02T18:00:00Z",
        },
        headers=headers,
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        f"/supplier/v1/shipments/{shipment_id}/events",
        json={
            "status": "delivered",
            "occurred_at": "2026-11-30T09:00:00Z",
            "estimated_delivery_at": "2026-11-30T09:00:00",
        },
        headers=headers,
    )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("estimated_delivery_at: ")
    async with db.sessionmaker() as session:
        shipment = await session.get(Shipment, uuid.UUID(shipment_id))
        event = await session.scalar(select(TrackingEvent))
    assert shipment is not None
    assert event is not None
    assert shipment.estimated_delivery_at is not None
    assert shipment.estimated_delivery_at.isoformat() == "2026-12-02T18:00:00+00:00"
    assert (event.status, event.location) == ("in_transit", "Louisville, US")
