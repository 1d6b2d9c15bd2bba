"""Refunds through Stripe: the merchant's connection, the refund rules, the refund job's
steps, and Stripe's webhooks. Every query of the domain is here.

**How much.** What was captured is the order's ``total_price`` (what the customer paid, as the
store reported it; the PaymentIntent's ``amount_received`` is not fetched: Stripe refuses to
refund more than it holds anyway, and the simulator checks it too). A refund never takes the
order past captured minus every refund that is not ``failed`` or ``canceled``: checked with the
order row locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer at a time), so
two concurrent requests for the whole amount make one refund and one 409.

**Lines.** A line's refund is its discounted amount (``price * quantity`` minus its
``total_discount`` pro rata) times the order's goods total over the sum of every line's
discounted amount, where the goods total is ``total_price - total_shipping``: that share carries
the line's part of tax (whether the store's prices include tax or not) and of order-level
discounts, and all lines plus shipping is exactly ``total_price``. Shipping is
``total_shipping``, once. Priced cumulatively per line (what the line's refunded units are
worth after this refund, rounded, minus what they were worth before, rounded), half up, to the
currency's minor units (yen: whole units; no more than Stripe takes), so a line refunded unit
by unit sums to its whole value; sent to Stripe in Stripe's own units (``to_stripe_amount``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import msgspec
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.pagination import Page, rows_page
from app.codes import minor_units
from app.db import insert_for, utcnow, uuid7
from app.errors import Conflict, DomainError, InvalidInput, NotFound
from app.events.service import publish
from app.exceptions.service import open_exception
from app.jobs.backoff import EARLY, backoff_ms
from app.jobs.outbox import enqueue
from app.jobs.task import StaleWindow
from app.merchants.models import Merchant
from app.merchants.settings import settings_of
from app.metrics import REFUNDS
from app.orders.models import Order, OrderLine
from app.refunds.models import (
    Refund,
    RefundOrigin,
    RefundStatus,
    StripeConnection,
    StripeMode,
)
from app.security import SecretBox
from app.settings import Settings
from app.timeline.service import record
from app.webhooks.models import WebhookDelivery
from connectors.base import PermanentConnectorError, RetryableConnectorError
from connectors.stripe_payments import (
    ACCOUNT_ID,
    PAYMENT_REFERENCE,
    SECRET_KEY,
    Credentials,
    RefundDTO,
    StripeAuthError,
    StripePayments,
    refund_of,
    stripe_places,
    to_stripe_amount,
    verify_webhook,
)

log = structlog.get_logger(__name__)

SOURCE = "stripe"
MAX_ATTEMPTS = 8
BASE_DELAY_MS = 1_000
MAX_DELAY_MS = 10 * 60_000
#: A run of the refund job owns its refund this long (a duplicate job meanwhile does nothing).
LEASE = timedelta(minutes=2)
#: Seconds a save of the connection waits for Stripe's answer.
VERIFY_TIMEOUT = 10.0
#: Stripe's webhook tolerance (5 minutes).
WEBHOOK_TOLERANCE = 300


class StripeRefused(InvalidInput):
    """Stripe refused the credentials given (HTTP 422 naming the field)."""

    status = 422


class StripeUnavailable(DomainError):
    """Stripe could not be reached, or the service is not set up for it (HTTP 503)."""

    status = 503


class StripeBadAnswer(DomainError):
    """Stripe answered with something we cannot use (HTTP 502)."""

    status = 502


# -- the connection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionView:
    """What the merchant may see of its connection: never the key."""

    connected: bool
    mode: str | None = None
    account_id: str | None = None
    key_last4: str | None = None


async def connection_of(session: AsyncSession, merchant_id: uuid.UUID) -> StripeConnection | None:
    conn: StripeConnection | None = await session.scalar(
        select(StripeConnection).where(StripeConnection.merchant_id == merchant_id)
    )
    return conn


def view_of(conn: StripeConnection | None) -> ConnectionView:
    if conn is None:
        return ConnectionView(connected=False)
    return ConnectionView(True, conn.mode, conn.account_id, conn.key_last4)


async def connection_view(session: AsyncSession, merchant_id: uuid.UUID) -> ConnectionView:
    return view_of(await connection_of(session, merchant_id))


def _check_key(value: str) -> str:
    value = value.strip()
    if not SECRET_KEY.fullmatch(value):
        raise InvalidInput(
            "expected a Stripe restricted key (rk_live_… or rk_test_…) or secret key (sk_…) "
            "with the Refunds write permission",
            field="secret_key",
        )
    return value


def _check_account(value: str) -> str:
    value = value.strip()
    if not ACCOUNT_ID.fullmatch(value):
        raise InvalidInput("expected a connected account id like acct_1Nv0FG…", field="account_id")
    return value


async def connect(
    session: AsyncSession,
    settings: Settings,
    box: SecretBox,
    merchant: Merchant,
    *,
    secret_key: str | None,
    account_id: str | None,
) -> ConnectionView:
    """Check the key (or account) once against Stripe, then store it (the key encrypted).

    Exactly one of the two. The request's transaction is committed before the call (it holds
    nothing yet but the merchant's lookup), so Stripe's answer time never holds a lock.
    """
    if (secret_key is None) == (account_id is None):
        raise InvalidInput(
            "give exactly one of secret_key (your restricted key) or account_id (a connected "
            "account)",
            field="secret_key" if secret_key is not None else "account_id",
        )
    if secret_key is not None:
        key = _check_key(secret_key)
        credentials, field = Credentials(key), "secret_key"
    else:
        account = _check_account(account_id or "")
        if not settings.stripe_secret_key:
            raise StripeUnavailable(
                "connected accounts need the platform's key: set DROPSHIP_STRIPE_SECRET_KEY",
                field="account_id",
            )
        credentials, field = Credentials(settings.stripe_secret_key, account), "account_id"
    merchant_id = merchant.id
    await session.commit()
    try:
        async with StripePayments(
            credentials, settings.stripe_api_base, timeout=VERIFY_TIMEOUT
        ) as stripe:
            await stripe.verify()
    except StripeAuthError as exc:
        raise StripeRefused(
            f"Stripe refused it: {exc.message.removeprefix('Stripe: ')}", field=field
        ) from exc
    except RetryableConnectorError as exc:
        raise StripeUnavailable(f"{exc.message}; try again", field=field) from exc
    except PermanentConnectorError as exc:
        raise StripeBadAnswer(exc.message, field=field) from exc
    conn = await connection_of(session, merchant_id)
    if conn is None:
        conn = StripeConnection(merchant_id=merchant_id, mode="", verified_at=utcnow())
        session.add(conn)
    if credentials.account is None:
        conn.mode = StripeMode.KEY
        conn.secret_key_encrypted = box.encrypt(credentials.api_key)
        conn.key_last4 = credentials.api_key[-4:]
        conn.account_id = None
    else:
        conn.mode = StripeMode.ACCOUNT
        conn.secret_key_encrypted = None
        conn.key_last4 = None
        conn.account_id = credentials.account
    conn.verified_at = utcnow()
    await session.flush()
    return view_of(conn)


async def disconnect(session: AsyncSession, merchant: Merchant) -> None:
    """Forget the connection; refunds already sent keep their state (webhooks still apply)."""
    conn = await connection_of(session, merchant.id)
    if conn is not None:
        await session.delete(conn)
        await session.flush()


def credentials_of(settings: Settings, box: SecretBox, conn: StripeConnection) -> Credentials:
    """The credentials of a stored connection, in clear, for one call."""
    if conn.mode == StripeMode.ACCOUNT:
        if not settings.stripe_secret_key:
            raise PermanentConnectorError(
                "DROPSHIP_STRIPE_SECRET_KEY is unset: the connected account cannot be reached"
            )
        return Credentials(settings.stripe_secret_key, conn.account_id)
    if conn.secret_key_encrypted is None:
        raise PermanentConnectorError("the Stripe connection holds no key")
    return Credentials(box.decrypt(conn.secret_key_encrypted))


# -- amounts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineRequest:
    line_id: str
    quantity: int


def to_minor(amount: Decimal, currency: str) -> int:
    """In Stripe's integer units (its own exponents, not CLDR's): ``12.30`` USD -> 1230;
    ``2000`` JPY -> 2000; ``15000`` IDR -> 1500000."""
    return to_stripe_amount(amount, currency)


def places_of(currency: str) -> int:
    """Decimals a refund amount may have: the currency's (CLDR) and no more than Stripe takes
    (KWD 2, HUF / ISK / TWD whole units)."""
    return min(minor_units(currency), stripe_places(currency))


def _round(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-places_of(currency)), ROUND_HALF_UP)


def _net(line: OrderLine, quantity: int) -> Decimal:
    """The line's discounted amount for ``quantity`` of its units."""
    if line.quantity <= 0:
        return Decimal(0)
    return line.price * quantity - line.total_discount * quantity / line.quantity


