"""Customer emails: which event calls for which email, its facts, its template, its queueing.

``notify`` runs in the subscriber's transaction (``app.notifications.tasks``): it renders the
email and stores it through the email outbox (``app.mail.service.store_email``) under the key
``customer:<kind>:<shipment, return, refund or order id>``, unique per merchant, so a
subscriber that runs twice (a retried job, a re-dispatched event) queues one email, and each
return step and each refund gets its own; ``shipment.delayed`` and
``shipment.exception`` share the key ``customer:delayed:<shipment>``, so a parcel gets one
delay email whichever comes first. The email carries the order's id, so a bounce or a permanent
refusal lands on the order's timeline (``email.send``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import ColumnElement, delete, exists, or_, select

from app.db import DbSession, insert_for, utcnow, uuid7
from app.errors import InvalidInput, NotFound
from app.events.models import EventType, LifecycleEvent
from app.mail.service import email_exists, store_email
from app.merchants.models import Merchant
from app.merchants.settings import LANGUAGES, MerchantSettings, settings_of
from app.notifications.models import NotificationTemplate
from app.notifications.render import (
    KINDS,
    RETURN_KINDS,
    Brand,
    CancellationFacts,
    EventFacts,
    Facts,
    LineFacts,
    OrderFacts,
    RefundFacts,
    Rendered,
    ReturnFacts,
    ShipmentFacts,
    Source,
    TemplateProblem,
    context,
    default_source,
    format_locale,
    pick_locale,
    render,
    render_default,
    sample_facts,
)
from app.orders.models import Order, OrderLine
from app.purchasing.models import PurchaseOrderLine, Shipment, ShipmentLine
from app.settings import Settings
from app.timeline.service import record

log = structlog.get_logger(__name__)

#: The lifecycle events that call for a customer email, and which one.
EVENT_KINDS = {
    EventType.ORDER_CREATED: "order_confirmation",
    EventType.SHIPMENT_SHIPPED: "shipped",
    EventType.SHIPMENT_OUT_FOR_DELIVERY: "out_for_delivery",
    EventType.SHIPMENT_DELIVERED: "delivered",
    EventType.SHIPMENT_DELAYED: "delayed",
    EventType.SHIPMENT_EXCEPTION: "delayed",
    EventType.ORDER_CANCELLED: "cancelled",
    # Published by the refunds and returns domains (their data: see their services).
    EventType.REFUND_SUCCEEDED: "refund_issued",
    EventType.RETURN_REQUESTED: "return_requested",
    EventType.RETURN_APPROVED: "return_approved",
    EventType.RETURN_REJECTED: "return_rejected",
    EventType.RETURN_RECEIVED: "return_received",
}
#: Emails about one parcel (keyed by the shipment; the others by the order, unless below).
SHIPMENT_KINDS = frozenset({"shipped", "out_for_delivery", "delivered", "delayed"})
#: Emails keyed by the event's own subject: one per return step, one per refund.
SUBJECT_FIELDS = {
    "refund_issued": "refund_id",
    **{kind: "return_id" for kind in RETURN_KINDS},
}
#: What Shopify emails the customer itself when it is told of fulfillments with
#: ``notifyCustomer`` (the merchant's ``shopify.notify_customer``): we do not send them twice.
SHOPIFY_SHIPPING_KINDS = frozenset({"shipped", "out_for_delivery", "delivered"})


def email_key(kind: str, subject_id: uuid.UUID | str) -> str:
    return f"customer:{kind}:{subject_id}"


def check_kind(event: str) -> str:
    if event not in KINDS:
        raise NotFound(f"no customer email {event!r}; one of {', '.join(KINDS)}", field="event")
    return event


def check_locale(locale: str | None, merchant: Merchant) -> str:
    """The language asked for, or the merchant's default."""
    if locale is None:
        return settings_of(merchant).notifications.default_locale
    if locale not in LANGUAGES:
        raise InvalidInput(f"one of {', '.join(LANGUAGES)}", field="locale")
    return locale


def brand_of(merchant: Merchant, merchant_settings: MerchantSettings | None = None) -> Brand:
    b = (merchant_settings or settings_of(merchant)).branding
    return Brand(
        name=b.store_name or merchant.shop_domain,
        logo_url=b.logo_url,
        color=b.color,
        reply_to=b.reply_to,
    )


