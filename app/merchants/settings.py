"""The merchant's settings: one typed schema, parsed in one place.

They are stored as JSON on ``Merchant.settings``; every reader goes through
:func:`settings_of` (a stored value that no longer fits the schema falls back to the default,
with a warning, instead of failing the order that reads it) and every writer through
:func:`save`. Later settings (return policy, Stripe...) are added here.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

import msgspec
import structlog
from msgspec import Meta

from app import limits
from app.codes import check_country
from app.inputs import CountryCode, Input, OptionalText, ShortText, Url
from app.mail.address import EmailAddress, check_email
from app.merchants.models import Merchant

log = structlog.get_logger(__name__)

#: Financial statuses that let an order proceed unless the merchant says otherwise.
DEFAULT_ROUTABLE_PAYMENT = ("paid", "authorized")
DEFAULT_TOLERANCE = Decimal("0.05")


class RoutingSettings(Input, kw_only=True):
    """``auto_route``: send valid orders to suppliers at once (else they wait in
    ``ready_to_route``). ``consolidation_tolerance``: how much more (0.05 = 5 %) the merchant
    accepts to pay for fewer suppliers per order."""

    auto_route: bool = True
    consolidation_tolerance: Annotated[
        Decimal, Meta(description=f"from 0 to {limits.MAX_TOLERANCE}")
    ] = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        super().__post_init__()
        tolerance = self.consolidation_tolerance
        if not tolerance.is_finite() or not 0 <= tolerance <= limits.MAX_TOLERANCE:
            raise ValueError(
                f"consolidation_tolerance: between 0 and {limits.MAX_TOLERANCE} (0.05 = 5 %)"
            )


_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
#: Languages the customer emails and the tracking page ship in.
LANGUAGES = ("en", "de")


def _check_url(field: str, value: str | None) -> None:
    if value is not None and not value.startswith("https://"):
        raise ValueError(f"{field}: an https:// URL")


class BrandingSettings(Input, kw_only=True):
    """How the store shows itself in customer emails and on the tracking page. Unset: the
    store's domain, no logo, the default colour, the operator's sender address."""

    store_name: OptionalText = None
    logo_url: Url | None = None
    color: Annotated[str, Meta(max_length=7, description="#RRGGBB")] | None = None
    sender_email: EmailAddress | None = None
    reply_to: EmailAddress | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_url("logo_url", self.logo_url)
        if self.color is not None and not _COLOUR.fullmatch(self.color):
            raise ValueError("color: #RRGGBB, like #1a73e8")
        check_email("sender_email", self.sender_email)
        check_email("reply_to", self.reply_to)


class NotificationSettings(Input, kw_only=True):
    """Which customer emails go out (each on or off), and the language of customers whose
    order names none we ship."""

    order_confirmation: bool = True
    shipped: bool = True
    out_for_delivery: bool = True
    delivered: bool = True
    delayed: bool = True
    cancelled: bool = True
    refund_issued: bool = True
    return_requested: bool = True
    return_approved: bool = True
    return_rejected: bool = True
    return_received: bool = True
    default_locale: Annotated[str, Meta(description=" or ".join(LANGUAGES))] = "en"
    #: Who gets the merchant's alerts (late and stale parcels); empty: the merchant's email.
    alert_recipients: Annotated[tuple[EmailAddress, ...], Meta(max_length=10)] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.default_locale not in LANGUAGES:
            raise ValueError(f"default_locale: one of {', '.join(LANGUAGES)}")
        for i, address in enumerate(self.alert_recipients):
            check_email(f"alert_recipients[{i}]", address)


class TrackingSettings(Input, kw_only=True):
    """``stale_after_days``: a parcel with no tracking news for this long is delayed."""

    stale_after_days: Annotated[int, Meta(ge=1, le=limits.MAX_STALE_DAYS)] = 7


class ShopifySettings(Input, kw_only=True):
    """``sync_fulfillments``: create fulfillments with tracking in the store as parcels ship.
    ``notify_customer``: let Shopify email the customer too (off: the service sends its own).
    ``record_refunds``: book refunds made through Stripe on the Shopify order (moving no money)."""

    sync_fulfillments: bool = True
    notify_customer: bool = False
    record_refunds: bool = True


#: Longest return window and stall threshold a merchant may set (days).
MAX_RETURN_DAYS = 365
#: Longest return instructions (they go into the customer's email).
MAX_RETURN_INSTRUCTIONS = 2_000


class ReturnAddress(Input, kw_only=True):
    """Where returned items go when the supplier offers no address or label of its own."""

    name: ShortText
    address1: ShortText
    city: ShortText
    country_code: CountryCode
    address2: OptionalText = None
    company: OptionalText = None
    province_code: OptionalText = None
    zip: OptionalText = None
    phone: OptionalText = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_country("country_code", self.country_code)


class ReturnSettings(Input, kw_only=True):
    """``window_days``: how long after delivery (or shipping, if never delivered) a customer may
    ask for a return from the tracking page. ``auto_approve``: approve requests at once (else
    they wait for the merchant). ``return_address`` and ``instructions``: what the customer is
    told when the supplier offers no address or label. ``stall_after_days``: an approved return
    not received after this long goes to the exceptions queue."""

    window_days: Annotated[int, Meta(ge=0, le=MAX_RETURN_DAYS)] = 30
    auto_approve: bool = True
    return_address: ReturnAddress | None = None
    instructions: Annotated[str, Meta(max_length=MAX_RETURN_INSTRUCTIONS)] | None = None
    stall_after_days: Annotated[int, Meta(ge=1, le=MAX_RETURN_DAYS)] = 14


class CancellationSettings(Input, kw_only=True):
    """``customer_can_cancel``: the customer may cancel from the tracking page until something
    of the order has shipped."""

    customer_can_cancel: bool = True


class RefundSettings(Input, kw_only=True):
    """Refunds the service makes by itself through Stripe: ``on_cancel`` (the cancelled lines
    and shipping when nothing shipped) and ``on_return`` (the returned lines, once received),
    each ``auto`` or ``manual`` (you refund through the API). ``restocking_fee``: kept from
    return refunds, a fraction of the lines' amount (0.10 = 10 %)."""

    on_cancel: Annotated[str, Meta(description="auto or manual")] = "auto"
    on_return: Annotated[str, Meta(description="auto or manual")] = "auto"
    restocking_fee: Annotated[Decimal, Meta(description="from 0 to 1 (0.10 = 10 %)")] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("on_cancel", "on_return"):
            if getattr(self, name) not in ("auto", "manual"):
                raise ValueError(f"{name}: auto or manual")
        fee = self.restocking_fee
        if fee is not None and (not fee.is_finite() or not 0 <= fee <= 1):
            raise ValueError("restocking_fee: between 0 and 1 (0.10 = 10 %)")


