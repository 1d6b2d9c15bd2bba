"""Stripe, through the real ``stripe`` library (v16): ``StripeClient`` on its async HTTPX client.

One ``StripePayments`` per use (a save of the connection, one run of the refund job): it builds
a ``StripeClient`` for the merchant's credentials, pointed at ``DROPSHIP_STRIPE_API_BASE`` when
set, with the API version pinned (``API_VERSION``: answers keep the shape we parse whatever the
account's default version is). Credentials are either the merchant's own restricted (or
secret) key, or a connected-account id used with ``Stripe-Account`` under the platform's key.

The library's own network retries are off (``max_network_retries=0``): the refund job retries
with the same ``Idempotency-Key`` after its backoff, so a retry is visible on the order's
timeline and survives a worker restart. Stripe's errors become ``RetryableConnectorError``
(connection errors, 5xx, 429, 409 ``idempotency_key_in_use``: the first request with that key
is still running) or ``PermanentConnectorError`` (invalid request, card, authentication).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import stripe

from connectors.base import PermanentConnectorError, RetryableConnectorError

#: The Stripe API version every request names (stripe-python 16's own).
API_VERSION = "2026-10-28.endive"
DEFAULT_API_BASE = "https://api.stripe.com"
#: Seconds before a call to Stripe is given up (the job retries with the same key).
TIMEOUT = 20.0

SECRET_KEY = re.compile(r"^(?:rk|sk)_(?:live|test)_[A-Za-z0-9]{10,247}$")
ACCOUNT_ID = re.compile(r"^acct_[A-Za-z0-9]{8,64}$")
#: What a refund can be created on: a PaymentIntent, a charge, or a payment (``py_``, a charge
#: on a connected account).
PAYMENT_REFERENCE = re.compile(r"^(pi|ch|py)_[A-Za-z0-9]{8,}$")


#: Stripe's own exponents (https://docs.stripe.com/currencies), not CLDR's: Stripe counts COP,
#: IDR, ISK, HUF... in hundredths although CLDR shows them without decimals.
ZERO_DECIMAL = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
#: Three-decimal currencies: the last digit must be 0 (amounts in hundredths of a unit).
THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])
#: Counted in hundredths but only whole units may be sent (the last two digits 00).
WHOLE_UNITS = frozenset(["HUF", "ISK", "TWD"])


def stripe_exponent(currency: str) -> int:
    """Digits of a unit in Stripe's integer amounts: JPY 0, KWD 3, USD / IDR / HUF 2."""
    code = currency.upper()
    if code in ZERO_DECIMAL:
        return 0
    return 3 if code in THREE_DECIMAL else 2


def stripe_places(currency: str) -> int:
    """The decimals an amount may carry to be sent to Stripe (JPY, HUF 0; KWD, USD 2)."""
    code = currency.upper()
    return 0 if code in ZERO_DECIMAL or code in WHOLE_UNITS else 2


def to_stripe_amount(amount: Decimal, currency: str) -> int:
    """``12.30`` USD -> 1230, ``2000`` JPY -> 2000, ``15000`` IDR -> 1500000, ``1.235`` KWD ->
    1240 (rounded to hundredths first: Stripe requires the last digit 0). ValueError for what
    Stripe cannot take: a fraction of a zero-decimal unit, or of a HUF / ISK / TWD."""
    code = currency.upper()
    if code in THREE_DECIMAL:
        amount = amount.quantize(Decimal("0.01"), ROUND_HALF_UP)
    places = stripe_places(code)
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise ValueError(
            f"Stripe takes {code} amounts with {places} decimal place(s) at most, got {amount}"
        )
    return int(amount.scaleb(stripe_exponent(code)).to_integral_value(ROUND_HALF_UP))


def from_stripe_amount(amount: int, currency: str) -> Decimal:
    """Stripe's integer amount as a Decimal of units: 1230 USD -> ``12.30``, 2000 JPY ->
    ``2000``, 1240 KWD -> ``1.240``."""
    return Decimal(amount).scaleb(-stripe_exponent(currency))


class StripeAuthError(PermanentConnectorError):
    """Stripe refused the credentials themselves (401/403, or an unknown account)."""


@dataclass(frozen=True)
class Credentials:
    """``api_key`` for the calls; ``account`` the ``Stripe-Account`` (connected account) or
    None (the merchant's own key)."""

    api_key: str
    account: str | None = None


@dataclass(frozen=True)
class RefundDTO:
    """Stripe's refund as far as we read it."""

    id: str
    status: str
    amount: int
    currency: str
    failure_reason: str | None
    metadata: dict[str, str]
    #: ``Idempotent-Replayed: true``: Stripe answered a request it had seen (same key).
    replayed: bool = False