# --------------------------------------------------------------------------- templates


async def _stored(
    session: DbSession, merchant_id: uuid.UUID, kind: str, locale: str
) -> NotificationTemplate | None:
    row: NotificationTemplate | None = await session.scalar(
        select(NotificationTemplate).where(
            NotificationTemplate.merchant_id == merchant_id,
            NotificationTemplate.kind == kind,
            NotificationTemplate.locale == locale,
        )
    )
    return row


def _source_of(row: NotificationTemplate) -> Source:
    return Source(row.subject, row.text, row.html)


@dataclass(frozen=True)
class TemplateView:
    kind: str
    locale: str
    source: Source
    #: When the merchant last changed it; None: the shipped template.
    updated_at: datetime | None


async def template(
    session: DbSession, merchant: Merchant, event: str, locale: str | None
) -> TemplateView:
    """The merchant's template of ``event`` in ``locale`` (default: its default language), or
    the shipped one."""
    kind = check_kind(event)
    language = check_locale(locale, merchant)
    row = await _stored(session, merchant.id, kind, language)
    if row is None:
        return TemplateView(kind, language, default_source(kind, language), None)
    return TemplateView(kind, language, _source_of(row), row.updated_at)


def _sample_context(
    merchant: Merchant, kind: str, language: str, public_url: str
) -> dict[str, Any]:
    facts = sample_facts(kind, language, brand_of(merchant), public_url)
    return context(facts, language, format_locale(None, language))


async def save_template(
    session: DbSession,
    merchant: Merchant,
    event: str,
    locale: str | None,
    source: Source,
    public_url: str,
) -> TemplateView:
    """Store the merchant's template once it compiles and renders a sample order in the
    sandbox; else :class:`TemplateProblem` (400) names the part and the line."""
    kind = check_kind(event)
    language = check_locale(locale, merchant)
    render(source, _sample_context(merchant, kind, language, public_url))
    now = utcnow()
    insert = insert_for(session)
    await session.execute(
        insert(NotificationTemplate)
        .values(
            id=uuid7(),
            merchant_id=merchant.id,
            kind=kind,
            locale=language,
            subject=source.subject,
            text=source.text,
            html=source.html,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_update(
            index_elements=["merchant_id", "kind", "locale"],
            set_={
                "subject": source.subject,
                "text": source.text,
                "html": source.html,
                "updated_at": now,
            },
        )
    )
    return TemplateView(kind, language, source, now)


async def reset_template(
    session: DbSession, merchant: Merchant, event: str, locale: str | None
) -> None:
    """Forget the merchant's template: the shipped one is used again."""
    kind = check_kind(event)
    language = check_locale(locale, merchant)
    await session.execute(
        delete(NotificationTemplate).where(
            NotificationTemplate.merchant_id == merchant.id,
            NotificationTemplate.kind == kind,
            NotificationTemplate.locale == language,
        )
    )


async def preview(
    session: DbSession,
    merchant: Merchant,
    event: str,
    locale: str | None,
    parts: dict[str, str | None],
    public_url: str,
) -> tuple[str, str, Rendered]:
    """``event``'s template (the parts given in ``parts`` instead of the stored ones) rendered
    with a sample order: (kind, language, rendered)."""
    current = await template(session, merchant, event, locale)
    source = Source(*(parts.get(p) or current.source.part(p) for p in ("subject", "text", "html")))
    rendered = render(source, _sample_context(merchant, current.kind, current.locale, public_url))
    return current.kind, current.locale, rendered


# --------------------------------------------------------------------------- sending


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


async def _order_lines(session: DbSession, order: Order) -> tuple[LineFacts, ...]:
    rows = await session.scalars(
        select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.position)
    )
    return tuple(
        LineFacts(ln.title, ln.quantity, ln.sku, ln.variant_title, ln.price) for ln in rows
    )


