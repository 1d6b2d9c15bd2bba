"""An order driven to a partial shipment with tracking events, for the tracking page tests:
entered through the merchant API, routed to a portal supplier by the workers, shipped and
tracked through the supplier API. What the supplier API cannot say yet (an event's location, an
estimated delivery, a variant title) and the dates the page shows are set in the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import update

from app.db import Database
from app.merchants.models import Merchant
from app.orders.models import Order, OrderLine
from app.purchasing.models import Shipment, TrackingEvent
from tests.conftest import MerchantHandle, make_merchant
from tests.support.portal import bearer, offer, portal_supplier, routed_order

Client = AsyncTestClient[Litestar]

TRACKING_NUMBER = "1Z999AA10123456784"
TRACKING_URL = f"https://www.ups.com/track?tracknum={TRACKING_NUMBER}"
PLACED_AT = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
ESTIMATED = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
BRANDING = {"store_name": "Glow & Co", "color": "#0f766e"}


@dataclass
class Tracked:
    shop: MerchantHandle
    order_id: str
    token: str
    order_name: str
    #: The supplier's API key headers, the purchase order and the first shipment.
    supplier: dict[str, str]
    po_id: str
    shipment_id: str


def token_of(detail: dict[str, Any]) -> str:
    return str(detail["tracking_url"]).rsplit("/", 1)[1]


async def branded_shop(db: Database, shop: str = "glow-shop.myshopify.com") -> MerchantHandle:
    handle = await make_merchant(db, shop, auto_route=True)
    async with db.transaction() as session:
        await session.execute(
            update(Merchant)
            .where(Merchant.id == handle.id)
            .values(settings={"routing": {"auto_route": True}, "branding": BRANDING})
        )
    return handle


async def tracked_order(client: Client, db: Database, shop: MerchantHandle) -> Tracked:
    """2 x Red mug (Large) + 1 x Blue bowl; one Red mug shipped with UPS, two events."""
    alpha = await portal_supplier(client, shop, "Alpha Wholesale")
    for sku in ("RED", "BLUE"):
        await offer(client, shop, alpha["supplier"]["id"], sku, unit_cost="3.10")
    order_id, [po] = await routed_order(
        client,
        shop,
        "T-1001",
        [
            {"sku": "RED", "quantity": 2, "price": "10.50", "title": "Red mug"},
            {"sku": "BLUE", "quantity": 1, "price": "4.99", "title": "Blue bowl"},
        ],
    )
    key = bearer(alpha["api_key"])
    r = await client.post(
        f"/supplier/v1/orders/{po['id']}/shipments",
        json={
            "carrier": "UPS",
            "tracking_number": TRACKING_NUMBER,
            "tracking_url": TRACKING_URL,
            "shipped_at": "2026-11-27T10:00:00Z",
            "lines": [{"sku": "RED-S", "quantity": 1}],
        },
        headers=key,
    )
    assert r.status_code == 201, r.text
    shipment_id = r.json()["id"]
    for status, at, description in (
        ("info_received", "2026-11-27T10:05:00Z", "Shipper created a label"),
        ("in_transit", "2026-11-28T08:00:00Z", "Departed from facility"),
    ):
        r = await client.post(
            f"/supplier/v1/shipments/{shipment_id}/events",
            json={"status": status, "occurred_at": at, "description": description},
            headers=key,
        )
        assert r.status_code in (200, 201), r.text
    async with db.transaction() as session:
        await session.execute(
            update(Order).where(Order.id == uuid.UUID(order_id)).values(placed_at=PLACED_AT)
        )
        await session.execute(
            update(OrderLine)
            .where(OrderLine.order_id == uuid.UUID(order_id), OrderLine.sku == "RED")
            .values(variant_title="Large")
        )
        await session.execute(
            update(Shipment)
            .where(Shipment.id == uuid.UUID(shipment_id))
            .values(estimated_delivery_at=ESTIMATED)
        )
        await session.execute(
            update(TrackingEvent)
            .where(
                TrackingEvent.shipment_id == uuid.UUID(shipment_id),
                TrackingEvent.status == "in_transit",
            )
            .values(location="Louisville, KY, US")
        )
    detail = (await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)).json()
    return Tracked(
        shop, order_id, token_of(detail), str(detail["name"]), key, po["id"], shipment_id
    )
