from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from app import limits
from app.inputs import Input, ShortText
from app.merchants.settings import (
    BrandingSettings,
    CancellationSettings,
    MerchantSettings,
    NotificationSettings,
    RefundSettings,
    ReturnSettings,
    RoutingSettings,
    ShopifySettings,
    TrackingSettings,
)


class ShopifyTokenIn(Input):
    """The store's Admin API access token (a custom app's), stored encrypted, never shown
    again."""

    access_token: Annotated[str, Meta(min_length=1, max_length=255)]


class ShopifyConnectionOut(msgspec.Struct):
    """Whether the service holds an Admin API token for the store (the token is never shown)."""

    shop: str
    access_token_set: bool


class SettingsIn(Input, kw_only=True):
    """The sections to replace, each whole (its fields left out take their defaults); the
    sections not given stay as they are."""

    routing: RoutingSettings | None = None
    branding: BrandingSettings | None = None
    notifications: NotificationSettings | None = None
    tracking: TrackingSettings | None = None
    shopify: ShopifySettings | None = None
    returns: ReturnSettings | None = None
    cancellation: CancellationSettings | None = None
    refunds: RefundSettings | None = None
    # A list, not a tuple: Litestar documents ``tuple[str, ...]`` as ``oneOf: [string, {}]``.
    routable_financial_statuses: (
        Annotated[list[ShortText], Meta(min_length=1, max_length=limits.MAX_LIST)] | None
    ) = None

    def sections(self) -> dict[str, object]:
        given: dict[str, object] = {
            name: getattr(self, name)
            for name in self.__struct_fields__
            if getattr(self, name) is not None
        }
        if self.routable_financial_statuses is not None:
            given["routable_financial_statuses"] = tuple(self.routable_financial_statuses)
        return given


class NotificationsOut(msgspec.Struct, kw_only=True):
    """``NotificationSettings`` as answered (lists where the settings hold tuples)."""

    order_confirmation: bool
    shipped: bool
    out_for_delivery: bool
    delivered: bool
    delayed: bool
    cancelled: bool
    refund_issued: bool
    return_requested: bool
    return_approved: bool
    return_rejected: bool
    return_received: bool
    default_locale: str
    alert_recipients: list[str]


class StripeConnectionOut(msgspec.Struct, kw_only=True):
    """The Stripe connection as you may see it: never the key, only its last four characters
    (``mode`` ``key``) or the connected account (``mode`` ``account``)."""

    connected: bool
    mode: str | None = None
    account_id: str | None = None
    key_last4: str | None = None


class StripeConnectionIn(Input, kw_only=True):
    """Exactly one: ``secret_key`` (your restricted key, ``rk_…``, with the Refunds write
    permission) or ``account_id`` (a connected account, ``acct_…``, reached with the platform's
    key)."""

    secret_key: Annotated[str, Meta(min_length=1, max_length=255)] | None = None
    account_id: Annotated[str, Meta(min_length=1, max_length=255)] | None = None


class SettingsOut(msgspec.Struct, kw_only=True):
    """Every section of the merchant's settings, defaults filled in; ``stripe`` shows the
    connection (``PUT /api/v1/settings/stripe`` sets it)."""

    routing: RoutingSettings
    branding: BrandingSettings
    notifications: NotificationsOut
    tracking: TrackingSettings
    shopify: ShopifySettings
    returns: ReturnSettings
    cancellation: CancellationSettings
    refunds: RefundSettings
    routable_financial_statuses: list[str]
    stripe: StripeConnectionOut = msgspec.field(
        default_factory=lambda: StripeConnectionOut(connected=False)
    )

    @classmethod
    def of(cls, s: MerchantSettings, stripe: StripeConnectionOut | None = None) -> SettingsOut:
        return cls(
            refunds=s.refunds,
            stripe=stripe or StripeConnectionOut(connected=False),
            routing=s.routing,
            branding=s.branding,
            notifications=msgspec.convert(msgspec.to_builtins(s.notifications), NotificationsOut),
            tracking=s.tracking,
            shopify=s.shopify,
            returns=s.returns,
            cancellation=s.cancellation,
            routable_financial_statuses=list(s.routable_financial_statuses),
        )
