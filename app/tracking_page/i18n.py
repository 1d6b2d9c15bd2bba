"""The page's words in each language it ships in, the language a request gets, and dates
formatted by Babel (CLDR) for that language."""

from __future__ import annotations

from datetime import UTC, datetime

from babel import Locale
from babel.dates import format_date, format_datetime

from app.merchants.settings import LANGUAGES

#: Statuses of the order (``service.PageStatus``) and of a shipment or tracking event
#: (``shipped`` plus ``purchasing.service.TRACKING_STATUSES``), as a customer reads them.
STATUS: dict[str, dict[str, str]] = {
    "en": {
        "received": "Order received",
        "shipped": "Shipped",
        "info_received": "Label created",
        "in_transit": "In transit",
        "out_for_delivery": "Out for delivery",
        "delivered": "Delivered",
        "exception": "Delivery problem",
        "returned": "Returned to sender",
        "cancelled": "Cancelled",
    },
    "de": {
        "received": "Bestellung eingegangen",
        "shipped": "Versandt",
        "info_received": "Versandlabel erstellt",
        "in_transit": "Unterwegs",
        "out_for_delivery": "In Zustellung",
        "delivered": "Zugestellt",
        "exception": "Zustellproblem",
        "returned": "Zurück an den Absender",
        "cancelled": "Storniert",
    },
}

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Order {order}",
        "placed": "Placed on {date}",
        "ships_to": "Ships to {place}",
        "shipment": "Shipment {number}",
        "carrier": "Carrier",
        "tracking_number": "Tracking number",
        "status": "Status",
        "estimated": "Estimated delivery",
        "delivered_on": "Delivered on",
        "track_at": "Track at {carrier}",
        "track": "Track your parcel",
        "history": "Tracking history",
        "no_events": "No tracking updates yet.",
        "items": "Items",
        "return_title": "Return an item",
        "return_item": "Item",
        "return_quantity": "Quantity",
        "return_reason": "Reason",
        "return_submit": "Request a return",
        "in_shipment": "In this shipment",
        "not_shipped": "Not yet shipped",
        "no_shipments": "Your order has been received and will ship soon.",
        "cancelled_note": "This order was cancelled.",
        "cancel_title": "Cancel this order",
        "cancel_reason": "Why? (optional)",
        "cancel_button": "Cancel my order",
    },
    "de": {
        "title": "Bestellung {order}",
        "placed": "Bestellt am {date}",
        "ships_to": "Lieferung nach {place}",
        "shipment": "Sendung {number}",
        "carrier": "Versanddienstleister",
        "tracking_number": "Sendungsnummer",
        "status": "Status",
        "estimated": "Voraussichtliche Zustellung",
        "delivered_on": "Zugestellt am",
        "track_at": "Bei {carrier} verfolgen",
        "track": "Sendung verfolgen",
        "history": "Sendungsverlauf",
        "no_events": "Noch keine Sendungsdaten.",
        "items": "Artikel",
        "return_title": "Artikel zurücksenden",
        "return_item": "Artikel",
        "return_quantity": "Menge",
        "return_reason": "Grund",
        "return_submit": "Rücksendung anfragen",
        "in_shipment": "In dieser Sendung",
        "not_shipped": "Noch nicht versandt",
        "no_shipments": "Deine Bestellung ist eingegangen und wird bald versandt.",
        "cancelled_note": "Diese Bestellung wurde storniert.",
        "cancel_title": "Diese Bestellung stornieren",
        "cancel_reason": "Warum? (freiwillig)",
        "cancel_button": "Bestellung stornieren",
    },
}

#: The most of the header read (a real one is a few dozen characters).
_MAX_ACCEPT_LANGUAGE = 512


def negotiate(accept_language: str | None, default: str) -> str:
    """The language of ``LANGUAGES`` the ``Accept-Language`` header prefers most (RFC 9110
    weights; ``de-AT`` counts as ``de``); the store's default if it names none of them."""
    best: tuple[float, int, str] | None = None
    for index, part in enumerate((accept_language or "")[:_MAX_ACCEPT_LANGUAGE].split(",")):
        tag, _, params = part.strip().partition(";")
        language = tag.strip().split("-")[0].lower()
        if language not in LANGUAGES:
            continue
        weight = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                weight = float(params[2:])
            except ValueError:
                continue
        if not 0 < weight <= 1:
            continue
        # Highest weight wins; on a tie the one named first.
        if best is None or (weight, -index) > (best[0], best[1]):
            best = (weight, -index, language)
    if best is not None:
        return best[2]
    return default if default in LANGUAGES else "en"


def status_label(status: str, locale: str) -> str:
    return STATUS[locale].get(status, status.replace("_", " ").capitalize())


def country_name(code: str | None, locale: str) -> str | None:
    if code is None:
        return None
    name = Locale.parse(locale).territories.get(code.upper())
    return name if isinstance(name, str) else code


def date(value: datetime, locale: str) -> str:
    return format_date(value.astimezone(UTC), format="long", locale=locale)


def moment(value: datetime, locale: str) -> str:
    """A date and time, in UTC (the page does not know the customer's time zone) and says so."""
    return format_datetime(value, format="medium", tzinfo=UTC, locale=locale) + " UTC"
