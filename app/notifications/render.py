"""Rendering customer emails: Jinja2's sandbox, the shipped templates, the customer's language.

Merchants write templates, so every template (theirs and ours) renders in Jinja2's
``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: no attribute starting with ``_``
(``''.__class__``), no calls that change data, a misspelt variable is an error rather than an
empty string, ``**`` is refused and ``*`` may not build a string or list past the output
bound, and a rendering longer than ``MAX_RENDERED`` stops. The HTML part autoescapes, the
subject and the text part do not. Money and dates are formatted for the customer's locale by
Babel before they reach a template, so a template only places them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache, lru_cache
from types import TracebackType
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import PackageLoader, StrictUndefined, Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app import limits
from app.errors import InvalidInput
from app.merchants.settings import LANGUAGES

#: The customer emails, by the switch that turns each on or off (``notifications.<kind>``).
KINDS = (
    "order_confirmation",
    "shipped",
    "out_for_delivery",
    "delivered",
    "delayed",
    "cancelled",
    "refund_issued",
    "return_requested",
    "return_approved",
    "return_rejected",
    "return_received",
)
#: The emails about one return (keyed by the return, its facts in ``rma``).
RETURN_KINDS = ("return_requested", "return_approved", "return_rejected", "return_received")
#: The three parts of a template, in the order they are checked (and named in errors).
PARTS = ("subject", "text", "html")
DEFAULT_COLOR = "#1a73e8"


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            raise SecurityError("the ** operator is not allowed in templates")
        sized = [v for v in (left, right) if isinstance(v, str | list | tuple)]
        counts = [v for v in (left, right) if isinstance(v, int)]
        if sized and counts and len(sized[0]) * counts[0] > limits.MAX_RENDERED:
            raise SecurityError("the * operator would build a value too large")
        return super().call_binop(context, operator, left, right)


@cache
def _env(html: bool) -> _Sandbox:
    """The shipped templates are the loader's (so theirs may ``{% extends "en/_layout.html" %}``);
    path traversal out of that folder is refused by Jinja's loader."""
    return _Sandbox(
        loader=PackageLoader("app.notifications", "templates"),
        autoescape=html,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )


def _env_of(part: str) -> _Sandbox:
    return _env(part == "html")


def _suffix(part: str) -> str:
    return {"subject": "subject", "text": "txt", "html": "html"}[part]


@dataclass(frozen=True)
class Source:
    """A template as written: subject, text and HTML (Jinja2 source)."""

    subject: str
    text: str
    html: str

    def part(self, name: str) -> str:
        value: str = getattr(self, name)
        return value


def default_source(kind: str, locale: str) -> Source:
    """The shipped template of ``kind`` in ``locale``."""
    loader = _env(False).loader
    assert loader is not None
    parts = [loader.get_source(_env(False), f"{locale}/{kind}.{_suffix(p)}")[0] for p in PARTS]
    return Source(*parts)


@lru_cache(maxsize=512)
def _compile(part: str, source: str) -> Template:
    return _env_of(part).from_string(source)


