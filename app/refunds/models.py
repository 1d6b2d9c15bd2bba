"""The merchant's Stripe connection and the refunds made through it."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, TimestampMixin


class StripeMode:
    #: The merchant's own restricted (or secret) key.
    KEY = "key"
    #: A connected account (``acct_...``) reached with the platform's key and ``Stripe-Account``.
    ACCOUNT = "account"


class StripeConnection(IdMixin, TimestampMixin, Base):
    """How the service reaches the merchant's Stripe account: one per merchant. The key is
    Fernet-encrypted (``SecretBox``) and never shown again; only its last four characters are."""

    __tablename__ = "stripe_connections"

    merchant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("merchants.id", ondelete="CASCADE"), unique=True
    )
    mode: Mapped[str] = mapped_column(String(8))
    secret_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    key_last4: Mapped[str | None] = mapped_column(String(4), default=None)
    account_id: Mapped[str | None] = mapped_column(String(64), default=None)
    verified_at: Mapped[datetime]


class RefundStatus:
    #: Ours: written, not yet answered by Stripe (the job sends it).
    REQUESTED = "requested"
    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    ALL = (REQUESTED, PENDING, REQUIRES_ACTION, SUCCEEDED, FAILED, CANCELED)
    #: Stripe never moves a refund out of these.
    TERMINAL = (SUCCEEDED, FAILED, CANCELED)
    #: Money that did not (and will not) go back: not counted against the captured amount.
    RELEASED = (FAILED, CANCELED)


class RefundOrigin:
    MERCHANT = "merchant"
    POLICY_CANCEL = "policy-cancel"
    POLICY_RETURN = "policy-return"


class Refund(IdMixin, TimestampMixin, Base):
    """Money back to the customer on the order's Stripe payment, sent once (idempotency key
    ``dropship-refund-<id>``)."""

    __tablename__ = "refunds"
    __table_args__ = (
        #: Policy refunds are once per cause (``cancel:<order id>``, ``return:<return id>``).
        UniqueConstraint("merchant_id", "key"),
        UniqueConstraint("stripe_refund_id"),
        Index("ix_refunds_merchant_created", "merchant_id", "created_at", "id"),
        Index("ix_refunds_order", "order_id", "created_at"),
        Index("ix_refunds_unsent", "status", "updated_at"),
    )

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    key: Mapped[str | None] = mapped_column(String(200), default=None)
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    #: ``amount`` in the currency's minor units, as sent to Stripe (yen: the amount itself).
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    #: ``[{"line_id", "quantity"}]`` refunded, empty for an amount.
    lines: Mapped[list[Any]] = mapped_column(default=list)
    shipping: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    origin: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=RefundStatus.REQUESTED)
    #: The payment refunded (the order's ``stripe_payment_reference`` when it was made).
    payment_reference: Mapped[str] = mapped_column(String(255))
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255), default=None)
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The job gave up sending (Stripe unreachable for too long): a person checks; a webhook
    #: may still tell us what Stripe made of it.
    given_up_at: Mapped[datetime | None] = mapped_column(default=None)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
