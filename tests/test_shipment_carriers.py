"""A supplier that names no carrier or no link: the tracking number tells (``app.carriers``)."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

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
