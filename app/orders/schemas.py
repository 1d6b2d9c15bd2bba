"""Wire shapes of the merchant order API. Ids from Shopify are strings on the wire (64-bit safe
for every JSON client); money is a decimal string with its currency."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app import limits
from app.codes import check_country, check_currency, wire_amount
from app.inputs import (
    Amount,
    CountryCode,
    Currency,
    Input,
    LongText,
    OptionalText,
    ShortText,
    Title,
    check_amount,
)
from app.limits import MAX_AMOUNT
from app.mail.address import EmailAddress, check_email
from app.orders.drafts import ADDRESS_FIELDS, CustomerDraft, LineDraft, OrderDraft
from app.orders.models import Order, OrderLine, OrderSource
from app.purchasing.schemas import OrderPurchaseOrder
from app.timeline.models import OrderEvent

#: The order's lines, counted; quantities are per line.
Quantity = Annotated[int, Meta(ge=1, le=limits.MAX_LINE_QUANTITY)]


class AddressIn(Input):
    name: ShortText
    address1: ShortText
    city: ShortText
    country_code: CountryCode
    address2: OptionalText = None
    company: OptionalText = None
    province: OptionalText = None
    province_code: OptionalText = None
    zip: OptionalText = None
    phone: OptionalText = None
    first_name: OptionalText = None
    last_name: OptionalText = None
    country: OptionalText = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_country("country_code", self.country_code)


class LineIn(Input):
    sku: ShortText
    quantity: Quantity
    price: Amount
    title: Title | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_amount("price", self.price)


class OrderIn(Input):
    """A manual order. ``reference`` is your own id for it: unique per merchant, so entering the
    same order twice is refused instead of duplicated."""

    currency: Currency
    lines: Annotated[list[LineIn], Meta(min_length=1, max_length=limits.MAX_LINES)]
    shipping_address: AddressIn
    reference: ShortText | None = None
    email: EmailAddress | None = None
    shipping_price: Amount = Decimal("0")
    tax: Amount = Decimal("0")
    discount: Amount = Decimal("0")
    shipping_method: OptionalText = None
    financial_status: Annotated[str, Meta(min_length=1, max_length=32)] = "paid"
    note: LongText | None = None
    #: The Stripe payment of an order paid outside Shopify: refunds go to it.
    stripe_payment_reference: (
        Annotated[
            str,
            Meta(
                max_length=255,
                pattern=r"^(pi|ch|py)_[A-Za-z0-9]{8,}$",
                description="the Stripe PaymentIntent (pi_…) or charge (ch_…, py_…) paid",
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_currency("currency", self.currency)
        check_email("email", self.email)
        for i, ln in enumerate(self.lines):
            check_amount(f"lines[{i}].price", ln.price, self.currency)
        for name in ("shipping_price", "tax", "discount"):
            check_amount(name, getattr(self, name), self.currency)
        if self.subtotal > MAX_AMOUNT:
            raise ValueError(f"lines: the order's subtotal must be at most {MAX_AMOUNT}")
        if self.discount > self.subtotal + self.tax + self.shipping_price:
            raise ValueError("discount: larger than the order's subtotal, tax and shipping")

    @property
    def subtotal(self) -> Decimal:
        return sum((ln.price * ln.quantity for ln in self.lines), Decimal("0"))

    def to_draft(self, source: str = OrderSource.MANUAL) -> OrderDraft:
        subtotal = self.subtotal
        addr = msgspec.structs.asdict(self.shipping_address)
        return OrderDraft(
            source=source,
            name=self.reference or "manual",
            currency=self.currency,
            subtotal_price=subtotal,
            total_tax=self.tax,
            total_shipping=self.shipping_price,
            total_discounts=self.discount,
            total_price=subtotal + self.tax + self.shipping_price - self.discount,
            lines=[
                LineDraft(
                    title=ln.title or ln.sku, quantity=ln.quantity, price=ln.price, sku=ln.sku
                )
                for ln in self.lines
            ],
            financial_status=self.financial_status,
            email=self.email,
            customer=CustomerDraft(email=self.email) if self.email else None,
            shipping_address={k: addr.get(k) for k in ADDRESS_FIELDS},
            shipping_method=self.shipping_method,
            note=self.note,
            external_ref=self.reference,
            stripe_payment_reference=self.stripe_payment_reference,
        )


class LineOut(msgspec.Struct):
    id: uuid.UUID
    sku: str | None
    title: str
    variant_title: str | None
    quantity: int
    price: Decimal
    total_discount: Decimal
    shopify_line_id: str | None
    variant_id: str | None
    product_id: str | None

    @classmethod
    def of(cls, ln: OrderLine, currency: str) -> LineOut:
        return cls(
            id=ln.id,
            sku=ln.sku,
            title=ln.title,
            variant_title=ln.variant_title,
            quantity=ln.quantity,
            price=wire_amount(ln.price, currency),
            total_discount=wire_amount(ln.total_discount, currency),
            shopify_line_id=_s(ln.shopify_line_id),
            variant_id=_s(ln.variant_id),
            product_id=_s(ln.product_id),
        )


class EventOut(msgspec.Struct):
    at: datetime
    type: str
    message: str
    data: dict[str, Any]

    @classmethod
    def of(cls, ev: OrderEvent) -> EventOut:
        return cls(at=ev.created_at, type=ev.type, message=ev.message, data=ev.data)


class OrderSummary(msgspec.Struct):
    id: uuid.UUID
    name: str
    status: str
    status_reason: str | None
    source: str
    shopify_order_id: str | None
    reference: str | None
    currency: str
    total_price: Decimal
    financial_status: str | None
    placed_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, o: Order) -> OrderSummary:
        return cls(
            id=o.id,
            name=o.name,
            status=o.status,
            status_reason=o.status_reason,
            source=o.source,
            shopify_order_id=_s(o.shopify_order_id),
            reference=o.external_ref,
            currency=o.currency,
            total_price=wire_amount(o.total_price, o.currency),
            financial_status=o.financial_status,
            placed_at=o.placed_at,
            created_at=o.created_at,
        )


class OrderRefund(msgspec.Struct, kw_only=True):
    """A refund of the order (``GET /api/v1/refunds/{id}`` has all of it)."""

    id: uuid.UUID
    amount: Decimal
    currency: str
    status: str
    origin: str
    reason: str | None
    stripe_refund_id: str | None
    failure_reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, r: Any) -> OrderRefund:
        return cls(
            id=r.id,
            amount=wire_amount(r.amount, r.currency),
            currency=r.currency,
            status=r.status,
            origin=r.origin,
            reason=r.reason,
            stripe_refund_id=r.stripe_refund_id,
            failure_reason=r.failure_reason,
            created_at=r.created_at,
        )


class OrderDetail(msgspec.Struct):
    id: uuid.UUID
    name: str
    status: str
    status_reason: str | None
    source: str
    shopify_order_id: str | None
    shopify_gid: str | None
    reference: str | None
    order_number: int | None
    email: str | None
    currency: str
    subtotal_price: Decimal
    total_tax: Decimal
    total_shipping: Decimal
    total_discounts: Decimal
    total_price: Decimal
    financial_status: str | None
    stripe_payment_reference: str | None
    shipping_address: dict[str, Any] | None
    shipping_method: str | None
    note: str | None
    placed_at: datetime
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    cancel_requested_at: datetime | None
    tracking_url: str
    lines: list[LineOut]
    timeline: list[EventOut]
    #: Where each line went: purchase orders with their shipments, oldest first.
    purchase_orders: list[OrderPurchaseOrder] = msgspec.field(default_factory=list)
    #: Its refunds through Stripe, oldest first.
    refunds: list[OrderRefund] = msgspec.field(default_factory=list)

    @classmethod
    def of(
        cls,
        o: Order,
        public_url: str,
        purchase_orders: list[OrderPurchaseOrder] | None = None,
        refunds: list[OrderRefund] | None = None,
    ) -> OrderDetail:
        return cls(
            id=o.id,
            name=o.name,
            status=o.status,
            status_reason=o.status_reason,
            source=o.source,
            shopify_order_id=_s(o.shopify_order_id),
            shopify_gid=o.shopify_gid,
            reference=o.external_ref,
            order_number=o.order_number,
            email=o.email,
            currency=o.currency,
            subtotal_price=wire_amount(o.subtotal_price, o.currency),
            total_tax=wire_amount(o.total_tax, o.currency),
            total_shipping=wire_amount(o.total_shipping, o.currency),
            total_discounts=wire_amount(o.total_discounts, o.currency),
            total_price=wire_amount(o.total_price, o.currency),
            financial_status=o.financial_status,
            stripe_payment_reference=o.stripe_payment_reference,
            shipping_address=o.shipping_address,
            shipping_method=o.shipping_method,
            note=o.note,
            placed_at=o.placed_at,
            created_at=o.created_at,
            updated_at=o.updated_at,
            cancelled_at=o.cancelled_at,
            cancel_requested_at=o.cancel_requested_at,
            tracking_url=f"{public_url.rstrip('/')}/track/{o.tracking_token}",
            lines=[LineOut.of(ln, o.currency) for ln in o.lines],
            timeline=[EventOut.of(e) for e in sorted(o.events, key=lambda e: (e.created_at, e.id))],
            purchase_orders=purchase_orders or [],
            refunds=refunds or [],
        )


class ImportRow(msgspec.Struct):
    row: int
    status: str  # created | duplicate | rejected
    reference: str | None = None
    order_id: uuid.UUID | None = None
    reason: str | None = None


class ImportReport(msgspec.Struct):
    """``created``/``duplicate``/``rejected`` count orders (a row without a reference counts as
    one rejected order); ``rows`` has the verdict of every row."""

    created: int
    duplicate: int
    rejected: int
    rows: list[ImportRow]


def _s(value: int | None) -> str | None:
    return None if value is None else str(value)
