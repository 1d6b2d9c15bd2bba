"""``POST /webhooks/shopify``: verify, store durably, answer. Everything else runs in workers."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import Controller, Request, post
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    NotFoundException,
    ServiceUnavailableException,
)
from litestar.response import Response

from app.merchants.service import MerchantError, normalize_shop_domain
from app.services import Services
from app.webhooks.ingest import IncomingWebhook
from app.webhooks.topics import HANDLED_TOPICS, INACTIVE_SHOP_TOPICS

log = structlog.get_logger(__name__)

_ACCEPTED = b'{"status":"accepted"}'
_DUPLICATE = b'{"status":"duplicate"}'
_IGNORED = b'{"status":"ignored"}'


class _JsonObject(msgspec.Struct):
    """Any JSON object: unknown fields are skipped, so decoding only checks well-formedness."""


def _json(body: bytes) -> Response[bytes]:
    return Response(body, status_code=200, media_type="application/json")


class ShopifyWebhookController(Controller):
    path = "/webhooks/shopify"
    tags = ["webhooks"]
    include_in_schema = True

    @post("/", status_code=200, summary="Shopify webhook receiver")
    async def receive(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Verified with ``X-Shopify-Hmac-Sha256``; a redelivery answers 200 and changes nothing."""
        services: Services = request.app.state.services
        if services.shopify is None:
            raise ServiceUnavailableException(
                "Shopify webhooks are not configured: set DROPSHIP_SHOPIFY_API_SECRET"
            )
        raw = await request.body()
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ClientException("body is not UTF-8") from exc
        headers = request.headers
        result = services.shopify.verify_webhook_req(
            {"method": "POST", "headers": dict(headers), "url": request.scope["path"], "body": body}
        )
        if not result.ok:
            code = result.log.code
            detail = (
                "missing X-Shopify-Hmac-Sha256 header"
                if code == "missing_hmac_header"
                else "X-Shopify-Hmac-Sha256 does not match the body"
            )
            raise NotAuthorizedException(detail)

        topic = headers.get("x-shopify-topic")
        webhook_id = headers.get("x-shopify-webhook-id")
        shop = headers.get("x-shopify-shop-domain")
        missing = [
            name
            for name, value in (
                ("X-Shopify-Topic", topic),
                ("X-Shopify-Webhook-Id", webhook_id),
                ("X-Shopify-Shop-Domain", shop),
            )
            if not value
        ]
        if missing:
            raise ClientException(f"missing header(s): {', '.join(missing)}")
        assert topic is not None
        assert webhook_id is not None
        assert shop is not None
        if topic not in HANDLED_TOPICS:
            log.info("webhook.topic_ignored", topic=topic, shop=shop)
            return _json(_IGNORED)
        try:
            shop_domain = normalize_shop_domain(shop)
        except MerchantError as exc:
            raise ClientException(f"X-Shopify-Shop-Domain: {exc}") from exc
        try:
            # Validates the whole document without building it (the worker parses it for real).
            msgspec.json.decode(raw, type=_JsonObject)
        except msgspec.ValidationError as exc:
            raise ClientException("body must be a JSON object") from exc
        except msgspec.DecodeError as exc:
            raise ClientException(f"body is not valid JSON: {exc}") from exc

        entry = await services.directory.lookup(shop_domain)
        if entry is None:
            # Not 2xx on purpose: Shopify retries, so orders of a shop onboarded a little late
            # are not lost, and the failure shows in the app's webhook metrics.
            raise NotFoundException(f"shop {shop_domain} is not a merchant of this service")
        if not entry.active and topic not in INACTIVE_SHOP_TOPICS:
            log.info("webhook.inactive_shop", topic=topic, shop=shop_domain)
            return _json(_IGNORED)

        incoming = IncomingWebhook(
            source="shopify",
            merchant_id=entry.merchant_id,
            topic=topic,
            webhook_id=webhook_id,
            event_id=headers.get("x-shopify-event-id") or None,
            payload=body,
        )
        try:
            stored = await services.ingest.submit(incoming)
        except Exception as exc:
            # Nothing was committed: a 503 makes Shopify deliver it again later.
            log.error("webhook.store_failed", topic=topic, shop=shop_domain, error=repr(exc))
            raise ServiceUnavailableException("could not store the webhook; retry later") from exc
        return _json(_ACCEPTED if stored else _DUPLICATE)