async def _shipment_facts(
    session: DbSession, order: Order, shipment_id: Any
) -> ShipmentFacts | None:
    try:
        sid = uuid.UUID(str(shipment_id))
    except ValueError:
        return None
    shipment = await session.get(Shipment, sid)
    if shipment is None or shipment.merchant_id != order.merchant_id:
        return None
    rows = await session.execute(
        select(
            OrderLine.title,
            OrderLine.quantity,
            OrderLine.sku,
            OrderLine.variant_title,
            ShipmentLine.quantity,
        )
        .join(PurchaseOrderLine, PurchaseOrderLine.order_line_id == OrderLine.id)
        .join(ShipmentLine, ShipmentLine.purchase_order_line_id == PurchaseOrderLine.id)
        .where(ShipmentLine.shipment_id == sid)
        .order_by(OrderLine.position)
    )
    return ShipmentFacts(
        carrier=shipment.carrier,
        tracking_number=shipment.tracking_number,
        tracking_url=shipment.tracking_url,
        shipped_at=shipment.shipped_at,
        status=shipment.status,
        estimated_delivery_at=shipment.estimated_delivery_at,
        lines=tuple(LineFacts(t, q, sku, v) for t, _, sku, v, q in rows),
    )


async def _lines_of(session: DbSession, order: Order, refs: Any) -> tuple[LineFacts, ...]:
    """The order lines an event names (``[{"line_id" or "order_line_id", "quantity"}]``), with
    their titles and the quantity the event concerns; what is not this order's is left out."""
    if not isinstance(refs, list):
        return ()
    rows = {
        str(ln.id): ln
        for ln in await session.scalars(
            select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.position)
        )
    }
    out = []
    for ref in refs[:500]:
        if not isinstance(ref, dict):
            continue
        line = rows.get(str(ref.get("line_id") or ref.get("order_line_id")))
        try:
            quantity = int(ref.get("quantity") or 0)
        except (TypeError, ValueError):
            continue
        if line is None or quantity <= 0:
            continue
        out.append(LineFacts(line.title, quantity, line.sku, line.variant_title, line.price))
    return tuple(out)


def _text(value: Any) -> str | None:
    return str(value)[:10_000] if isinstance(value, str) and value else None


async def _event_facts(
    session: DbSession, order: Order, kind: str, data: dict[str, Any]
) -> dict[str, Any]:
    """The facts of a cancellation, refund or return, from the event's data."""
    if kind == "cancelled":
        lines = await _lines_of(session, order, data.get("lines"))
        if not lines:  # a cancellation before routing published by an older version
            return {"cancellation": CancellationFacts(lines=await _order_lines(session, order))}
        ordered = sum(ln.quantity for ln in await _order_lines(session, order))
        return {
            "cancellation": CancellationFacts(
                lines=lines, partial=sum(ln.quantity for ln in lines) < ordered
            )
        }
    if kind == "refund_issued":
        try:
            amount = Decimal(str(data.get("amount")))
        except ArithmeticError:
            amount = Decimal("0")
        currency = data.get("currency")
        return {
            "refund": RefundFacts(
                amount=amount if amount.is_finite() else Decimal("0"),
                currency=str(currency).upper()[:3] if currency else order.currency,
                reason=_text(data.get("reason")),
                lines=await _lines_of(session, order, data.get("lines")),
                shipping=bool(data.get("shipping")),
            )
        }
    if kind in RETURN_KINDS:
        address = data.get("return_address")
        label = _text(data.get("label_url"))
        return {
            "rma": ReturnFacts(
                number=str(data.get("number") or "")[:64],
                reason=_text(data.get("reason")),
                exchange=bool(data.get("exchange")),
                lines=await _lines_of(session, order, data.get("lines")),
                instructions=_text(data.get("instructions")),
                return_address=address if isinstance(address, dict) else None,
                label_url=label if label and label.startswith(("https://", "http://")) else None,
                rejection_reason=_text(data.get("rejection_reason")),
                condition=_text(data.get("condition")),
            )
        }
    return {}


def _customer_name(order: Order) -> str | None:
    for address in (order.shipping_address, order.billing_address):
        if address and address.get("name"):
            return str(address["name"])
    return None


def may_notify(event: type[LifecycleEvent]) -> ColumnElement[bool]:
    """The subscriber's reaction filter (evaluated in the INSERT of the reactions): an email is
    about an order, and a Shopify order's confirmation is Shopify's own (``_skipped_for_shopify``),
    so its ``order.created`` costs no reaction. ``notify`` decides the rest."""
    return exists().where(
        Order.id == event.order_id,
        or_(event.type != EventType.ORDER_CREATED, Order.source != "shopify"),
    )


