"""What an incoming order says, before it becomes rows: one shape for Shopify, manual and CSV.

Parsing is strict about what we rely on (ids, quantities, money) and lenient about the rest.
Money is ``Decimal`` parsed from Shopify's strings; ids stay exact Python ints (64-bit safe).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

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
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class PayloadError(ValueError):
    """The payload cannot be used; ``field`` names where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


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
    if value is None or value == "":
        return Decimal("0")
    if isinstance(value, float):  # JSON numbers: go through their shortest repr, never binary
        value = repr(value)
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise PayloadError(field_name, f"not an amount: {value!r}") from exc
    if not amount.is_finite():
        raise PayloadError(field_name, f"not an amount: {value!r}")
    return amount


def optional_int(value: Any, field_name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PayloadError(field_name, "must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise PayloadError(field_name, f"must be an integer, got {value!r}")


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
    return parsed.astimezone(UTC)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def address(value: Any, field_name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PayloadError(field_name, "must be an object")
    out = {k: _text(value.get(k)) for k in ADDRESS_FIELDS}
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
    gateways = [str(g).lower() for g in payload.get("payment_gateway_names") or []]
    if payload.get("gateway"):
        gateways.append(str(payload["gateway"]).lower())
    candidates: list[Any] = []
    for attr in payload.get("note_attributes") or []:
        if isinstance(attr, dict):
            candidates.append(attr.get("value"))
    for txn in payload.get("transactions") or []:
        if isinstance(txn, dict):
            candidates.append(txn.get("authorization"))
            candidates.append((txn.get("receipt") or {}).get("payment_intent"))
    for c in candidates:
        if isinstance(c, str) and _STRIPE_ID.match(c.strip()):
            return c.strip()
    if any("stripe" in g for g in gateways):
        ref = payload.get("checkout_token") or payload.get("token")
        return f"shopify-checkout:{ref}" if ref else None
    return None


def from_shopify(payload: dict[str, Any]) -> OrderDraft:
    """Map Shopify's Order resource (the ``orders/*`` webhook body) to a draft."""
    if not isinstance(payload, dict):
        raise PayloadError("body", "must be a JSON object")
    order_id = optional_int(payload.get("id"), "id")
    if order_id is None:
        raise PayloadError("id", "missing")
    currency = _text(payload.get("currency")) or _text(payload.get("presentment_currency"))
    if not currency or not _CURRENCY.match(currency):
        raise PayloadError("currency", f"must be an ISO 4217 code, got {currency!r}")

    raw_lines = payload.get("line_items")
    if not isinstance(raw_lines, list):
        raise PayloadError("line_items", "must be a list")
    lines = []
    for i, item in enumerate(raw_lines):
        if not isinstance(item, dict):
            raise PayloadError(f"line_items[{i}]", "must be an object")
        qty = optional_int(item.get("quantity"), f"line_items[{i}].quantity")
        if qty is None or qty < 0:
            raise PayloadError(f"line_items[{i}].quantity", "must be a non-negative integer")
        discount = sum(
            (
                money(a.get("amount"), f"line_items[{i}].discount_allocations")
                for a in item.get("discount_allocations") or []
                if isinstance(a, dict)
            ),
            Decimal("0"),
        ) or money(item.get("total_discount"), f"line_items[{i}].total_discount")
        lines.append(
            LineDraft(
                title=_text(item.get("title")) or _text(item.get("name")) or "(untitled)",
                quantity=qty,
                price=money(item.get("price"), f"line_items[{i}].price"),
                sku=_text(item.get("sku")),
                variant_id=optional_int(item.get("variant_id"), f"line_items[{i}].variant_id"),
                product_id=optional_int(item.get("product_id"), f"line_items[{i}].product_id"),
                variant_title=_text(item.get("variant_title")),
                shopify_line_id=optional_int(item.get("id"), f"line_items[{i}].id"),
                total_discount=discount,
                requires_shipping=bool(item.get("requires_shipping", True)),
            )
        )

    shipping_lines = [s for s in payload.get("shipping_lines") or [] if isinstance(s, dict)]
    shipping_set = ((payload.get("total_shipping_price_set") or {}).get("shop_money")) or {}
    total_shipping = (
        money(shipping_set.get("amount"), "total_shipping_price_set")
        if shipping_set.get("amount") is not None
        else sum(
            (money(s.get("price"), "shipping_lines.price") for s in shipping_lines), Decimal("0")
        )
    )
    raw_customer = payload.get("customer")
    customer = None
    if isinstance(raw_customer, dict):
        customer = CustomerDraft(
            shopify_customer_id=optional_int(raw_customer.get("id"), "customer.id"),
            email=_text(raw_customer.get("email")),
            first_name=_text(raw_customer.get("first_name")),
            last_name=_text(raw_customer.get("last_name")),
            phone=_text(raw_customer.get("phone")),
        )
    name = _text(payload.get("name")) or f"#{payload.get('order_number') or order_id}"
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
        financial_status=_text(payload.get("financial_status")),
        email=_text(payload.get("email")) or _text(payload.get("contact_email")),
        customer=customer,
        shipping_address=address(payload.get("shipping_address"), "shipping_address"),
        billing_address=address(payload.get("billing_address"), "billing_address"),
        shipping_method=_text(shipping_lines[0].get("title")) if shipping_lines else None,
        note=_text(payload.get("note")),
        shopify_order_id=order_id,
        shopify_gid=_text(payload.get("admin_graphql_api_id")) or f"gid://shopify/Order/{order_id}",
        order_number=optional_int(payload.get("order_number"), "order_number"),
        placed_at=timestamp(payload.get("created_at"), "created_at"),
        source_updated_at=timestamp(payload.get("updated_at"), "updated_at"),
        cancelled_at=timestamp(payload.get("cancelled_at"), "cancelled_at"),
        stripe_payment_reference=_stripe_reference(payload),
    )
