"""``POST /webhooks/shopify``: verify, store durably, answer. Everything else runs in workers.

The receiver is one framework-free function, ``receive_shopify``. Servers reach it through
``shopify_fast_path``, a thin ASGI wrapper in front of Litestar (the hottest endpoint skips the
framework's per-request machinery: about half the CPU per webhook); the Litestar route below
calls the same function, documents the endpoint in OpenAPI and serves the test client.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import structlog
from litestar import Controller, Request, post
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import ResponseSpec
from litestar.response import Response
from litestar.types import ASGIApp

from app import limits
from app.api.deps import body_too_large
from app.api.openapi import (
    SHOPIFY_SECURITY,
    error_response,
    header,
    json_object_body,
    operation,
)
from app.logging import request_id_middleware
from app.merchants.service import MerchantError, normalize_shop_domain
from app.metrics import WEBHOOK_SECONDS, WEBHOOKS
from app.services import Services
from app.webhooks.ingest import IncomingWebhook, Overloaded
from app.webhooks.topics import HANDLED_TOPICS, INACTIVE_SHOP_TOPICS

log = structlog.get_logger(__name__)

PATH = "/webhooks/shopify"
_ACCEPTED = b'{"status":"accepted"}'
_DUPLICATE = b'{"status":"duplicate"}'
_IGNORED = b'{"status":"ignored"}'


class _JsonObject(msgspec.Struct):
    """Any JSON object: unknown fields are skipped, so decoding only checks well-formedness."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    retry_after: int | None = None


def _error(
    status: int,
    detail: str,
    retry_after: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Reply:
    body = msgspec.json.encode({"status_code": status, "detail": detail, "extra": extra or {}})
    return Reply(status, body, retry_after)


_TOO_LARGE = Reply(413, msgspec.json.encode(body_too_large(limits.MAX_WEBHOOK_BODY)))
_BODY = {"field": "body"}


_OUTCOMES = {
    _ACCEPTED: "accepted",
    _DUPLICATE: "duplicate",
    _IGNORED: "ignored",
}
_FAILURES = {400: "invalid", 401: "unauthorized", 404: "unknown_shop", 413: "too_large"}
#: The metric's children by (topic, outcome), resolved once (no label lookup per request).
_COUNTERS: dict[tuple[str, str], Any] = {}


def _observe(reply: Reply, headers: Mapping[str, str], started: float) -> Reply:
    """Count and time an answer. The topic is a label only if it is one we handle: the header
    comes from anyone (even unverified), and labels must stay few."""
    WEBHOOK_SECONDS.observe(time.perf_counter() - started)
    topic = headers.get("x-shopify-topic") or ""
    if topic not in HANDLED_TOPICS:
        topic = "other"
    if reply.status == 200:
        outcome = _OUTCOMES.get(reply.body, "accepted")
    else:
        outcome = _FAILURES.get(reply.status, "unavailable")
    key = (topic, outcome)
    counter = _COUNTERS.get(key)
    if counter is None:
        counter = _COUNTERS[key] = WEBHOOKS.labels(topic, outcome)
    counter.inc()
    return reply


async def receive_shopify(
    services: Services, headers: Mapping[str, str], path: str, raw: bytes
) -> Reply:
    """Verify (HMAC via ``shopifyapp``), check, store durably, answer. ``headers`` lower-case.
    Counted and timed in ``dropship_webhooks_total`` and ``dropship_webhook_duration_seconds``."""
    started = time.perf_counter()
    return _observe(await _receive_shopify(services, headers, path, raw), headers, started)


async def _receive_shopify(
    services: Services, headers: Mapping[str, str], path: str, raw: bytes
) -> Reply:
    if services.shopify is None:
        return _error(503, "Shopify webhooks are not configured: set DROPSHIP_SHOPIFY_API_SECRET")
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "body: not valid UTF-8", extra=_BODY)
    result = services.shopify.verify_webhook_req(
        {"method": "POST", "headers": dict(headers), "url": path, "body": body}
    )
    if not result.ok:
        if result.log.code == "missing_hmac_header":
            return _error(401, "missing X-Shopify-Hmac-Sha256 header")
        return _error(401, "X-Shopify-Hmac-Sha256 does not match the body")

    topic = headers.get("x-shopify-topic")
    webhook_id = headers.get("x-shopify-webhook-id")
    shop = headers.get("x-shopify-shop-domain")
    if not topic or not webhook_id or not shop:
        missing = [
            name
            for name, value in (
                ("X-Shopify-Topic", topic),
                ("X-Shopify-Webhook-Id", webhook_id),
                ("X-Shopify-Shop-Domain", shop),
            )
            if not value
        ]
        return _error(400, f"missing header(s): {', '.join(missing)}")
    if topic not in HANDLED_TOPICS:
        log.info("webhook.topic_ignored", topic=topic, shop=shop)
        return Reply(200, _IGNORED)
    try:
        shop_domain = normalize_shop_domain(shop)
    except MerchantError as exc:
        return _error(400, f"X-Shopify-Shop-Domain: {exc}")
    try:
        # Validates the whole document without building it (the worker parses it for real).
        msgspec.json.decode(raw, type=_JsonObject)
    except msgspec.ValidationError:
        return _error(400, "body: must be a JSON object", extra=_BODY)
    except msgspec.DecodeError as exc:
        return _error(400, f"body: not valid JSON: {exc}", extra=_BODY)
    except RecursionError:  # deeper than the decoder goes: no order is
        return _error(400, "body: nested too deeply", extra=_BODY)

    entry = await services.directory.lookup(shop_domain)
    if entry is None:
        # Not 2xx on purpose: Shopify retries, so orders of a shop onboarded a little late
        # are not lost, and the failure shows in the app's webhook metrics.
        return _error(404, f"shop {shop_domain} is not a merchant of this service")
    if not entry.active and topic not in INACTIVE_SHOP_TOPICS:
        log.info("webhook.inactive_shop", topic=topic, shop=shop_domain)
        return Reply(200, _IGNORED)
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
    except Overloaded as exc:
        log.warning("webhook.overloaded", detail=str(exc))
        return _error(503, "too many webhooks waiting to be stored; retry shortly", 1)
    except Exception as exc:
        # Nothing was committed: a 503 makes Shopify deliver it again later.
        log.error("webhook.store_failed", topic=topic, shop=shop_domain, error=repr(exc))
        return _error(503, "could not store the webhook; retry later", 5)
    return Reply(200, _ACCEPTED if stored else _DUPLICATE)


