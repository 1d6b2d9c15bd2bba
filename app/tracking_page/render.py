"""The tracking page as HTML: one Jinja2 template (autoescaped), its stylesheet inline under
the response's CSP nonce, no script at all."""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from app.tracking_page import i18n
from app.tracking_page.schemas import TrackingPageOut

DEFAULT_COLOR = "#1f2937"


@cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("app.tracking_page", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "css"), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(page: TrackingPageOut, nonce: str, token: str = "") -> str:
    locale = page.locale
    words = i18n.WORDS[locale]
    unshipped = [i for i in page.items if i.quantity_unshipped]
    shipments: list[dict[str, Any]] = [
        {
            "s": s,
            "shipped_on": i18n.date(s.shipped_at, locale),
            "estimated": i18n.date(s.estimated_delivery_at, locale)
            if s.estimated_delivery_at
            else None,
            "delivered": i18n.date(s.delivered_at, locale) if s.delivered_at else None,
            "lines": [
                (i, q)
                for i in page.items
                for n, q in ((x.shipment, x.quantity) for x in i.shipments)
                if n == s.number
            ],
            "events": [(e, i18n.moment(e.occurred_at, locale)) for e in s.events],
        }
        for s in page.shipments
    ]
    place = ", ".join(p for p in (page.ship_to.city, page.ship_to.country) if p)
    return (
        _templates()
        .get_template("track.html")
        .render(
            page=page,
            w=words,
            nonce=nonce,
            color=page.store.color or DEFAULT_COLOR,
            placed=i18n.date(page.placed_at, locale),
            place=place,
            shipments=shipments,
            unshipped=unshipped,
            token=token,
        )
    )
