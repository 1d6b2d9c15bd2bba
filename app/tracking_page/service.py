"""What the tracking page shows, read in two queries: the order with its store, lines and the
shipments each line went in (one row per line and shipment), then the shipments with their
events (one row per event). An unknown token costs the first query only.

Nothing personal leaves this module but the ship-to city and country: no street, name, email,
price, supplier or cost is selected at all.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import exists, select

from app.db import DbSession
from app.merchants.models import Merchant, MerchantStatus
from app.merchants.settings import settings_of
from app.notifications.render import pick_locale
from app.orders.models import Customer, Order, OrderLine, OrderStatus
from app.purchasing.models import (
    PurchaseOrder,
    PurchaseOrderLine,
    Shipment,
    ShipmentLine,
    TrackingEvent,
)
from app.timeline.models import OrderEvent

#: ``app.security.new_public_token`` makes 32 URL-safe characters (192 random bits); anything
#: that cannot be a token is refused before the database is asked.
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: The timeline entry ``app.orders.privacy.redact_customer`` writes.
REDACTED_EVENT = "privacy.redacted"
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


class PageStatus:
    """The order's status in the customer's words (the page's own vocabulary, not the
    order's internal one)."""

    RECEIVED = "received"
    SHIPPED = "shipped"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"

    ALL = (RECEIVED, SHIPPED, OUT_FOR_DELIVERY, DELIVERED, CANCELLED)


@dataclass
class Store:
    name: str
    logo_url: str | None
    color: str | None


@dataclass
class EventView:
    status: str
    occurred_at: datetime
    description: str | None
    location: str | None


@dataclass
class ShipmentView:
    #: 1, 2, ... in the order they shipped: how the page names a parcel (no internal id).
    number: int
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None
    status: str
    shipped_at: datetime
    estimated_delivery_at: datetime | None
    delivered_at: datetime | None
    #: Newest first.
    events: list[EventView] = field(default_factory=list)


@dataclass
class ItemView:
    title: str
    variant_title: str | None
    quantity: int
    requires_shipping: bool
    #: (shipment number, quantity) for each shipment the line is in.
    shipments: list[tuple[int, int]] = field(default_factory=list)

    @property
    def quantity_shipped(self) -> int:
        return sum(q for _, q in self.shipments)

    @property
    def quantity_unshipped(self) -> int:
        return max(self.quantity - self.quantity_shipped, 0) if self.requires_shipping else 0


@dataclass
class TrackingView:
    store: Store
    order_name: str
    placed_at: datetime
    status: str
    city: str | None
    country_code: str | None
    items: list[ItemView]
    shipments: list[ShipmentView]
    #: The store's language for customers who ask for none we ship.
    default_locale: str
    #: The page offers the cancel form (the store allows it, nothing shipped, not cancelling).
    can_cancel: bool = False


def _store(merchant: Merchant) -> tuple[Store, str]:
    settings = settings_of(merchant)
    brand = settings.branding
    # The settings schema already checks the colour; checked again because it goes into CSS.
    color = brand.color if brand.color and _COLOUR.fullmatch(brand.color) else None
    return (
        Store(name=brand.store_name or merchant.shop_domain, logo_url=brand.logo_url, color=color),
        settings.notifications.default_locale,
    )


def _page_status(order: Order, items: list[ItemView], shipments: list[ShipmentView]) -> str:
    if order.status == OrderStatus.CANCELLED:
        return PageStatus.CANCELLED
    if not shipments:
        return PageStatus.RECEIVED
    if all(s.status == "delivered" for s in shipments) and not any(
        i.quantity_unshipped for i in items
    ):
        return PageStatus.DELIVERED
    if any(s.status == "out_for_delivery" for s in shipments):
        return PageStatus.OUT_FOR_DELIVERY
    return PageStatus.SHIPPED


async def tracking_view(session: DbSession, token: str) -> TrackingView | None:
    """The page of the order with this token; None for a token that is malformed, unknown, or
    whose order may not be shown (its customer's data was redacted, or the store uninstalled
    the app): the caller answers all of them with the same 404."""
    if not TOKEN.fullmatch(token):
        return None
    redacted = exists().where(OrderEvent.order_id == Order.id, OrderEvent.type == REDACTED_EVENT)
    rows = (
        await session.execute(
            select(
                Order,
                Merchant,
                Customer.redacted_at,
                redacted,
                OrderLine,
                ShipmentLine.shipment_id,
                ShipmentLine.quantity,
            )
            .join(Merchant, Merchant.id == Order.merchant_id)
            .outerjoin(Customer, Customer.id == Order.customer_id)
            .outerjoin(OrderLine, OrderLine.order_id == Order.id)
            .outerjoin(PurchaseOrderLine, PurchaseOrderLine.order_line_id == OrderLine.id)
            .outerjoin(ShipmentLine, ShipmentLine.purchase_order_line_id == PurchaseOrderLine.id)
            # The unique index on ``tracking_token`` makes this one index lookup.
            .where(Order.tracking_token == token)
            .order_by(OrderLine.position, OrderLine.id)
        )
    ).all()
    if not rows:
        return None
    order, merchant, customer_redacted_at, order_redacted = rows[0][:4]
    if (
        order_redacted
        or customer_redacted_at is not None
        or merchant.status != MerchantStatus.ACTIVE
    ):
        return None

    items: dict[uuid.UUID, ItemView] = {}
    in_shipment: list[tuple[ItemView, uuid.UUID, int]] = []
    for *_, line, shipment_id, quantity in rows:
        if line is None:
            continue
        item = items.get(line.id)
        if item is None:
            item = items[line.id] = ItemView(
                title=line.title,
                variant_title=line.variant_title,
                quantity=line.quantity,
                requires_shipping=line.requires_shipping,
            )
        if shipment_id is not None:
            in_shipment.append((item, shipment_id, quantity))

    shipments: dict[uuid.UUID, ShipmentView] = {}
    for shipment, event in (
        await session.execute(
            select(Shipment, TrackingEvent)
            .join(PurchaseOrder, PurchaseOrder.id == Shipment.purchase_order_id)
            .outerjoin(TrackingEvent, TrackingEvent.shipment_id == Shipment.id)
            .where(PurchaseOrder.order_id == order.id, Shipment.merchant_id == order.merchant_id)
            .order_by(
                Shipment.shipped_at, Shipment.id, TrackingEvent.occurred_at.desc(), TrackingEvent.id
            )
        )
    ).all():
        view = shipments.get(shipment.id)
        if view is None:
            view = shipments[shipment.id] = ShipmentView(
                number=len(shipments) + 1,
                carrier=shipment.carrier,
                tracking_number=shipment.tracking_number,
                tracking_url=shipment.tracking_url,
                status=shipment.status,
                shipped_at=shipment.shipped_at,
                estimated_delivery_at=shipment.estimated_delivery_at,
                delivered_at=shipment.delivered_at,
            )
        if event is not None:
            view.events.append(
                EventView(event.status, event.occurred_at, event.description, event.location)
            )
    for item, shipment_id, quantity in in_shipment:
        if shipment_id in shipments:
            item.shipments.append((shipments[shipment_id].number, quantity))
    for item in items.values():
        item.shipments.sort()

    store, default_locale = _store(merchant)
    address = order.shipping_address or {}
    city, country = address.get("city"), address.get("country_code")
    lines = list(items.values())
    ships = list(shipments.values())
    return TrackingView(
        store=store,
        order_name=order.name,
        placed_at=order.placed_at,
        status=_page_status(order, lines, ships),
        city=city if isinstance(city, str) and city else None,
        country_code=country if isinstance(country, str) and country else None,
        items=lines,
        shipments=ships,
        # Without a language the browser asks for: the order's, as for its emails.
        default_locale=pick_locale(order.customer_locale, default_locale),
        can_cancel=not ships
        and order.status != OrderStatus.CANCELLED
        and order.cancel_requested_at is None
        and settings_of(merchant).cancellation.customer_can_cancel,
    )


async def order_of_token(session: DbSession, token: str) -> Order | None:
    """The order behind a tracking page, for what the customer may do there; None wherever
    the page itself would be a 404."""
    if not TOKEN.fullmatch(token):
        return None
    redacted = exists().where(OrderEvent.order_id == Order.id, OrderEvent.type == REDACTED_EVENT)
    row = (
        await session.execute(
            select(Order, Merchant.status, Customer.redacted_at, redacted)
            .join(Merchant, Merchant.id == Order.merchant_id)
            .outerjoin(Customer, Customer.id == Order.customer_id)
            .where(Order.tracking_token == token)
        )
    ).first()
    if row is None:
        return None
    order, merchant_status, customer_redacted_at, order_redacted = row
    if (
        order_redacted
        or customer_redacted_at is not None
        or merchant_status != MerchantStatus.ACTIVE
    ):
        return None
    found: Order = order
    return found
