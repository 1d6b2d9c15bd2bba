from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from app import limits
from app.inputs import Input, ShortText
from app.merchants.settings import (
    BrandingSettings,
    NotificationSettings,
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
    routable_financial_statuses: (
        Annotated[tuple[ShortText, ...], Meta(min_length=1, max_length=limits.MAX_LIST)] | None
    ) = None

    def sections(self) -> dict[str, object]:
        return {
            name: getattr(self, name)
            for name in self.__struct_fields__
            if getattr(self, name) is not None
        }