def lines_amount(
    order: Order, lines: Sequence[OrderLine], wanted: Mapping[uuid.UUID, int]
) -> Decimal:
    """What ``wanted`` (order line id -> quantity) is worth, unrounded (see the module doc)."""
    goods = order.total_price - order.total_shipping
    base = sum((_net(ln, ln.quantity) for ln in lines), Decimal(0))
    if base <= 0:
        return Decimal(0)
    picked = sum((_net(ln, wanted[ln.id]) for ln in lines if ln.id in wanted), Decimal(0))
    return picked * goods / base


# -- refunds ---------------------------------------------------------------------------------------


async def _locked_order(
    session: AsyncSession, merchant_id: uuid.UUID, order_id: uuid.UUID
) -> Order:
    order: Order | None = await session.scalar(
        select(Order)
        .where(Order.id == order_id, Order.merchant_id == merchant_id)
        .with_for_update()
    )
    if order is None:
        raise NotFound(f"order {order_id} not found", field="order_id")
    return order


async def refunds_of_order(session: AsyncSession, order_id: uuid.UUID) -> Sequence[Refund]:
    return (
        await session.scalars(
            select(Refund).where(Refund.order_id == order_id).order_by(Refund.created_at, Refund.id)
        )
    ).all()


async def create_refund(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    order_id: uuid.UUID,
    *,
    amount: Decimal | None = None,
    lines: Sequence[LineRequest] = (),
    shipping: bool = False,
    reason: str | None = None,
    origin: str = RefundOrigin.MERCHANT,
    key: str | None = None,
    fee: Decimal | None = None,
    clamp: bool = False,
) -> Refund:
    """Write a refund of ``amount``, or of ``lines`` (and ``shipping``), and enqueue its
    sending, with the order locked. ``key``: once per key (policy refunds; the existing refund
    is returned). ``clamp``: take what is left rather than refuse (policy refunds after the
    merchant refunded part by hand). ``fee``: a restocking fee (0.10 = 10 %) off the lines."""
    order = await _locked_order(session, merchant_id, order_id)
    if key is not None:
        existing: Refund | None = await session.scalar(
            select(Refund).where(Refund.merchant_id == merchant_id, Refund.key == key)
        )
        if existing is not None:
            return existing
    reference = (order.stripe_payment_reference or "").strip()
    if not PAYMENT_REFERENCE.fullmatch(reference):
        raise Conflict(
            "the order has no Stripe payment to refund (no PaymentIntent or charge id)",
            field="order_id",
        )
    if await connection_of(session, merchant_id) is None:
        raise Conflict(
            "Stripe is not connected: PUT /api/v1/settings/stripe first", field="order_id"
        )
    previous = [
        r
        for r in await refunds_of_order(session, order.id)
        if r.status not in RefundStatus.RELEASED
    ]
    currency = order.currency
    if amount is not None:
        if lines or shipping:
            raise InvalidInput("give an amount, or lines and shipping, not both", field="amount")
        if amount <= 0:
            raise InvalidInput("must be more than 0", field="amount")
        places = places_of(currency)
        if amount != amount.quantize(Decimal(1).scaleb(-places)):
            raise InvalidInput(
                f"{currency} amounts have {places} decimal place(s) at most, got {amount}"
                + (" (what Stripe takes)" if places < minor_units(currency) else ""),
                field="amount",
            )
        total = amount
        lines_out: list[dict[str, Any]] = []
    else:
        if not lines and not shipping:
            raise InvalidInput("give an amount, or lines and/or shipping", field="amount")
        total, lines_out = await _lines_total(session, order, previous, lines, shipping, fee)
    already = sum((r.amount for r in previous), Decimal(0))
    remaining = order.total_price - already
    if total > remaining:
        if not clamp:
            raise Conflict(
                f"{total} {currency} is more than what is left to refund: {remaining} of "
                f"{order.total_price} captured",
                field="amount",
                remaining=str(remaining),
            )
        total = remaining
    if total <= 0:
        raise Conflict("nothing left to refund on this order", field="amount", remaining="0")
    try:
        amount_minor = to_minor(total, currency)
    except ValueError as exc:  # what is left is a fraction Stripe cannot take (HUF, TWD)
        raise Conflict(f"{exc}: refund that part another way", field="amount") from exc
    refund = Refund(
        id=uuid7(),
        merchant_id=merchant_id,
        order_id=order.id,
        key=key,
        amount=total,
        currency=currency,
        amount_minor=amount_minor,
        lines=lines_out,
        shipping=shipping,
        reason=reason,
        origin=origin,
        status=RefundStatus.REQUESTED,
        payment_reference=reference,
        attempts=0,
        data={},
    )
    session.add(refund)
    await session.flush()
    what = f"{total} {currency}" + (f" ({reason})" if reason else "")
    record(
        session,
        order,
        "refund.requested",
        f"refund of {what} requested ({origin})",
        refund_id=str(refund.id),
        amount=str(total),
        currency=currency,
    )
    from app.refunds.tasks import issue  # a cycle: the task works through this module

    await enqueue(session, issue, refund.id)
    return refund


