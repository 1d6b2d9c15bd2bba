"""Merchant API: the store's own settings (``/api/v1/settings``): every typed section, the
Admin API token and the Stripe connection."""

from __future__ import annotations

from litestar import Controller, delete, get, put
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody

from app.api.deps import provide_merchant
from app.api.openapi import MERCHANT_SECURITY, error_response, operation
from app.db import DbSession
from app.merchants import service
from app.merchants.models import Merchant
from app.merchants.schemas import (
    SettingsIn,
    SettingsOut,
    ShopifyConnectionOut,
    ShopifyTokenIn,
    StripeConnectionIn,
    StripeConnectionOut,
)
from app.merchants.settings import MerchantSettings, settings_of
from app.refunds import service as refunds
from app.services import Services


def stripe_out(view: refunds.ConnectionView) -> StripeConnectionOut:
    return StripeConnectionOut(
        connected=view.connected,
        mode=view.mode,
        account_id=view.account_id,
        key_last4=view.key_last4,
    )


async def settings_out(db: DbSession, merchant: Merchant, s: MerchantSettings) -> SettingsOut:
    return SettingsOut.of(s, stripe_out(await refunds.connection_view(db, merchant.id)))


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
            "`tracking`, `shopify`, `refunds` (automatic refunds after a cancellation or a "
            "return), `routable_financial_statuses`, and `stripe`: whether Stripe is "
            "connected (`mode` `key` with the key's last four characters, or `account` with "
            "the connected account), never the key.",
            api="merchant",
            invalid=None,
        ),
    )
    async def get_settings(
        self, db_session: NamedDependency[DbSession], merchant: NamedDependency[Merchant]
    ) -> SettingsOut:
        return await settings_out(db_session, merchant, settings_of(merchant))

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
        changed = await service.change_settings(db_session, merchant, **data.sections())
        return await settings_out(db_session, merchant, changed)

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

    @put(
        "/stripe",
        summary="Connect the store's Stripe account (for refunds)",
        **operation(
            "setStripeConnection",
            "Exactly one of `secret_key` (a restricted key of your Stripe account, `rk_…`, with "
            "the Refunds write permission) or `account_id` (your connected account, `acct_…`, "
            "reached with the platform's key and `Stripe-Account`). Checked once against "
            "Stripe; the key is stored encrypted and never shown again (the answer and "
            "`GET /api/v1/settings` show its last four characters).",
            api="merchant",
            method="PUT",
            extra_responses={
                422: error_response("Stripe refused the key or account: `extra.field` names it."),
                502: error_response("Stripe answered with something unusable."),
                503: error_response(
                    "Stripe could not be reached (try again), or connected accounts are not "
                    "set up on this service (`DROPSHIP_STRIPE_SECRET_KEY`)."
                ),
            },
        ),
    )
    async def set_stripe(
        self,
        db_session: NamedDependency[DbSession],
        services: NamedDependency[Services],
        merchant: NamedDependency[Merchant],
        data: JSONBody[StripeConnectionIn],
    ) -> StripeConnectionOut:
        view = await refunds.connect(
            db_session,
            services.settings,
            services.box,
            merchant,
            secret_key=data.secret_key,
            account_id=data.account_id,
        )
        return stripe_out(view)

    @delete(
        "/stripe",
        status_code=204,
        summary="Disconnect Stripe",
        **operation(
            "deleteStripeConnection",
            "Forget the Stripe connection: no refund is sent until a new one is saved (refunds "
            "already sent keep following Stripe's webhooks). Revoke the key in Stripe too.",
            api="merchant",
            method="DELETE",
            invalid=None,
        ),
    )
    async def delete_stripe(
        self, db_session: NamedDependency[DbSession], merchant: NamedDependency[Merchant]
    ) -> None:
        await refunds.disconnect(db_session, merchant)
