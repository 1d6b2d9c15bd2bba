"""The long-lived objects of one API process, built once at start-up and passed to handlers."""

from __future__ import annotations

from dataclasses import dataclass

from shopify_app import ShopifyApp

from app.db import Database
from app.merchants.service import MerchantDirectory
from app.security import SecretBox
from app.settings import Settings
from app.webhooks import shopify_verify
from app.webhooks.ingest import IngestWriter


@dataclass
class Services:
    settings: Settings
    db: Database
    box: SecretBox
    directory: MerchantDirectory
    ingest: IngestWriter
    #: ``shopifyapp`` verifier; None until the Shopify app credentials are configured.
    shopify: ShopifyApp | None

    @classmethod
    def build(cls, settings: Settings) -> Services:
        db = Database(settings.database_url)
        shopify = None
        if settings.shopify_api_secret:
            shopify_verify.install()
            shopify = ShopifyApp(
                client_id=settings.shopify_api_key or "unset",
                client_secret=settings.shopify_api_secret,
                old_client_secret=settings.shopify_old_api_secret,
            )
        return cls(
            settings=settings,
            db=db,
            box=SecretBox(settings.resolved_secret_key()),
            directory=MerchantDirectory(db),
            ingest=IngestWriter(db, max_batch=settings.ingest_batch_max),
            shopify=shopify,
        )