async def _lines_total(
    session: AsyncSession,
    order: Order,
    previous: Sequence[Refund],
    lines: Sequence[LineRequest],
    shipping: bool,
    fee: Decimal | None,
) -> tuple[Decimal, list[dict[str, Any]]]:
    order_lines = (
        await session.scalars(select(OrderLine).where(OrderLine.order_id == order.id))
    ).all()
    by_id = {str(ln.id): ln for ln in order_lines}
    done: dict[str, int] = {}
    for r in previous:
        for item in r.lines or []:
            done[str(item.get("line_id"))] = done.get(str(item.get("line_id")), 0) + int(
                item.get("quantity") or 0
            )
    wanted: dict[uuid.UUID, int] = {}
    for i, item in enumerate(lines):
        line = by_id.get(item.line_id)
        if line is None:
            raise InvalidInput(f"no line {item.line_id} on this order", field=f"lines[{i}].line_id")
        total_q = wanted.get(line.id, 0) + item.quantity
        left = line.quantity - done.get(item.line_id, 0)
        if total_q > left:
            raise Conflict(
                f"{total_q} of line {item.line_id} asked, {left} left to refund",
                field=f"lines[{i}].quantity",
            )
        wanted[line.id] = total_q
    # Priced cumulatively per line: value(done + q) - value(done), each rounded once, so a
    # line refunded unit by unit sums to exactly the line's whole value (1.07 + 1.06 + 1.07).
    currency = order.currency
    goods = Decimal(0)
    for line_id, q in wanted.items():
        before = done.get(str(line_id), 0)
        goods += _round(lines_amount(order, order_lines, {line_id: before + q}), currency)
        goods -= _round(lines_amount(order, order_lines, {line_id: before}), currency)
    if fee:
        goods -= goods * fee  # rounded once, with the total
    total = goods
    if shipping:
        if any(r.shipping for r in previous):
            raise Conflict("shipping was refunded already", field="shipping")
        total += order.total_shipping
    out = [{"line_id": str(k), "quantity": q} for k, q in wanted.items()]
    return _round(total, order.currency), out