class MerchantSettings(msgspec.Struct, kw_only=True):
    routing: RoutingSettings = msgspec.field(default_factory=RoutingSettings)
    branding: BrandingSettings = msgspec.field(default_factory=BrandingSettings)
    notifications: NotificationSettings = msgspec.field(default_factory=NotificationSettings)
    tracking: TrackingSettings = msgspec.field(default_factory=TrackingSettings)
    shopify: ShopifySettings = msgspec.field(default_factory=ShopifySettings)
    returns: ReturnSettings = msgspec.field(default_factory=ReturnSettings)
    cancellation: CancellationSettings = msgspec.field(default_factory=CancellationSettings)
    refunds: RefundSettings = msgspec.field(default_factory=RefundSettings)
    #: Orders in another financial status wait for payment (``validation_failed``).
    routable_financial_statuses: Annotated[
        tuple[str, ...], Meta(min_length=1, max_length=limits.MAX_LIST)
    ] = DEFAULT_ROUTABLE_PAYMENT


def parse(raw: dict[str, Any] | None) -> MerchantSettings:
    """Stored JSON to settings; each section that does not fit keeps its default."""
    raw = raw or {}
    sections: dict[str, Any] = {}
    for name in MerchantSettings.__struct_fields__:
        if name not in raw:
            continue
        try:
            parsed = msgspec.convert({name: raw[name]}, MerchantSettings, strict=False)
            sections[name] = getattr(parsed, name)
        except msgspec.ValidationError as exc:
            log.warning("merchant.settings_invalid", section=name, error=str(exc))
    return MerchantSettings(**sections)


def settings_of(merchant: Merchant | None) -> MerchantSettings:
    return parse(merchant.settings if merchant is not None else None)


def save(merchant: Merchant, settings: MerchantSettings) -> None:
    """Store the settings (the caller's transaction commits)."""
    merchant.settings = msgspec.to_builtins(settings)
