"""Refunds told to Shopify: a refund that succeeded in Stripe is recorded on the Shopify order.

The money moved once, in Stripe. The record must not move it again: ``refundCreate`` carries a
``REFUND`` transaction only against a sale or capture of a *manual* payment gateway (Shopify
cannot move money there; it only books it). Against any other gateway the record holds only
the refunded lines (``NO_RESTOCK``: the stock is the supplier's, not a Shopify location's) and
the shipping, with a note naming the Stripe refund, and no transaction. An amount-only refund
against such a gateway cannot be booked without moving money: it is left to Stripe and the
timeline says so.

A row is written per refund (``shopify_refunds``, unique per refund) by the ``refund.succeeded``
subscriber, and claimed by the ``fulfillment.refund`` task (``creating``, committed before the
call). A row found ``creating`` again reads the order's refunds first and adopts the one whose
note carries our marker, so a crash between Shopify's commit and ours makes no second record.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import or_, select

from app.codes import wire_amount
from app.db import DbSession, insert_for, utcnow, uuid7
from app.events.models import LifecycleEvent
from app.exceptions.service import open_exception
from app.fulfillment.models import ShopifyRefund, SyncState
from app.fulfillment.service import Shop, order_gid, shop_of, sync_running
from app.jobs.backoff import EARLY
from app.jobs.task import StaleWindow
from app.merchants.models import Merchant
from app.merchants.settings import settings_of
from app.orders.models import Order, OrderLine
from app.security import SecretBox
from app.timeline.service import record
from connectors.shopify_admin import gid

LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 10
#: Transactions a refund may be booked against.
_PAYMENT_KINDS = ("SALE", "CAPTURE")


def _money(row: ShopifyRefund) -> str:
    return f"{wire_amount(row.amount, row.currency)} {row.currency}"


def marker(refund_id: uuid.UUID | str) -> str:
    """What our note starts with: how a retry recognises the record it made before."""
    return f"dropship refund {refund_id}"


async def track_refund(session: DbSession, event: LifecycleEvent) -> uuid.UUID | None:
    """The refund's record row, once per refund (a repeated event is a no-op); its id if it was
    written now. Nothing for orders that did not come from Shopify, or when the merchant
    switched the record off."""
    data = event.data
    try:
        refund_id = uuid.UUID(str(data.get("refund_id")))
        amount = Decimal(str(data.get("amount")))
    except (ValueError, InvalidOperation):
        return None
    if event.order_id is None or not amount.is_finite() or amount <= 0:
        return None
    order = await session.get(Order, event.order_id)
    merchant = await session.get(Merchant, event.merchant_id)
    if order is None or merchant is None or order.merchant_id != merchant.id:
        return None
    if order.shopify_order_id is None and order.shopify_gid is None:
        return None  # a manual order: Shopify has nothing to record it on
    if not settings_of(merchant).shopify.record_refunds:
        return None
    lines = [
        {"line_id": str(ln.get("line_id")), "quantity": int(ln.get("quantity") or 0)}
        for ln in data.get("lines") or ()
        if isinstance(ln, Mapping)
    ]
    row_id = uuid7()
    now = utcnow()
    result = await session.execute(
        insert_for(session)(ShopifyRefund)
        .values(
            id=row_id,
            refund_id=refund_id,
            merchant_id=merchant.id,
            order_id=order.id,
            state=SyncState.PENDING,
            amount=amount,
            currency=str(data.get("currency") or order.currency),
            lines=lines,
            shipping=bool(data.get("shipping")),
            stripe_refund_id=data.get("stripe_refund_id"),
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["refund_id"])
    )
    return row_id if getattr(result, "rowcount", 0) else None


@dataclass(frozen=True)
class RefundClaim:
    """A claimed record: everything the calls need, read in the claiming transaction."""

    shop: Shop
    row_id: uuid.UUID
    refund_id: uuid.UUID
    attempt: int
    #: Found ``creating``: a previous call may have recorded it; look first.
    uncertain: bool
    order_gid: str
    amount: Decimal
    currency: str
    #: Shopify ``LineItem`` gid -> quantity refunded.
    lines: Mapping[str, int]
    shipping: bool
    note: str


async def _load(session: DbSession, row_id: uuid.UUID) -> ShopifyRefund | None:
    row: ShopifyRefund | None = await session.scalar(
        select(ShopifyRefund).where(ShopifyRefund.id == row_id).with_for_update()
    )
    return row


async def _shopify_lines(session: DbSession, order: Order, lines: Sequence[Any]) -> dict[str, int]:
    wanted: dict[uuid.UUID, int] = {}
    for ln in lines:
        try:
            wanted[uuid.UUID(str(ln["line_id"]))] = int(ln["quantity"])
        except (KeyError, TypeError, ValueError):
            continue
    if not wanted:
        return {}
    rows = await session.execute(
        select(OrderLine.id, OrderLine.shopify_line_id).where(
            OrderLine.order_id == order.id,
            OrderLine.id.in_(wanted),
            OrderLine.shopify_line_id.is_not(None),
        )
    )
    return {
        gid("LineItem", sid): wanted[lid]
        for lid, sid in rows.all()
        if sid is not None and wanted[lid] > 0
    }


async def claim_refund(session: DbSession, box: SecretBox, row_id: uuid.UUID) -> RefundClaim | None:
    """Lock the row and claim it for a call, or settle it without one. Committed by the caller
    before the call."""
    row = await _load(session, row_id)
    if row is None or row.state not in SyncState.OPEN:
        return None
    now = utcnow()
    if row.next_attempt_at is not None and row.next_attempt_at > now + EARLY:
        return None
    if row.claimed_at is not None and row.claimed_at > now - LEASE:
        return None
    merchant = await session.get(Merchant, row.merchant_id)
    order = await session.get(Order, row.order_id)
    if merchant is None or order is None:
        return None
    shop, why = await shop_of(session, box, merchant)
    if shop is None:
        if merchant.shopify_token_encrypted is None:
            _settle(
                session, row, order, SyncState.SKIPPED, f"refund not recorded in Shopify: {why}"
            )
            return None
        row.last_error = why  # stopped: waits for a new token
        row.next_attempt_at = None
        return None
    uncertain = row.state == SyncState.CREATING
    row.state = SyncState.CREATING
    row.claimed_at = now
    row.attempts += 1
    stripe = f" (Stripe {row.stripe_refund_id})" if row.stripe_refund_id else ""
    return RefundClaim(
        shop=shop,
        row_id=row.id,
        refund_id=row.refund_id,
        attempt=row.attempts,
        uncertain=uncertain,
        order_gid=order_gid(order),
        amount=row.amount,
        currency=row.currency,
        lines=await _shopify_lines(session, order, row.lines),
        shipping=row.shipping,
        note=f"{marker(row.refund_id)}: {_money(row)} refunded through Stripe{stripe}",
    )


def adopt(refunds: Sequence[Mapping[str, Any]], refund_id: uuid.UUID) -> str | None:
    """Our record among the order's refunds (by the note's marker), after an interrupted call."""
    mark = marker(refund_id)
    for refund in refunds:
        if str(refund.get("note") or "").startswith(mark):
            return str(refund["id"])
    return None


def _manual_payment(transactions: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for t in transactions:
        if t.get("kind") in _PAYMENT_KINDS and t.get("status") == "SUCCESS":
            return t if t.get("manualPaymentGateway") else None
    return None


def refund_input(claim: RefundClaim, transactions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``RefundInput`` that books without moving money, or {} when nothing can be booked
    that way (an amount alone, paid through a gateway Shopify would refund through)."""
    body: dict[str, Any] = {"orderId": claim.order_gid, "note": claim.note, "notify": False}
    if claim.lines:
        body["refundLineItems"] = [
            {"lineItemId": line, "quantity": quantity, "restockType": "NO_RESTOCK"}
            for line, quantity in sorted(claim.lines.items())
        ]
    if claim.shipping:
        body["shipping"] = {"fullRefund": True}
    payment = _manual_payment(transactions)
    if payment is not None:
        # A manual gateway moves no money: the refund's amount is booked against its payment.
        body["currency"] = claim.currency
        body["transactions"] = [
            {
                "orderId": claim.order_gid,
                "parentId": payment["id"],
                "kind": "REFUND",
                "gateway": payment["gateway"],
                "amount": str(wire_amount(claim.amount, claim.currency)),
            }
        ]
    elif not claim.lines and not claim.shipping:
        return {}
    return body