async def get_refund(session: AsyncSession, merchant_id: uuid.UUID, refund_id: uuid.UUID) -> Refund:
    refund: Refund | None = await session.scalar(
        select(Refund).where(Refund.id == refund_id, Refund.merchant_id == merchant_id)
    )
    if refund is None:
        raise NotFound(f"refund {refund_id} not found", field="refund_id")
    return refund


async def list_refunds(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    *,
    order_id: uuid.UUID | None,
    statuses: Sequence[str],
    cursor: str | None,
    limit: int,
) -> Page[Refund]:
    for s in statuses:
        if s not in RefundStatus.ALL:
            raise InvalidInput(f"one of {', '.join(RefundStatus.ALL)}, got {s!r}", field="status")
    query = select(Refund).where(Refund.merchant_id == merchant_id)
    if order_id is not None:
        query = query.where(Refund.order_id == order_id)
    if statuses:
        query = query.where(Refund.status.in_(statuses))
    return await rows_page(session, query, Refund.created_at, Refund.id, cursor=cursor, limit=limit)


# -- the refund job's steps ------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    refund_id: str
    order_id: str
    reference: str
    amount_minor: int
    reason: str | None
    attempt: int
    credentials: Credentials | None
    problem: str | None


def stripe_reason(reason: str | None) -> str | None:
    """Stripe's own reason codes pass on; our free text stays ours (metadata holds the id)."""
    return reason if reason in ("duplicate", "fraudulent", "requested_by_customer") else None


async def _locked(session: AsyncSession, refund_id: uuid.UUID) -> Refund | None:
    refund: Refund | None = await session.scalar(
        select(Refund).where(Refund.id == refund_id).with_for_update()
    )
    return refund


async def claim(
    session: AsyncSession, settings: Settings, box: SecretBox, refund_id: uuid.UUID
) -> Claim | None:
    """The refund still to send, taken for ``LEASE`` with the attempt counted; None when it was
    answered already, given up, backing off, or held by another run."""
    refund = await _locked(session, refund_id)
    now = utcnow()
    if refund is None or refund.status != RefundStatus.REQUESTED or refund.given_up_at:
        return None
    if refund.next_attempt_at is not None and refund.next_attempt_at > now + EARLY:
        return None
    refund.attempts += 1
    refund.next_attempt_at = now + LEASE
    conn = await connection_of(session, refund.merchant_id)
    credentials, problem = None, None
    if conn is None:
        problem = "Stripe was disconnected before the refund was sent"
    else:
        try:
            credentials = credentials_of(settings, box, conn)
        except (PermanentConnectorError, ValueError) as exc:
            problem = str(exc)
    await session.flush()
    return Claim(
        str(refund.id),
        str(refund.order_id),
        refund.payment_reference,
        refund.amount_minor,
        stripe_reason(refund.reason),
        refund.attempts,
        credentials,
        problem,
    )


