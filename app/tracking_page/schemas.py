"""The tracking page as JSON (``Accept: application/json``): what the HTML page shows, with
machine-readable statuses beside the customer's words in the negotiated language."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from app.merchants.settings import LANGUAGES
from app.tracking_page import i18n
from app.tracking_page.service import (
    EventView,
    ItemView,
    PageStatus,
    ShipmentView,
    TrackingView,
)

OrderStatusCode = Annotated[str, Meta(description=" | ".join(PageStatus.ALL))]


class StoreOut(msgspec.Struct):
    """The store's branding: its name (the shop's domain when it set none), logo, colour."""

    name: str
    logo_url: str | None
    color: Annotated[str, Meta(description="#RRGGBB")] | None


class ShipToOut(msgspec.Struct):
    """Where the order goes, no closer than the city."""

    city: str | None
    country_code: str | None
    country: str | None


class ItemShipmentOut(msgspec.Struct):
    shipment: Annotated[int, Meta(description="the `number` of a shipment of this page")]
    quantity: int


class ItemOut(msgspec.Struct):
    title: str
    variant_title: str | None
    quantity: int
    quantity_unshipped: int
    shipments: list[ItemShipmentOut]

    @classmethod
    def of(cls, item: ItemView) -> ItemOut:
        return cls(
            title=item.title,
            variant_title=item.variant_title,
            quantity=item.quantity,
            quantity_unshipped=item.quantity_unshipped,
            shipments=[ItemShipmentOut(n, q) for n, q in item.shipments],
        )


class TrackingEventOut(msgspec.Struct):
    status: str
    status_label: str
    occurred_at: datetime
    description: str | None
    location: str | None

    @classmethod
    def of(cls, event: EventView, locale: str) -> TrackingEventOut:
        return cls(
            status=event.status,
            status_label=i18n.status_label(event.status, locale),
            occurred_at=event.occurred_at,
            description=event.description,
            location=event.location,
        )


class ShipmentOut(msgspec.Struct):
    number: Annotated[int, Meta(description="1, 2, … in the order the parcels shipped")]
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None
    status: str
    status_label: str
    shipped_at: datetime
    estimated_delivery_at: datetime | None
    delivered_at: datetime | None
    events: Annotated[list[TrackingEventOut], Meta(description="newest first")]

    @classmethod
    def of(cls, s: ShipmentView, locale: str) -> ShipmentOut:
        return cls(
            number=s.number,
            carrier=s.carrier,
            tracking_number=s.tracking_number,
            tracking_url=s.tracking_url,
            status=s.status,
            status_label=i18n.status_label(s.status, locale),
            shipped_at=s.shipped_at,
            estimated_delivery_at=s.estimated_delivery_at,
            delivered_at=s.delivered_at,
            events=[TrackingEventOut.of(e, locale) for e in s.events],
        )


class TrackingPageOut(msgspec.Struct):
    """One order as its customer may see it: no prices, addresses, emails or suppliers."""

    locale: Annotated[str, Meta(description=" or ".join(LANGUAGES))]
    store: StoreOut
    order_name: str
    placed_at: datetime
    status: OrderStatusCode
    status_label: str
    ship_to: ShipToOut
    items: list[ItemOut]
    shipments: list[ShipmentOut]
    #: ``POST /track/{token}/cancel`` would be accepted now.
    can_cancel: bool = False

    @classmethod
    def of(cls, view: TrackingView, locale: str) -> TrackingPageOut:
        return cls(
            locale=locale,
            store=StoreOut(view.store.name, view.store.logo_url, view.store.color),
            order_name=view.order_name,
            placed_at=view.placed_at,
            status=view.status,
            status_label=i18n.status_label(view.status, locale),
            ship_to=ShipToOut(
                view.city, view.country_code, i18n.country_name(view.country_code, locale)
            ),
            items=[ItemOut.of(i) for i in view.items],
            shipments=[ShipmentOut.of(s, locale) for s in view.shipments],
            can_cancel=view.can_cancel,
        )
