"""The best simple design, as the ingest benchmark's baseline: a bare ASGI handler that verifies
the Shopify HMAC and does one durable asyncpg ``INSERT … ON CONFLICT DO NOTHING`` per request.

No framework, no ORM, no batching, no outbox row: what a careful engineer would write in an
afternoon. The pool is sized for the box (2 connections per core, so every core has a commit in
flight while another is parsed). It stands in front of the shipped app on ``POST
/bench/baseline`` (bench/server.py), so both run in the same server processes and are measured
side by side. Bench-only code: not a replacement for app/webhooks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app.db import uuid7
from app.merchants.service import normalize_shop_domain

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]

PATH = "/bench/baseline"
INSERT = (
    "INSERT INTO webhook_deliveries (id, source, merchant_id, topic, webhook_id, event_id,"
    " payload, received_at) VALUES ($1, 'shopify', $2, $3, $4, $5, $6, now())"
    " ON CONFLICT DO NOTHING RETURNING id"
)
_ACCEPTED = b'{"status":"accepted"}'
_DUPLICATE = b'{"status":"duplicate"}'


class Baseline:
    def __init__(self, database_url: str, secret: str) -> None:
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.secret = secret.encode()
        self.pool: Any = None
        self.shops: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def _ready(self) -> Any:
        if self.pool is None:
            async with self._lock:
                if self.pool is None:
                    import asyncpg

                    size = 2 * (os.cpu_count() or 1)
                    pool = await asyncpg.create_pool(self.dsn, min_size=size, max_size=size)
                    rows = await pool.fetch("SELECT id, shop_domain FROM merchants")
                    self.shops = {r["shop_domain"]: r["id"] for r in rows}
                    self.pool = pool
        return self.pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        digest = base64.b64encode(hmac.new(self.secret, raw, hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(digest, headers.get("x-shopify-hmac-sha256", "")):
            return await _answer(send, 401, b'{"detail":"bad hmac"}')
        try:
            if not isinstance(json.loads(raw), dict):
                raise ValueError
        except ValueError:
            return await _answer(send, 400, b'{"detail":"body must be a JSON object"}')
        pool = await self._ready()
        merchant = self.shops.get(normalize_shop_domain(headers.get("x-shopify-shop-domain", "")))
        if merchant is None:
            return await _answer(send, 404, b'{"detail":"unknown shop"}')
        stored = await pool.fetchval(
            INSERT,
            uuid7(),
            merchant,
            headers.get("x-shopify-topic", ""),
            headers.get("x-shopify-webhook-id", ""),
            headers.get("x-shopify-event-id") or None,
            raw.decode("utf-8"),
        )
        await _answer(send, 200, _ACCEPTED if stored is not None else _DUPLICATE)


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def in_front(app: ASGI, baseline: Baseline) -> ASGI:
    """``app`` with ``POST /bench/baseline`` answered by ``baseline`` before it."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            await baseline(scope, receive, send)
        else:
            await app(scope, receive, send)

    return asgi