def retry_delay_ms(attempt: int, retry_after: float | None = None) -> int:
    floor = None if retry_after is None else retry_after * 1000
    return backoff_ms(attempt, base_ms=BASE_DELAY_MS, cap_ms=MAX_DELAY_MS, floor_ms=floor)


async def retry_later(
    session: AsyncSession, refund_id: uuid.UUID, attempt: int, error: str, retry_after: float | None
) -> int | None:
    """Stripe could not be reached: the delay before the next try (the same idempotency key),
    or None after ``MAX_ATTEMPTS`` (given up: a person checks what Stripe made of it)."""
    refund = await _locked(session, refund_id)
    if refund is None or refund.status != RefundStatus.REQUESTED:
        return None
    order = await _order(session, refund)
    refund.failure_reason = error
    if attempt >= MAX_ATTEMPTS:
        _give_up(session, order, refund, attempt, error)
        return None
    delay = retry_delay_ms(attempt, retry_after)
    refund.next_attempt_at = utcnow() + timedelta(milliseconds=delay)
    record(
        session,
        order,
        "refund.retry",
        f"refund of {refund.amount} {refund.currency}: attempt {attempt} failed ({error}); "
        f"retrying in {delay / 1000:.1f}s",
        refund_id=str(refund.id),
        attempt=attempt,
    )
    return delay


def _give_up(session: AsyncSession, order: Order, refund: Refund, attempt: int, error: str) -> None:
    """Not sent again by itself, and still counted by the cap: Stripe may have made it."""
    REFUNDS.labels("given_up").inc()
    refund.given_up_at = utcnow()
    refund.next_attempt_at = None
    open_exception(
        session,
        order,
        "refund_unsent",
        f"the refund of {refund.amount} {refund.currency} could not be sent to Stripe after "
        f"{attempt} attempts ({error}). Stripe may have made it: check the payment in "
        "Stripe before refunding again.",
        refund_id=str(refund.id),
    )
    record(
        session,
        order,
        "refund.given_up",
        f"refund of {refund.amount} {refund.currency}: gave up after {attempt} attempts",
        refund_id=str(refund.id),
    )


async def refused(
    session: AsyncSession, refund_id: uuid.UUID, reason: str, attempt: int
) -> bool | None:
    """Stripe (or our set-up) refused the refund for good. After an attempt that went
    unanswered (``attempt`` > 1: a timeout, a 5xx, a lost job or a crash before the answer was
    recorded) Stripe may hold the refund already, so it is given up, not ``failed``: its amount
    stays counted until a person (or Stripe's webhook) settles it. True if it failed, False if
    it was given up, None if it was settled already."""
    refund = await _locked(session, refund_id)
    if refund is None or refund.status != RefundStatus.REQUESTED or refund.given_up_at:
        return None
    refund.next_attempt_at = None
    if attempt > 1:
        refund.failure_reason = reason
        _give_up(session, await _order(session, refund), refund, attempt, reason)
        await session.flush()
        return False
    await apply_state(session, refund, RefundStatus.FAILED, failure_reason=reason)
    return True


async def answered(session: AsyncSession, refund_id: uuid.UUID, answer: RefundDTO) -> None:
    """Stripe's answer: its refund id and state (a webhook may have told us first)."""
    refund = await _locked(session, refund_id)
    if refund is None:
        return
    refund.next_attempt_at = None
    if refund.stripe_refund_id is None:
        refund.stripe_refund_id = answer.id
    refund.failure_reason = None if answer.status != RefundStatus.FAILED else refund.failure_reason
    await apply_state(session, refund, answer.status, failure_reason=answer.failure_reason)


async def _order(session: AsyncSession, refund: Refund) -> Order:
    order = await session.get(Order, refund.order_id)
    assert order is not None  # the foreign key cascades
    return order


#: Where a state may go next: forward only, never back to ours. ``succeeded`` is not final at
#: Stripe: a refund can fail after it succeeded (the customer's bank returns it), which Stripe
#: documents; only Stripe's word (webhook, refresh, answer) moves a refund, so that is allowed.
_NEXT = {
    RefundStatus.REQUESTED: set(RefundStatus.ALL) - {RefundStatus.REQUESTED},
    RefundStatus.PENDING: {
        RefundStatus.REQUIRES_ACTION,
        RefundStatus.SUCCEEDED,
        RefundStatus.FAILED,
        RefundStatus.CANCELED,
    },
    RefundStatus.REQUIRES_ACTION: {
        RefundStatus.PENDING,
        RefundStatus.SUCCEEDED,
        RefundStatus.FAILED,
        RefundStatus.CANCELED,
    },
    RefundStatus.SUCCEEDED: {RefundStatus.FAILED},
}
#: What Stripe may say of a refund we marked ``failed`` before Stripe ever answered for it.
_REOPEN = {
    RefundStatus.FAILED: {
        RefundStatus.PENDING,
        RefundStatus.REQUIRES_ACTION,
        RefundStatus.SUCCEEDED,
        RefundStatus.CANCELED,
    }
}


