"""What an incoming order says, before it becomes rows: one shape for Shopify, manual and CSV.

Parsing is strict about what we rely on (ids, quantities, money) and lenient about the rest.
Money is ``Decimal`` parsed from Shopify's strings; ids stay exact Python ints (unsigned 64-bit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.codes import currency_error, is_currency
from app.errors import InvalidInput
from app.limits import (
    MAX_AMOUNT,
    MAX_DATETIME,
    MAX_ID,
    MAX_LINE_QUANTITY,
    MAX_SHOPIFY_ID,
    MAX_TITLE,
    MIN_DATETIME,
)
from app.mail.address import email_problem

ADDRESS_FIELDS = (
    "name",
    "first_name",
    "last_name",
    "company",
    "address1",
    "address2",
    "city",
    "province",
    "province_code",
    "zip",
    "country",
    "country_code",
    "phone",
)
_STRIPE_ID = re.compile(r"^(pi|ch|py)_[A-Za-z0-9]{8,}$")
_AMOUNT = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


class PayloadError(InvalidInput):
    """The payload cannot be used; ``field`` (named first, as the mapping reads) says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


@dataclass
class CustomerDraft:
    shopify_customer_id: int | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None


@dataclass
class LineDraft:
    title: str
    quantity: int
    price: Decimal
    sku: str | None = None
    variant_id: int | None = None
    product_id: int | None = None
    variant_title: str | None = None
    shopify_line_id: int | None = None
    total_discount: Decimal = Decimal("0")
    requires_shipping: bool = True

    def signature(self) -> tuple[Any, ...]:
        return (self.shopify_line_id, self.sku, self.variant_id, self.quantity, self.price)


@dataclass
class OrderDraft:
    source: str
    name: str
    currency: str
    subtotal_price: Decimal
    total_tax: Decimal
    total_shipping: Decimal
    total_discounts: Decimal
    total_price: Decimal
    lines: list[LineDraft]
    financial_status: str | None = None
    email: str | None = None
    customer: CustomerDraft | None = None
    shipping_address: dict[str, Any] | None = None
    billing_address: dict[str, Any] | None = None
    shipping_method: str | None = None
    note: str | None = None
    customer_locale: str | None = None
    shopify_order_id: int | None = None
    shopify_gid: str | None = None
    order_number: int | None = None
    external_ref: str | None = None
    placed_at: datetime | None = None
    source_updated_at: datetime | None = None
    cancelled_at: datetime | None = None
    stripe_payment_reference: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def money(value: Any, field_name: str) -> Decimal:
    """An amount from a JSON string or number, exact: ``"19.99"`` is ``Decimal("19.99")``.

    Floats (a parser without ``parse_float=Decimal``) go through their shortest repr, never their
    binary value. Anything that is not a finite amount the database can hold is a PayloadError.
    """
    if value is None or value == "":
        return Decimal("0")
    if isinstance(value, bool):
        raise PayloadError(field_name, f"not an amount: {value!r}")
    if isinstance(value, float):
        value = repr(value)
    if isinstance(value, str):
        text = value.strip()
        if not _AMOUNT.match(text):  # no "NaN", "1_000", "0x10", ...
            raise PayloadError(field_name, f"not an amount: {value!r}")
        value = text
    elif not isinstance(value, int | Decimal):
        raise PayloadError(field_name, f"not an amount: {value!r}")
    try:
        amount = Decimal(value)
    except (InvalidOperation, ValueError) as exc:
        raise PayloadError(field_name, f"not an amount: {value!r}") from exc
    if not amount.is_finite() or abs(amount) > MAX_AMOUNT:
        raise PayloadError(field_name, f"not an amount: {value!r}")
    if amount < 0:
        raise PayloadError(field_name, f"must not be negative, got {value!r}")
    return amount