def _skipped_for_shopify(kind: str, order: Order, s: MerchantSettings) -> bool:
    """Shopify emails its own order confirmation for every store order, and its shipping
    updates when we sync fulfillments with ``notifyCustomer``: the customer gets one of each."""
    if order.source != "shopify":
        return False
    if kind == "order_confirmation":
        return True
    return (
        kind in SHOPIFY_SHIPPING_KINDS and s.shopify.sync_fulfillments and s.shopify.notify_customer
    )


async def notify(session: DbSession, settings: Settings, event: LifecycleEvent) -> uuid.UUID | None:
    """Queue the customer email ``event`` calls for, once; the email's id, or None when there
    is none to send (no such email, no customer address, switched off, already queued)."""
    kind = EVENT_KINDS.get(event.type)
    if kind is None or event.order_id is None:
        return None
    order = await session.get(Order, event.order_id)
    if order is None or order.merchant_id != event.merchant_id or not order.email:
        return None
    merchant = await session.get(Merchant, order.merchant_id)
    if merchant is None:
        return None
    s = settings_of(merchant)
    if not getattr(s.notifications, kind) or _skipped_for_shopify(kind, order, s):
        return None
    if kind == "return_requested" and event.data.get("origin") == "cancellation":
        # Nobody asked: the order was cancelled after a parcel left. The approved email (with
        # what to do with the parcel) is the one that says so.
        return None
    shipment_id = event.data.get("shipment_id")
    if kind in SHIPMENT_KINDS:
        subject: Any = shipment_id
    elif kind in SUBJECT_FIELDS:
        subject = event.data.get(SUBJECT_FIELDS[kind])
    else:
        subject = order.id
    if subject is None or str(subject) == "" or len(str(subject)) > 64:
        return None
    key = email_key(kind, str(subject))
    if await email_exists(session, merchant.id, key):
        return None  # the event again: its email is queued (or sent) already

    shipment = None
    if kind in SHIPMENT_KINDS:
        shipment = await _shipment_facts(session, order, shipment_id)
        if shipment is None:
            return None
    data = event.data
    facts_of_event = await _event_facts(session, order, kind, data)
    if kind == "cancelled" and isinstance(data.get("lines"), list) and not data["lines"]:
        return None  # everything had shipped: the customer hears of the return instead
    event_facts = EventFacts(
        status=str(data.get("status") or kind),
        occurred_at=_when(data.get("occurred_at"))
        or (shipment.shipped_at if shipment is not None else event.created_at),
        description=data.get("description"),
        location=data.get("location"),
        reason=data.get("reason"),
    )
    facts = Facts(
        brand=brand_of(merchant, s),
        order=OrderFacts(
            name=order.name,
            placed_at=order.placed_at,
            currency=order.currency,
            subtotal=order.subtotal_price,
            shipping=order.total_shipping,
            tax=order.total_tax,
            discounts=order.total_discounts,
            total=order.total_price,
            tracking_url=f"{settings.public_url.rstrip('/')}/track/{order.tracking_token}",
            customer_name=_customer_name(order),
            lines=await _order_lines(session, order),
            shipping_address=order.shipping_address,
        ),
        shipment=shipment,
        event=event_facts,
        **facts_of_event,
    )
    language = pick_locale(order.customer_locale, s.notifications.default_locale)
    values = context(facts, language, format_locale(order.customer_locale, language))
    rendered = None
    row = await _stored(session, merchant.id, kind, language)
    if row is not None:
        try:
            rendered = render(_source_of(row), values)
        except TemplateProblem as exc:
            # It rendered the sample when it was saved; this order has something it did not
            # expect. The customer still gets the email, in the shipped wording.
            record(
                session,
                order,
                "email.template_failed",
                f"{kind} template ({language}) failed, the default was used: {exc}",
                kind=kind,
                locale=language,
            )
    if rendered is None:
        rendered = render_default(kind, language, values)
    email_id = await store_email(
        session,
        merchant_id=merchant.id,
        key=key,
        kind=kind,
        to=order.email,
        sender=s.branding.sender_email or settings.mail_from,
        sender_name=facts.brand.name,
        reply_to=s.branding.reply_to,
        content=rendered.content(),
        order_id=order.id,
    )
    if email_id is not None:
        record(
            session,
            order,
            "email.queued",
            f"{kind} email to {order.email} queued ({language})",
            email_id=str(email_id),
            kind=kind,
            locale=language,
        )
    return email_id
