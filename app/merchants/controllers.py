"""Merchant API: the store's own settings (``/api/v1/settings``): every typed section, and the
Admin API token. Later settings (return policy, Stripe) join this controller."""

from __future__ import annotations

from litestar import Controller, delete, get, put
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody

from app.api.deps import provide_merchant
from app.api.openapi import MERCHANT_SECURITY, operation
from app.db import DbSession
from app.merchants import service
from app.merchants.models import Merchant
from app.merchants.schemas import SettingsIn, SettingsOut, ShopifyConnectionOut, ShopifyTokenIn
from app.merchants.settings import settings_of
from app.services import Services


def connection_out(merchant: Merchant) -> ShopifyConnectionOut:
    return ShopifyConnectionOut(
        shop=merchant.shop_domain, access_token_set=merchant.shopify_token_encrypted is not None
    )


class SettingsController(Controller):
    path = "/api/v1/settings"
    tags = ["settings"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/",
        summary="The store's settings, every section",
        **operation(
            "getSettings",
            "Every section of your settings, defaults filled in: `routing`, `branding` (store "
            "name, logo, colour, sender and reply-to of customer emails), `notifications` "
            "(each customer email on or off, the default language, alert recipients), "
            "`tracking`, `shopify`, `routable_financial_statuses`.",
            api="merchant",
            invalid=None,
        ),
    )
    async def get_settings(self, merchant: NamedDependency[Merchant]) -> SettingsOut:
        return SettingsOut.of(settings_of(merchant))

    @put(
        "/",
        summary="Replace sections of the store's settings",
        **operation(
            "putSettings",
            "Replace the sections you give, each whole (a field left out takes its default); "
            "the others stay. Every value is checked first: a bad one is a 400 naming it, and "
            "nothing changes. Answers every section.",
            api="merchant",
            method="PUT",
        ),
    )
    async def put_settings(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        data: JSONBody[SettingsIn],
    ) -> SettingsOut:
        return SettingsOut.of(
            await service.change_settings(db_session, merchant, **data.sections())
        )

    @put(
        "/shopify-token",
        summary="Give the service the store's Admin API access token (a custom app's)",
        **operation(
            "setShopifyToken",
            "The Admin API access token of a custom app of your store (`shpat_…`), for the "
            "service to sync fulfillments. Stored encrypted; never shown again, not even here.",
            api="merchant",
            method="PUT",
        ),
    )
    async def set_token(
        self,
        db_session: NamedDependency[DbSession],
        services: NamedDependency[Services],
        merchant: NamedDependency[Merchant],
        data: JSONBody[ShopifyTokenIn],
    ) -> ShopifyConnectionOut:
        await service.set_shopify_token(db_session, services.box, merchant, data.access_token)
        return connection_out(merchant)

    @delete(
        "/shopify-token",
        status_code=204,
        summary="Forget the store's Admin API access token",
        **operation(
            "deleteShopifyToken",
            "Forget the Admin API access token: nothing is synced to Shopify until a new one "
            "is given. Revoke it in Shopify too.",
            api="merchant",
            method="DELETE",
            invalid=None,
        ),
    )
    async def delete_token(
        self,
        db_session: NamedDependency[DbSession],
        services: NamedDependency[Services],
        merchant: NamedDependency[Merchant],
    ) -> None:
        await service.set_shopify_token(db_session, services.box, merchant, None)
