from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app import limits
from app.codes import wire_amount
from app.inputs import Amount, Input, OptionalText, check_amount
from app.refunds.models import Refund


class RefundLineIn(Input, kw_only=True):
    """``line_id``: the order line's id (``lines[].id`` of the order)."""

    line_id: Annotated[str, Meta(min_length=1, max_length=64)]
    quantity: Annotated[int, Meta(ge=1, le=limits.MAX_LINE_QUANTITY)]


class RefundIn(Input, kw_only=True):
    """``amount`` ("12.30", in the order's currency), or ``lines`` and/or ``shipping``; with a
    ``reason`` (``requested_by_customer``, ``duplicate`` and ``fraudulent`` are passed on to
    Stripe; any other text stays ours)."""

    amount: Amount | None = None
    lines: Annotated[list[RefundLineIn], Meta(max_length=limits.MAX_LINES)] | None = None
    shipping: bool = False
    reason: OptionalText = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.amount is not None:
            check_amount("amount", self.amount)


class RefundOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    order_id: uuid.UUID
    amount: Decimal
    currency: str
    #: What was sent to Stripe: the amount in the currency's minor units.
    amount_minor: int
    lines: list[dict[str, Any]]
    shipping: bool
    reason: str | None
    #: ``merchant``, ``policy-cancel`` or ``policy-return``.
    origin: str
    #: ``requested`` (not yet answered by Stripe), then Stripe's: ``pending``,
    #: ``requires_action``, ``succeeded``, ``failed``, ``canceled``.
    status: str
    stripe_refund_id: str | None
    failure_reason: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: Refund) -> RefundOut:
        return cls(
            id=r.id,
            order_id=r.order_id,
            amount=wire_amount(r.amount, r.currency),
            currency=r.currency,
            amount_minor=r.amount_minor,
            lines=list(r.lines or []),
            shipping=r.shipping,
            reason=r.reason,
            origin=r.origin,
            status=r.status,
            stripe_refund_id=r.stripe_refund_id,
            failure_reason=r.failure_reason,
            attempts=r.attempts,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )


class StripeWebhookAck(msgspec.Struct):
    """``processed``: applied; ``ignored``: recorded, about nothing of ours; ``duplicate``: a
    replay, nothing happens."""

    status: str