def _headers_of(reply: Reply) -> dict[str, str]:
    return {"retry-after": str(reply.retry_after)} if reply.retry_after else {}


class WebhookAck(msgspec.Struct):
    """``accepted``: stored; ``duplicate``: a redelivery, nothing more happens; ``ignored``: a
    topic this service does not act on, or a shop that uninstalled the app."""

    status: Literal["accepted", "duplicate", "ignored"]


class ShopifyWebhookController(Controller):
    path = PATH
    tags = ["webhooks"]
    security = SHOPIFY_SECURITY

    @post(
        "/",
        status_code=200,
        summary="Shopify webhook receiver",
        request_max_body_size=limits.MAX_WEBHOOK_BODY,
        **operation(
            "receiveShopifyWebhook",
            "Called by Shopify, not by people: verifies `X-Shopify-Hmac-Sha256` over the raw "
            "body, stores the delivery durably and answers; the work runs in workers. Topics "
            f"acted on: {', '.join(f'`{t}`' for t in sorted(HANDLED_TOPICS))}; any other topic "
            "is answered `ignored`. A redelivery (same `X-Shopify-Webhook-Id`) answers "
            "`duplicate` and changes nothing.",
            api="webhook",
            method="POST",
            invalid="A missing Shopify header, a malformed shop domain, or a body that is not "
            "a UTF-8 JSON object.",
            not_found="The shop is not a merchant of this service (Shopify retries, so orders "
            "of a shop onboarded late are not lost).",
            body=json_object_body(
                "The topic's JSON payload as Shopify sends it (for `orders/*`, the Order "
                "resource of the Admin API version set in `DROPSHIP_SHOPIFY_API_VERSION`)."
            ),
            parameters=[
                header("X-Shopify-Topic", "The webhook topic, e.g. `orders/create`."),
                header("X-Shopify-Webhook-Id", "Unique per delivery: redeliveries repeat it."),
                header("X-Shopify-Shop-Domain", "The shop, `<name>.myshopify.com`."),
                header(
                    "X-Shopify-Event-Id",
                    "The event: several deliveries of one event are stored once.",
                    required=False,
                ),
            ],
            extra_responses={
                200: ResponseSpec(
                    WebhookAck, description="Stored, or not needed", generate_examples=False
                ),
                401: error_response("`X-Shopify-Hmac-Sha256` missing or not matching the body."),
                503: error_response(
                    "Not configured (`DROPSHIP_SHOPIFY_API_SECRET` unset), or the delivery could "
                    "not be stored now: Shopify retries (see `Retry-After`)."
                ),
            },
        ),
    )
    async def receive(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Verified with ``X-Shopify-Hmac-Sha256``; a redelivery answers 200 and changes nothing.
        Answers ``{"status": "accepted" | "duplicate" | "ignored"}``."""
        services: Services = request.app.state.services
        try:
            raw = await request.body()
        except RequestEntityTooLarge:
            reply = _observe(_TOO_LARGE, request.headers, time.perf_counter())
        else:
            reply = await receive_shopify(services, request.headers, request.scope["path"], raw)
        return Response(
            reply.body,
            status_code=reply.status,
            media_type="application/json",
            headers=_headers_of(reply),
        )


def _declared_length(scope: Any) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:  # the server has refused it already; never trust it here
                return None
    return None


async def _read_bounded(receive: Any, limit: int) -> bytes | None:
    """The body, or None once it grows past ``limit`` (what was read so far is dropped; the
    server discards the rest). Raises ``ConnectionError`` if the client left."""
    chunks = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def shopify_fast_path(app: ASGIApp, services: Services) -> ASGIApp:
    """Serve ``POST /webhooks/shopify`` directly; everything else (and lifespan) goes to ``app``."""

    async def webhook(scope: Any, receive: Any, send: Any) -> None:
        declared = _declared_length(scope)
        if declared is not None and declared > limits.MAX_WEBHOOK_BODY:
            reply = _TOO_LARGE  # answered without reading a byte of it
            _observe(reply, {}, time.perf_counter())
        else:
            try:
                raw = await _read_bounded(receive, limits.MAX_WEBHOOK_BODY)
            except ConnectionError:
                return
            if raw is None:
                reply = _observe(_TOO_LARGE, {}, time.perf_counter())
            else:
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                reply = await receive_shopify(services, headers, PATH, raw)
        out = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(reply.body)).encode()),
        ]
        if reply.retry_after:
            out.append((b"retry-after", str(reply.retry_after).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": out})
        await send({"type": "http.response.body", "body": reply.body})

    # The webhook skips Litestar, so it takes the request id (log lines, answer) here.
    webhook_with_id = request_id_middleware(webhook)

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        await webhook_with_id(scope, receive, send)

    return asgi