def refund_of(obj: Any, replayed: bool = False) -> RefundDTO:
    """A refund object (the library's ``Refund`` or a webhook's ``data.object`` dict)."""
    data: dict[str, Any] = obj.to_dict() if isinstance(obj, stripe.StripeObject) else dict(obj)
    get = data.get
    metadata = get("metadata") or {}
    return RefundDTO(
        id=str(get("id")),
        status=str(get("status") or "pending"),
        amount=int(get("amount") or 0),
        currency=str(get("currency") or ""),
        failure_reason=get("failure_reason"),
        metadata={str(k): str(v) for k, v in dict(metadata).items()},
        replayed=replayed,
    )


def refund_target(reference: str) -> dict[str, str]:
    """``payment_intent=pi_...`` or ``charge=ch_...|py_...`` for a refund's parameters."""
    match = PAYMENT_REFERENCE.fullmatch(reference)
    if match is None:
        raise PermanentConnectorError(f"not a Stripe payment reference: {reference!r}")
    return {"payment_intent": reference} if match.group(1) == "pi" else {"charge": reference}


def idempotency_key(refund_id: str) -> str:
    """Derived from our refund's id alone: every attempt of the same refund sends the same."""
    return f"dropship-refund-{refund_id}"


def _mapped(exc: stripe.StripeError) -> Exception:
    message = f"Stripe: {exc.user_message or type(exc).__name__}"
    status = exc.http_status
    if isinstance(exc, stripe.APIConnectionError):
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "network error"
        return RetryableConnectorError(f"Stripe could not be reached ({cause})")
    if isinstance(exc, stripe.RateLimitError):
        return RetryableConnectorError(message, retry_after=_retry_after(exc))
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return StripeAuthError(message)
    if isinstance(exc, stripe.IdempotencyError):
        # The same key with other parameters: a bug of ours, retrying cannot help.
        return PermanentConnectorError(message)
    if isinstance(exc, stripe.APIError) and (status is None or status >= 500 or status == 409):
        return RetryableConnectorError(message, retry_after=_retry_after(exc))
    if isinstance(exc, stripe.InvalidRequestError) and status == 404 and exc.param == "account":
        return StripeAuthError(message)
    return PermanentConnectorError(message)


def _retry_after(exc: stripe.StripeError) -> float | None:
    raw = (exc.headers or {}).get("retry-after") if exc.headers else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


class StripePayments:
    """Calls to Stripe for one merchant: ``async with StripePayments(creds, api_base) as s``."""

    def __init__(
        self, credentials: Credentials, api_base: str | None = None, *, timeout: float = TIMEOUT
    ) -> None:
        self.credentials = credentials
        self._http = stripe.HTTPXClient(timeout=timeout)
        base = (api_base or DEFAULT_API_BASE).rstrip("/")
        self.client = stripe.StripeClient(
            credentials.api_key,
            stripe_account=credentials.account,
            stripe_version=API_VERSION,
            base_addresses={"api": base, "connect": base, "files": base},
            http_client=self._http,
            max_network_retries=0,
        )

    async def __aenter__(self) -> StripePayments:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def verify(self) -> str | None:
        """Check the credentials once: the connected account (under the platform key) or the
        key's balance. Returns the account's id when there is one."""
        try:
            if self.credentials.account is not None:
                account = await self.client.v1.accounts.retrieve_async(self.credentials.account)
                return str(account.id)
            await self.client.v1.balance.retrieve_async()
            return None
        except stripe.StripeError as exc:
            raise _mapped(exc) from exc

    async def create_refund(
        self,
        *,
        refund_id: str,
        order_id: str,
        reference: str,
        amount: int,
        reason: str | None = None,
    ) -> RefundDTO:
        """A Refund of ``amount`` (minor units) on the payment ``reference``; sent with the
        idempotency key of ``refund_id``, so a retry gets the refund Stripe already made."""
        params: dict[str, Any] = {
            **refund_target(reference),
            "amount": amount,
            "metadata": {"dropship_refund_id": refund_id, "dropship_order_id": order_id},
        }
        if reason in ("duplicate", "fraudulent", "requested_by_customer"):
            params["reason"] = reason
        try:
            refund = await self.client.v1.refunds.create_async(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key(refund_id)},
            )
        except stripe.StripeError as exc:
            raise _mapped(exc) from exc
        headers = refund.last_response.headers if refund.last_response else {}
        replayed = str(headers.get("idempotent-replayed", "")).lower() == "true"
        return refund_of(refund, replayed)

    async def retrieve_refund(self, stripe_refund_id: str) -> RefundDTO:
        try:
            refund = await self.client.v1.refunds.retrieve_async(stripe_refund_id)
        except stripe.StripeError as exc:
            raise _mapped(exc) from exc
        return refund_of(refund)


def verify_webhook(payload: bytes, header: str, secrets: list[str], tolerance: int = 300) -> bool:
    """``Stripe-Signature`` (``t=...,v1=...``, any ``v1`` of a rotation) checked with the
    library against each secret (the current and the previous during a rotation), and its
    timestamp within ``tolerance`` seconds."""
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
        except stripe.SignatureVerificationError:
            continue
        return True
    return False