async def apply_state(
    session: AsyncSession,
    refund: Refund,
    status: str,
    *,
    failure_reason: str | None = None,
    reopen: bool = False,
) -> bool:
    """Move the (locked) refund to Stripe's ``status`` if that is forward; on the timeline, and
    ``refund.succeeded`` / ``refund.failed`` (with an exceptions-queue case) published once.
    ``reopen``: a refund we marked ``failed`` without Stripe's answer, that Stripe reports."""
    allowed = _REOPEN if reopen and refund.status == RefundStatus.FAILED else _NEXT
    if status not in allowed.get(refund.status, set()):
        return False
    order = await _order(session, refund)
    before = refund.status
    refund.status = status
    refund.updated_at = utcnow()
    what = f"{refund.amount} {refund.currency}"
    data: dict[str, Any] = {
        "refund_id": str(refund.id),
        "amount": str(refund.amount),
        "currency": refund.currency,
        "reason": refund.reason,
        "origin": refund.origin,
        "lines": list(refund.lines or []),
        "shipping": refund.shipping,
    }
    if status == RefundStatus.FAILED:
        reason = failure_reason or refund.failure_reason or "unknown"
        refund.failure_reason = reason
        record(
            session,
            order,
            "refund.failed",
            f"refund of {what} failed: {reason}",
            refund_id=str(refund.id),
            stripe_refund_id=refund.stripe_refund_id,
        )
        open_exception(
            session,
            order,
            "refund_failed",
            f"the refund of {what} failed at Stripe: {reason}. Refund the customer another way "
            "or try again.",
            refund_id=str(refund.id),
            failure_reason=reason,
        )
        await publish(
            session,
            order,
            "refund.failed",
            key=f"refund.failed:{refund.id}",
            failure_reason=reason,
            **data,
        )
    else:
        words = {
            RefundStatus.PENDING: "pending at Stripe",
            RefundStatus.REQUIRES_ACTION: "waiting for the customer's details at Stripe",
            RefundStatus.SUCCEEDED: "succeeded",
            RefundStatus.CANCELED: "canceled at Stripe",
        }
        record(
            session,
            order,
            f"refund.{status}",
            f"refund of {what} {words.get(status, status)}"
            + (f" (Stripe {refund.stripe_refund_id})" if refund.stripe_refund_id else ""),
            refund_id=str(refund.id),
            stripe_refund_id=refund.stripe_refund_id,
            previous=before,
        )
        if status == RefundStatus.SUCCEEDED:
            await publish(
                session, order, "refund.succeeded", key=f"refund.succeeded:{refund.id}", **data
            )
    await session.flush()
    return True