def _template_line(tb: TracebackType | None) -> int | None:
    """The template line an error was raised at (Jinja2 rewrites tracebacks to show it)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class TemplateProblem(InvalidInput):
    """A template that does not compile or render: the part (field) and line at fault."""

    def __init__(self, part: str, message: str, line: int | None) -> None:
        where = f"line {line}: " if line is not None else ""
        extra = {"line": str(line)} if line is not None else {}
        super().__init__(f"{where}{message}", field=part, **extra)
        self.line = line


def compile_part(part: str, source: str) -> Template:
    try:
        return _compile(part, source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(part, f"syntax error: {exc.message}", exc.lineno) from None
    except (RecursionError, ValueError, OverflowError, MemoryError) as exc:
        # Nesting too deep for the parser or for Python's compiler, a literal out of range.
        raise TemplateProblem(part, f"cannot compile: {type(exc).__name__}", None) from None


def _render(part: str, template: Template, context: dict[str, Any]) -> str:
    chunks: list[str] = []
    size = 0
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > limits.MAX_RENDERED:
                raise TemplateProblem(
                    part, f"renders to more than {limits.MAX_RENDERED} characters", None
                )
            chunks.append(chunk)
    except TemplateProblem:
        raise
    except SecurityError as exc:
        raise TemplateProblem(
            part, f"not allowed: {exc}", _template_line(sys.exc_info()[2])
        ) from None
    except Exception as exc:  # undefined names, bad filters, 1/0...: the template's fault
        message = str(exc) or type(exc).__name__
        raise TemplateProblem(
            part, f"cannot render: {message}", _template_line(sys.exc_info()[2])
        ) from None
    return "".join(chunks)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str

    def content(self) -> tuple[str, str, str | None]:
        return self.subject, self.text, self.html


def render(source: Source, context: dict[str, Any]) -> Rendered:
    """Compile and render the three parts; :class:`TemplateProblem` names the first at fault."""
    out = [_render(p, compile_part(p, source.part(p)), context) for p in PARTS]
    return Rendered(" ".join(out[0].split()), out[1], out[2])


def render_default(kind: str, locale: str, context: dict[str, Any]) -> Rendered:
    out = [
        _render(p, _env_of(p).get_template(f"{locale}/{kind}.{_suffix(p)}"), context) for p in PARTS
    ]
    return Rendered(" ".join(out[0].split()), out[1], out[2])


# --------------------------------------------------------------------------- language


def pick_locale(customer_locale: str | None, default: str | None) -> str:
    """The language we ship that the customer reads: ``de`` for ``de``, ``de-DE``, ``de_CH``...;
    else the merchant's default; else English."""
    if customer_locale:
        language = customer_locale.replace("_", "-").split("-")[0].strip().lower()
        if language in LANGUAGES:
            return language
    return default if default in LANGUAGES else "en"


def format_locale(customer_locale: str | None, language: str) -> Locale:
    """Babel's locale for money and dates: the customer's own region when it speaks the
    chosen language (``de-CH`` formats francs the Swiss way), else the language alone."""
    if customer_locale:
        try:
            parsed = Locale.parse(customer_locale.replace("_", "-"), sep="-")
        except (UnknownLocaleError, ValueError, TypeError):
            parsed = None
        if parsed is not None and parsed.language == language:
            return parsed
    return Locale.parse(language)


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class Brand:
    name: str
    logo_url: str | None = None
    color: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True)
class LineFacts:
    title: str
    quantity: int
    sku: str | None = None
    variant_title: str | None = None
    price: Decimal | None = None


@dataclass(frozen=True)
class OrderFacts:
    name: str
    placed_at: datetime
    currency: str
    subtotal: Decimal
    shipping: Decimal
    tax: Decimal
    discounts: Decimal
    total: Decimal
    tracking_url: str
    customer_name: str | None = None
    lines: tuple[LineFacts, ...] = ()
    shipping_address: dict[str, Any] | None = None


@dataclass(frozen=True)
class ShipmentFacts:
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None
    shipped_at: datetime
    status: str
    estimated_delivery_at: datetime | None = None
    lines: tuple[LineFacts, ...] = ()


@dataclass(frozen=True)
class EventFacts:
    """What happened: a tracking event (status, time, place, the carrier's words) or a
    cancellation (its reason)."""

    status: str
    occurred_at: datetime | None = None
    description: str | None = None
    location: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class CancellationFacts:
    """What a cancellation cancelled; ``partial``: some of the order had shipped."""

    lines: tuple[LineFacts, ...] = ()
    partial: bool = False


@dataclass(frozen=True)
class RefundFacts:
    amount: Decimal
    currency: str
    reason: str | None = None
    lines: tuple[LineFacts, ...] = ()
    #: The shipping cost was refunded too.
    shipping: bool = False


