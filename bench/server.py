"""The benchmark server: the production app plus two bench-only baseline routes.

``python -m bench.server --port N --processes P`` runs uvicorn exactly as ``dropship serve`` does
(factory, uvloop, httptools, access log off, ``log_config=None`` so the app's own logging setup
applies, proxy headers on), but with the factory below, which is ``create_app()`` plus:

* ``GET /bench/ping`` -> ``{"ok":true}``: the ceiling (routing, middlewares, no work).
* ``POST /bench/naive``: the naive design. It does the same checks as the real receiver, using
  ``shopifyapp``'s ``verify_webhook_req`` for the HMAC and the same cached shop lookup, then one ORM
  ``session.add(WebhookDelivery(...))`` + ``await session.commit()`` per request: one transaction,
  one durable commit per webhook, no batching, no outbox row. A redelivery hits the unique
  constraint and answers ``{"status":"duplicate"}``.

Both routes go through the same middleware stack (request id, idempotency) as the real endpoint.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import msgspec
from litestar import Litestar, Request, get, post
from litestar.exceptions import ClientException, NotAuthorizedException, NotFoundException
from litestar.response import Response
from sqlalchemy.exc import IntegrityError

from app.merchants.service import normalize_shop_domain
from app.services import Services
from app.webhooks.models import WebhookDelivery
from bench.baseline import Baseline, in_front
from dropship.asgi import create_app, serving

_PONG = b'{"ok":true}'
_ACCEPTED = b'{"status":"accepted"}'
_DUPLICATE = b'{"status":"duplicate"}'


@get("/bench/ping", include_in_schema=False)
async def ping() -> Response[bytes]:
    return Response(_PONG, media_type="application/json")


@post("/bench/naive", status_code=200, include_in_schema=False)
async def naive(request: Request[Any, Any, Any]) -> Response[bytes]:
    services: Services = request.app.state.services
    assert services.shopify is not None
    raw = await request.body()
    body = raw.decode("utf-8")
    headers = request.headers
    result = services.shopify.verify_webhook_req(
        {"method": "POST", "headers": dict(headers), "url": str(request.url), "body": body}
    )
    if not result.ok:
        raise NotAuthorizedException("X-Shopify-Hmac-Sha256 does not match the body")
    if not isinstance(msgspec.json.decode(raw), dict):
        raise ClientException("body must be a JSON object")
    shop = normalize_shop_domain(headers["x-shopify-shop-domain"])
    entry = await services.directory.lookup(shop)
    if entry is None:
        raise NotFoundException(f"shop {shop} is not a merchant of this service")
    async with services.db.sessionmaker() as session:
        session.add(
            WebhookDelivery(
                source="shopify",
                merchant_id=entry.merchant_id,
                topic=headers["x-shopify-topic"],
                webhook_id=headers["x-shopify-webhook-id"],
                event_id=headers.get("x-shopify-event-id") or None,
                payload=body,
            )
        )
        try:
            await session.commit()
        except IntegrityError:
            return Response(_DUPLICATE, media_type="application/json")
    return Response(_ACCEPTED, media_type="application/json")


def create() -> Litestar | Any:
    """``create_app()`` (settings from the environment, like production) + the bench routes.

    With ``BENCH_LEAN=1`` (``bench/ingest.py --lean``) also the experimental lean receiver of
    bench/lean.py, whose raw mount sits in front of the app.
    """
    app = create_app()
    app.register(ping)
    app.register(naive)
    if os.environ.get("BENCH_LEAN") == "1":
        from bench.lean import install

        return install(app)
    services: Services = app.state.services
    settings = services.settings
    baseline = Baseline(settings.database_url, settings.shopify_api_secret or "")
    # Exactly what `dropship serve` serves (dropship.asgi.create: the webhook fast path in
    # front of the app, the GIL switch interval), with the baseline in front of both.
    return in_front(serving(app), baseline)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    # The same arguments as dropship.cli.serve, plus log_level (the app logs through its own
    # config).
    uvicorn.run(
        "bench.server:create",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.processes,
        access_log=False,
        log_config=None,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