async def unsent(session: AsyncSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Refunds written but never answered whose job was lost (the ``refunds.issue`` task's
    stale work): not given up, not backing off."""
    return await window.ids(
        session,
        select(Refund.id).where(
            Refund.status == RefundStatus.REQUESTED,
            Refund.given_up_at.is_(None),
            Refund.updated_at < window.cutoff,
            window.due(Refund.next_attempt_at),
        ),
    )


# -- refreshing from Stripe -------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshTarget:
    stripe_refund_id: str
    credentials: Credentials


#: Refunds Stripe is still working on: asked again when no webhook moved them for this long.
_UNSETTLED = (RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION)


async def claim_refresh(
    session: AsyncSession, settings: Settings, box: SecretBox, refund_id: uuid.UUID
) -> RefreshTarget | None:
    """A refund still pending at Stripe, to ask about (its ``updated_at`` touched, so the
    sweeper asks again only after ``stale_after``); None if settled or unreachable."""
    refund = await _locked(session, refund_id)
    if refund is None or refund.status not in _UNSETTLED or refund.stripe_refund_id is None:
        return None
    refund.updated_at = utcnow()
    conn = await connection_of(session, refund.merchant_id)
    if conn is None:
        return None
    try:
        credentials = credentials_of(settings, box, conn)
    except (PermanentConnectorError, ValueError):
        return None
    await session.flush()
    return RefreshTarget(refund.stripe_refund_id, credentials)


async def refreshed(session: AsyncSession, refund_id: uuid.UUID, answer: RefundDTO) -> None:
    refund = await _locked(session, refund_id)
    if refund is not None and refund.stripe_refund_id == answer.id:
        await apply_state(session, refund, answer.status, failure_reason=answer.failure_reason)


async def unsettled(session: AsyncSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Refunds pending at Stripe that no webhook moved for a while (the ``refunds.refresh``
    task's stale work: a poll in case Stripe's webhooks do not reach us)."""
    return await window.ids(
        session,
        select(Refund.id).where(
            Refund.status.in_(_UNSETTLED),
            Refund.stripe_refund_id.is_not(None),
            Refund.updated_at < window.cutoff,
        ),
    )


async def _refresh_payment(
    session: AsyncSession, charge: dict[str, Any], account: str | None
) -> tuple[uuid.UUID | None, str]:
    """``charge.refunded`` without its refunds (Stripe no longer lists them by default): ask
    Stripe about our refunds of that payment that it is still working on."""
    references = [r for r in (charge.get("id"), charge.get("payment_intent")) if isinstance(r, str)]
    if not references:
        return None, "ignored: charge.refunded names no payment"
    rows = (
        await session.scalars(
            select(Refund)
            .where(Refund.payment_reference.in_(references), Refund.status.in_(_UNSETTLED))
            .order_by(Refund.created_at)
        )
    ).all()
    from app.refunds.tasks import refresh  # a cycle, see create_refund

    merchant: uuid.UUID | None = None
    asked = 0
    for refund in rows:
        conn = await connection_of(session, refund.merchant_id)
        expected = conn.account_id if conn is not None and conn.mode == StripeMode.ACCOUNT else None
        if account != expected:
            continue
        merchant = merchant or refund.merchant_id
        await enqueue(session, refresh, refund.id)
        asked += 1
    if not asked:
        return None, "ignored: no refund of ours is pending on that payment"
    return merchant, f"asking Stripe about {asked} pending refund(s)"


# -- policy ----------------------------------------------------------------------------------------

#: Shopify's ``financial_status`` once the payment went back (or was never captured).
SHOPIFY_REFUNDED = frozenset({"refunded", "partially_refunded", "voided"})


async def policy_refund(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    order_id: uuid.UUID,
    *,
    setting: str,
    key: str,
    origin: str,
    lines: Sequence[LineRequest],
    shipping: bool,
    reason: str | None,
    event_origin: str | None = None,
) -> Refund | None:
    """The refund the merchant's policy makes (``refunds.on_cancel`` / ``on_return`` is
    ``auto``), once per ``key``; None when the policy is manual or there is nothing to refund
    through Stripe (no Stripe payment, no connection, nothing left, or a cancellation made in
    Shopify that Shopify refunded itself: ``event_origin`` ``shopify`` and the order's
    ``financial_status`` refunded or voided; our rows do not know of that refund)."""
    merchant = await session.get(Merchant, merchant_id)
    policy = settings_of(merchant).refunds
    if getattr(policy, setting) != "auto":
        return None
    order = await session.get(Order, order_id)
    if order is None or order.merchant_id != merchant_id:
        return None
    if not PAYMENT_REFERENCE.fullmatch((order.stripe_payment_reference or "").strip()):
        return None
    if event_origin == "shopify" and order.financial_status in SHOPIFY_REFUNDED:
        record(
            session,
            order,
            "refund.policy_skipped",
            f"no automatic refund: Shopify refunded it already (payment {order.financial_status})",
            key=key,
        )
        await session.flush()
        return None
    if await connection_of(session, merchant_id) is None:
        log.info("refunds.policy_skipped", order_id=str(order_id), why="no Stripe connection")
        return None
    fee = policy.restocking_fee if origin == RefundOrigin.POLICY_RETURN else None
    try:
        async with session.begin_nested():
            return await create_refund(
                session,
                merchant_id,
                order_id,
                lines=lines,
                shipping=shipping,
                reason=reason,
                origin=origin,
                key=key,
                fee=fee,
                clamp=True,
            )
    except (Conflict, InvalidInput) as exc:
        # Nothing left (refunded by hand already), or lines gone: the merchant decides.
        record(
            session,
            order,
            "refund.policy_skipped",
            f"no automatic refund: {exc}",
            key=key,
        )
        return None


# -- webhooks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    status: int
    outcome: str


async def receive_webhook(
    session: AsyncSession, settings: Settings, headers: Mapping[str, str], raw: bytes
) -> Receipt:
    """Verify ``Stripe-Signature`` (every configured secret), store the event once in the
    webhook inbox (``ON CONFLICT DO NOTHING`` on its id) and apply it in the same transaction:
    a replay, even a concurrent one, changes nothing."""
    secrets = [s.strip() for s in (settings.stripe_webhook_secret or "").split(",") if s.strip()]
    if not secrets:
        return Receipt(
            503, "Stripe webhooks are not configured: set DROPSHIP_STRIPE_WEBHOOK_SECRET"
        )
    header = headers.get("stripe-signature")
    if not header:
        return Receipt(400, "Stripe-Signature: missing")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return Receipt(400, "body: not valid UTF-8")
    if not verify_webhook(raw, header, secrets, WEBHOOK_TOLERANCE):
        return Receipt(400, "Stripe-Signature: does not match the body, or is too old")
    try:
        event = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return Receipt(400, "body: not valid JSON")
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        return Receipt(400, "body: a Stripe event with an id")
    event_id, type_ = event["id"][:128], str(event.get("type") or "unknown")[:128]
    delivery_id = uuid7()
    now = utcnow()
    inserted = await session.execute(
        insert_for(session)(WebhookDelivery)
        .values(
            id=delivery_id,
            source=SOURCE,
            merchant_id=None,
            topic=type_,
            webhook_id=event_id,
            event_id=event_id,
            payload=raw.decode("utf-8"),
            received_at=now,
            failures=0,
        )
        .on_conflict_do_nothing()
        .returning(WebhookDelivery.id)
    )
    if inserted.scalar_one_or_none() is None:
        return Receipt(200, "duplicate")
    merchant_id, outcome = await apply_event(session, event)
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is not None:
        delivery.merchant_id = merchant_id
        delivery.processed_at = utcnow()
        delivery.outcome = outcome[:255]
    await session.flush()
    log.info("stripe.webhook", event_id=event_id, type=type_, outcome=outcome)
    return Receipt(200, "processed" if not outcome.startswith("ignored") else "ignored")


_REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed")


async def apply_event(session: AsyncSession, event: dict[str, Any]) -> tuple[uuid.UUID | None, str]:
    """The merchant it concerned (None: unknown) and what it did, in words."""
    type_ = event.get("type")
    obj = (event.get("data") or {}).get("object")
    account = event.get("account") if isinstance(event.get("account"), str) else None
    if not isinstance(obj, dict):
        return None, "ignored: no data.object"
    if type_ in _REFUND_EVENTS:
        objects = [obj]
    elif type_ == "charge.refunded":
        listed = (
            (obj.get("refunds") or {}).get("data") if isinstance(obj.get("refunds"), dict) else None
        )
        objects = [r for r in listed or [] if isinstance(r, dict)]
        if not objects:
            return await _refresh_payment(session, obj, account)
    else:
        return None, f"ignored: {type_} is not handled"
    merchant: uuid.UUID | None = None
    outcomes = []
    for item in objects:
        status = RefundStatus.FAILED if type_ == "refund.failed" else str(item.get("status"))
        m, outcome = await _apply_refund_object(session, refund_of(item), status, account)
        merchant = merchant or m
        outcomes.append(outcome)
    return merchant, "; ".join(outcomes)


_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")


async def _apply_refund_object(
    session: AsyncSession, obj: RefundDTO, status: str, account: str | None
) -> tuple[uuid.UUID | None, str]:
    refund: Refund | None = await session.scalar(
        select(Refund).where(Refund.stripe_refund_id == obj.id).with_for_update()
    )
    ours = obj.metadata.get("dropship_refund_id", "")
    if refund is None and _UUID.fullmatch(ours):
        # Our answer was lost (a timeout) but Stripe made it: the metadata names ours.
        refund = await session.scalar(
            select(Refund)
            .where(Refund.id == uuid.UUID(ours), Refund.stripe_refund_id.is_(None))
            .with_for_update()
        )
    if refund is None:
        return None, f"ignored: unknown refund {obj.id}"
    conn = await connection_of(session, refund.merchant_id)
    expected = conn.account_id if conn is not None and conn.mode == StripeMode.ACCOUNT else None
    if account != expected:
        return None, f"ignored: {obj.id} came for account {account}, not the merchant's"
    # Failed here without Stripe's id: we thought Stripe never made it, and were wrong.
    wrong = refund.status == RefundStatus.FAILED and refund.stripe_refund_id is None
    if refund.stripe_refund_id is None:
        refund.stripe_refund_id = obj.id
    if status not in RefundStatus.ALL or status == RefundStatus.REQUESTED:
        return refund.merchant_id, f"ignored: status {status!r}"
    moved = await apply_state(
        session, refund, status, failure_reason=obj.failure_reason, reopen=wrong
    )
    if moved and refund.next_attempt_at is not None:
        refund.next_attempt_at = None
    return refund.merchant_id, (
        f"refund {refund.id} {status}" if moved else f"refund {refund.id} stays {refund.status}"
    )