def optional_int(
    value: Any, field_name: str, *, minimum: int = -MAX_ID, maximum: int = MAX_ID
) -> int | None:
    """An integer from a JSON number or a string of ASCII digits, within ``[minimum, maximum]``
    (signed 64-bit by default, what a BIGINT column holds)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PayloadError(field_name, "must be an integer")
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        value = int(value.strip())
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        value = int(value)  # ``1.0`` parsed with parse_float=Decimal
    if not isinstance(value, int):
        raise PayloadError(field_name, f"must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise PayloadError(field_name, f"out of range: {value}")
    return value


def shopify_id(value: Any, field_name: str) -> int | None:
    """A Shopify id: 1 … 2**64-1 (unsigned 64-bit), from a JSON number or a string of digits."""
    return optional_int(value, field_name, minimum=1, maximum=MAX_SHOPIFY_ID)


def timestamp(value: Any, field_name: str) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise PayloadError(field_name, "must be an ISO 8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PayloadError(field_name, f"not an ISO 8601 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not MIN_DATETIME <= parsed < MAX_DATETIME:  # year 1 with an offset cannot even be UTC
        raise PayloadError(
            field_name, f"must be between {MIN_DATETIME.year} and {MAX_DATETIME.year}: {value!r}"
        )
    return parsed.astimezone(UTC)


def _text(value: Any, limit: int | None = None) -> str | None:
    """Free text, stripped (of NUL too); ``limit`` truncates to what the column holds
    (PostgreSQL refuses longer values, which would make the delivery fail on every retry)."""
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).replace("\x00", "").strip()  # PostgreSQL cannot store NUL
    if limit is not None:
        text = text[:limit].rstrip()
    return text or None


def address(value: Any, field_name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PayloadError(field_name, "must be an object")
    out = {k: _text(value.get(k), 255) for k in ADDRESS_FIELDS}
    if out["country_code"]:
        out["country_code"] = out["country_code"].upper()
    if not out["name"] and (out["first_name"] or out["last_name"]):
        out["name"] = " ".join(p for p in (out["first_name"], out["last_name"]) if p)
    return out


def _stripe_reference(payload: dict[str, Any]) -> str | None:
    """The Stripe PaymentIntent/charge id when the order was paid through Stripe.

    Shopify puts the gateway in ``payment_gateway_names`` (or the older ``gateway``); a
    storefront that charges through Stripe itself passes the id in ``note_attributes``.
    """
    gateways = [str(g).lower() for g in _list(payload.get("payment_gateway_names"))]
    if isinstance(payload.get("gateway"), str):
        gateways.append(payload["gateway"].lower())
    candidates: list[Any] = []
    for attr in _list(payload.get("note_attributes")):
        if isinstance(attr, dict):
            candidates.append(attr.get("value"))
    for txn in _list(payload.get("transactions")):
        if isinstance(txn, dict):
            candidates.append(txn.get("authorization"))
            receipt = txn.get("receipt")
            if isinstance(receipt, dict):
                candidates.append(receipt.get("payment_intent"))
    for c in candidates:
        if isinstance(c, str) and _STRIPE_ID.match(c.strip()):
            return c.strip()
    if any("stripe" in g for g in gateways):
        ref = _text(payload.get("checkout_token")) or _text(payload.get("token"))
        return _text(f"shopify-checkout:{ref}", 255) if ref else None
    return None


def _list(value: Any) -> list[Any]:
    """A JSON array, or nothing (a lone string is one item, not a list of characters)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str | dict):
        return [value]
    return []