@dataclass(frozen=True)
class ReturnFacts:
    number: str
    reason: str | None = None
    exchange: bool = False
    lines: tuple[LineFacts, ...] = ()
    instructions: str | None = None
    return_address: dict[str, Any] | None = None
    label_url: str | None = None
    rejection_reason: str | None = None
    #: ``resellable`` or ``damaged`` once received.
    condition: str | None = None


@dataclass(frozen=True)
class Facts:
    brand: Brand
    order: OrderFacts
    shipment: ShipmentFacts | None = None
    event: EventFacts | None = None
    cancellation: CancellationFacts | None = None
    refund: RefundFacts | None = None
    rma: ReturnFacts | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _address_lines(a: dict[str, Any] | None) -> list[str]:
    if not a:
        return []
    city = " ".join(str(a[k]) for k in ("zip", "city", "province_code") if a.get(k))
    parts = [a.get("name"), a.get("company"), a.get("address1"), a.get("address2"), city]
    parts.append(a.get("country_code"))
    return [str(p) for p in parts if p]


def _lines(lines: Iterable[LineFacts], money: Any) -> list[dict[str, Any]]:
    return [
        {
            "title": ln.title,
            "variant_title": ln.variant_title,
            "sku": ln.sku,
            "quantity": ln.quantity,
            "price": money(ln.price) if ln.price is not None else None,
            "total": money(ln.price * ln.quantity) if ln.price is not None else None,
        }
        for ln in lines
    ]


def context(facts: Facts, language: str, fmt: Locale) -> dict[str, Any]:
    """What a template sees: plain values, money and dates already formatted for ``fmt``."""
    o = facts.order

    def money(amount: Decimal) -> str:
        return str(format_currency(amount, o.currency, locale=fmt))

    def day(at: datetime | None) -> str | None:
        return str(format_date(at.date(), "long", locale=fmt)) if at is not None else None

    s = facts.shipment
    e = facts.event
    c = facts.cancellation
    r = facts.refund
    m = facts.rma
    return {
        "locale": language,
        "shop": {
            "name": facts.brand.name,
            "logo_url": facts.brand.logo_url,
            "color": facts.brand.color or DEFAULT_COLOR,
            "reply_to": facts.brand.reply_to,
        },
        "order": {
            "name": o.name,
            "placed_at": day(o.placed_at),
            "currency": o.currency,
            "subtotal": money(o.subtotal),
            "shipping": money(o.shipping),
            "tax": money(o.tax),
            "discounts": money(o.discounts),
            "total": money(o.total),
            "customer_name": o.customer_name,
            "lines": _lines(o.lines, money),
            "shipping_address": _address_lines(o.shipping_address),
            "tracking_url": o.tracking_url,
        },
        "shipment": None
        if s is None
        else {
            "carrier": s.carrier,
            "tracking_number": s.tracking_number,
            "tracking_url": s.tracking_url,
            "shipped_at": day(s.shipped_at),
            "status": s.status,
            "estimated_delivery": day(s.estimated_delivery_at),
            "lines": _lines(s.lines, money),
        },
        "event": None
        if e is None
        else {
            "status": e.status,
            "occurred_at": day(e.occurred_at),
            "description": e.description,
            "location": e.location,
            "reason": e.reason,
        },
        "cancellation": None
        if c is None
        else {"lines": _lines(c.lines, money), "partial": c.partial},
        "refund": None
        if r is None
        else {
            # The refund's own currency (Babel: "€12.30", "¥1,200", "12,30 €").
            "amount": str(format_currency(r.amount, r.currency, locale=fmt)),
            "currency": r.currency,
            "reason": r.reason,
            "lines": _lines(r.lines, money),
            "shipping": r.shipping,
        },
        "rma": None
        if m is None
        else {
            "number": m.number,
            "reason": m.reason,
            "exchange": m.exchange,
            "lines": _lines(m.lines, money),
            "instructions": m.instructions,
            "return_address": _address_lines(m.return_address),
            "label_url": m.label_url,
            "rejection_reason": m.rejection_reason,
            "condition": m.condition,
        },
        "tracking_url": o.tracking_url,
        **facts.extra,
    }