async def _open_row(session: DbSession, row_id: uuid.UUID) -> tuple[ShopifyRefund, Order] | None:
    row = await _load(session, row_id)
    if row is None or row.state not in SyncState.OPEN:
        return None
    order = await session.get(Order, row.order_id)
    assert order is not None
    return row, order


def _settle(session: DbSession, row: ShopifyRefund, order: Order, state: str, message: str) -> None:
    row.state = state
    row.last_error = None if state == SyncState.CREATED else message
    row.claimed_at = None
    row.next_attempt_at = None
    event = {
        SyncState.CREATED: "shopify.refund_recorded",
        SyncState.SKIPPED: "shopify.refund_skipped",
        SyncState.FAILED: "shopify.refund_failed",
    }[state]
    record(session, order, event, message, refund_id=str(row.refund_id))


async def mark_recorded(
    session: DbSession, row_id: uuid.UUID, shopify_refund_id: str, *, adopted: bool
) -> None:
    found = await _open_row(session, row_id)
    if found is None:
        return
    row, order = found
    row.shopify_refund_id = shopify_refund_id
    how = " (found after an interrupted attempt)" if adopted else ""
    _settle(
        session,
        row,
        order,
        SyncState.CREATED,
        f"refund of {_money(row)} recorded in Shopify: {shopify_refund_id}{how}",
    )