def from_shopify(payload: dict[str, Any]) -> OrderDraft:
    """Map Shopify's Order resource (the ``orders/*`` webhook body) to a draft."""
    if not isinstance(payload, dict):
        raise PayloadError("body", "must be a JSON object")
    order_id = shopify_id(payload.get("id"), "id")
    if order_id is None:
        raise PayloadError("id", "missing")
    currency = _text(payload.get("currency")) or _text(payload.get("presentment_currency"))
    if currency is None or not is_currency(currency):
        raise PayloadError("currency", currency_error(currency))

    raw_lines = payload.get("line_items")
    if not isinstance(raw_lines, list):
        raise PayloadError("line_items", "must be a list")
    lines = [_shopify_line(i, item) for i, item in enumerate(raw_lines)]

    shipping_lines = [s for s in _list(payload.get("shipping_lines")) if isinstance(s, dict)]
    shipping_set = payload.get("total_shipping_price_set")
    shop_money = shipping_set.get("shop_money") if isinstance(shipping_set, dict) else None
    if isinstance(shop_money, dict) and shop_money.get("amount") is not None:
        total_shipping = money(shop_money["amount"], "total_shipping_price_set.shop_money.amount")
    else:
        total_shipping = sum(
            (
                money(s.get("price"), f"shipping_lines[{j}].price")
                for j, s in enumerate(shipping_lines)
            ),
            Decimal("0"),
        )
    dropped: list[str] = []
    raw_customer = payload.get("customer")
    customer = None
    if isinstance(raw_customer, dict):
        customer = CustomerDraft(
            shopify_customer_id=shopify_id(raw_customer.get("id"), "customer.id"),
            email=_email(raw_customer.get("email"), "customer.email", dropped),
            first_name=_text(raw_customer.get("first_name"), 255),
            last_name=_text(raw_customer.get("last_name"), 255),
            phone=_text(raw_customer.get("phone"), 64),
        )
    order_number = optional_int(payload.get("order_number"), "order_number")
    name = _text(payload.get("name"), 255) or f"#{order_number or order_id}"
    return OrderDraft(
        source="shopify",
        name=name,
        currency=currency,
        subtotal_price=money(payload.get("subtotal_price"), "subtotal_price"),
        total_tax=money(payload.get("total_tax"), "total_tax"),
        total_shipping=total_shipping,
        total_discounts=money(payload.get("total_discounts"), "total_discounts"),
        total_price=money(payload.get("total_price"), "total_price"),
        lines=lines,
        financial_status=_text(payload.get("financial_status"), 32),
        email=_email(payload.get("email"), "email", dropped)
        or _email(payload.get("contact_email"), "contact_email", dropped),
        customer=customer,
        shipping_address=address(payload.get("shipping_address"), "shipping_address"),
        billing_address=address(payload.get("billing_address"), "billing_address"),
        shipping_method=_text(shipping_lines[0].get("title"), 255) if shipping_lines else None,
        note=_text(payload.get("note")),
        customer_locale=_text(payload.get("customer_locale"), 16),
        shopify_order_id=order_id,
        shopify_gid=_text(payload.get("admin_graphql_api_id"), 255)
        or f"gid://shopify/Order/{order_id}",
        order_number=order_number,
        placed_at=timestamp(payload.get("created_at"), "created_at"),
        source_updated_at=timestamp(payload.get("updated_at"), "updated_at"),
        cancelled_at=timestamp(payload.get("cancelled_at"), "cancelled_at"),
        stripe_payment_reference=_stripe_reference(payload),
        extra={"dropped": dropped} if dropped else {},
    )


def _shopify_line(i: int, item: Any) -> LineDraft:
    where = f"line_items[{i}]"
    if not isinstance(item, dict):
        raise PayloadError(where, "must be an object")
    # ``quantity`` stays what was ordered; ``current_quantity`` (Admin API 2024-01+) is what is
    # left after order edits removed items: that is what must be shipped.
    key = "current_quantity" if item.get("current_quantity") is not None else "quantity"
    qty = optional_int(item.get(key), f"{where}.{key}", minimum=0, maximum=MAX_LINE_QUANTITY)
    if qty is None:
        raise PayloadError(f"{where}.quantity", "missing")
    allocations = [a for a in _list(item.get("discount_allocations")) if isinstance(a, dict)]
    discount = sum(
        (
            money(a.get("amount"), f"{where}.discount_allocations[{j}].amount")
            for j, a in enumerate(allocations)
        ),
        Decimal("0"),
    ) or money(item.get("total_discount"), f"{where}.total_discount")
    requires_shipping = item.get("requires_shipping")
    return LineDraft(
        title=_text(item.get("title"), MAX_TITLE)
        or _text(item.get("name"), MAX_TITLE)
        or "(untitled)",
        quantity=qty,
        price=money(item.get("price"), f"{where}.price"),
        sku=_text(item.get("sku"), 255),
        variant_id=shopify_id(item.get("variant_id"), f"{where}.variant_id"),
        product_id=shopify_id(item.get("product_id"), f"{where}.product_id"),
        variant_title=_text(item.get("variant_title"), MAX_TITLE),
        shopify_line_id=shopify_id(item.get("id"), f"{where}.id"),
        total_discount=discount,
        # Absent or null: a physical product (Shopify's default); only an explicit false is not.
        requires_shipping=requires_shipping is None or bool(requires_shipping),
    )


def _email(value: Any, field_name: str, dropped: list[str]) -> str | None:
    """An email as given, or None when it is not one plain address (the same check as every
    other email we accept). A bad email never costs the order: it is dropped, and why is noted
    in ``dropped`` for the order's timeline."""
    text = _text(value)
    if text is None:
        return None
    problem = email_problem(text)
    if problem is not None:
        dropped.append(f"{field_name} dropped: {problem}")
        return None
    return text