#: What each kind is about (its shipment and event, in the sample).
_SHIPMENT_KINDS = ("shipped", "out_for_delivery", "delivered", "delayed")


def sample_facts(kind: str, language: str, brand: Brand, public_url: str) -> Facts:
    """A made-up order for previews and for validating a template before it is stored."""
    at = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    euro = language == "de"
    order = OrderFacts(
        name="#1001",
        placed_at=at,
        currency="EUR" if euro else "USD",
        subtotal=Decimal("25.99"),
        shipping=Decimal("4.90"),
        tax=Decimal("0.00"),
        discounts=Decimal("0.00"),
        total=Decimal("30.89"),
        tracking_url=f"{public_url.rstrip('/')}/track/sample",
        customer_name="Ada Lovelace",
        lines=(
            LineFacts("Red mug", 2, "SKU-RED", None, Decimal("10.50")),
            LineFacts("Blue cap", 1, "SKU-BLUE", "Large", Decimal("4.99")),
        ),
        shipping_address={
            "name": "Ada Lovelace",
            "address1": "Hauptstraße 1" if euro else "12 Congress Ave",
            "city": "Berlin" if euro else "Austin",
            "zip": "10115" if euro else "78701",
            "province_code": None if euro else "TX",
            "country_code": "DE" if euro else "US",
        },
    )
    shipment = None
    event = None
    if kind in _SHIPMENT_KINDS:
        status = {"shipped": "shipped", "delayed": "exception"}.get(kind, kind)
        shipment = ShipmentFacts(
            carrier="DHL",
            tracking_number="00340434161094042557",
            tracking_url="https://www.dhl.de/de/privatkunden/dhl-sendungsverfolgung.html?piececode=00340434161094042557",
            shipped_at=datetime(2026, 3, 15, 14, 0, tzinfo=UTC),
            status=status,
            estimated_delivery_at=datetime(2026, 3, 18, 12, 0, tzinfo=UTC),
            lines=(LineFacts("Red mug", 2, "SKU-RED"), LineFacts("Blue cap", 1, "SKU-BLUE")),
        )
        event = EventFacts(
            status=status,
            occurred_at=datetime(2026, 3, 17, 8, 15, tzinfo=UTC),
            description="Address could not be found" if kind == "delayed" else None,
            location="Berlin, DE",
        )
    cancellation = refund = rma = None
    if kind == "cancelled":
        event = EventFacts(status="cancelled", reason="out of stock")
        cancellation = CancellationFacts(lines=order.lines)
    elif kind == "refund_issued":
        event = EventFacts(status="refunded", reason="returned")
        refund = RefundFacts(
            Decimal("21.00"), order.currency, "returned", (LineFacts("Red mug", 2, "SKU-RED"),)
        )
    elif kind in RETURN_KINDS:
        event = EventFacts(status=kind, reason="too small")
        rma = ReturnFacts(
            number="RMA-1001-1",
            reason="too small",
            lines=(LineFacts("Red mug", 1, "SKU-RED"),),
            instructions="Pack the item in its original box."
            if kind == "return_approved"
            else None,
            return_address={
                "name": "Acme Returns",
                "address1": "Lagerstraße 5" if euro else "500 Dock St",
                "city": "Hamburg" if euro else "Austin",
                "zip": "20095" if euro else "78702",
                "country_code": "DE" if euro else "US",
            }
            if kind == "return_approved"
            else None,
            label_url="https://labels.example.com/RMA-1001-1.pdf"
            if kind == "return_approved"
            else None,
            rejection_reason="the return window has closed" if kind == "return_rejected" else None,
            condition="resellable" if kind == "return_received" else None,
        )
    return Facts(
        brand=brand,
        order=order,
        shipment=shipment,
        event=event,
        cancellation=cancellation,
        refund=refund,
        rma=rma,
    )