async def mark_skipped(session: DbSession, row_id: uuid.UUID, why: str) -> None:
    found = await _open_row(session, row_id)
    if found is not None:
        _settle(session, found[0], found[1], SyncState.SKIPPED, why)


async def mark_failed(session: DbSession, row_id: uuid.UUID, reason: str) -> None:
    """Refused for good: the timeline says why and the merchant's queue holds it."""
    found = await _open_row(session, row_id)
    if found is None:
        return
    row, order = found
    _settle(session, row, order, SyncState.FAILED, f"refund not recorded in Shopify: {reason}")
    open_exception(session, order, "shopify_refund_failed", reason, refund_id=str(row.refund_id))


async def mark_retry(
    session: DbSession,
    row_id: uuid.UUID,
    reason: str,
    delay_ms: int,
    *,
    uncertain: bool,
    counts: bool = True,
) -> bool:
    """Back off (``creating`` stays when a record may have been made); False when the attempts
    are spent (the row failed into the exceptions queue) or the row is settled."""
    found = await _open_row(session, row_id)
    if found is None:
        return False
    row, _ = found
    if not counts:
        row.attempts = max(0, row.attempts - 1)
    elif row.attempts >= MAX_ATTEMPTS:
        await mark_failed(session, row_id, f"gave up after {row.attempts} attempts: {reason}")
        return False
    row.last_error = reason
    row.claimed_at = None
    row.state = SyncState.CREATING if uncertain else SyncState.PENDING
    row.next_attempt_at = utcnow() + timedelta(milliseconds=delay_ms)
    return True


async def unrecorded(session: DbSession, window: StaleWindow) -> Sequence[uuid.UUID]:
    """Records still to make (the ``fulfillment.refund`` task's stale work)."""
    return await window.ids(
        session,
        select(ShopifyRefund.id)
        .join(Merchant, Merchant.id == ShopifyRefund.merchant_id)
        .where(
            ShopifyRefund.state.in_(SyncState.OPEN),
            ShopifyRefund.updated_at < window.cutoff,
            window.due(ShopifyRefund.next_attempt_at),
            or_(
                ShopifyRefund.claimed_at.is_(None),
                ShopifyRefund.claimed_at < window.now - LEASE,
            ),
            sync_running(),
        ),
    )
