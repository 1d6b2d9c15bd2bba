"""Hostile HTTP input: oversized bodies, malformed JSON, request ids on every answer."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import structlog
import structlog.testing
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.db import Database
from app.limits import MAX_REQUEST_BODY, MAX_WEBHOOK_BODY
from app.main import create_app
from app.models import Base
from app.settings import Settings
from app.webhooks.controllers import shopify_fast_path
from app.webhooks.models import WebhookDelivery
from tests.conftest import SHOPIFY_SECRET, MerchantHandle
from tests.support import services as svc
from tests.support.processes import dropship_env, start_dropship
from tests.support.routing import create_supplier
from tests.support.shopify import order_payload, webhook_headers

Client = AsyncTestClient[Litestar]


@pytest.fixture
def app(settings: Settings) -> Litestar:
    """No workers: they consume the outbox, and these tests compare every table before/after."""
    return create_app(settings, configure_logs=False)


#: Bytes that are never UTF-8 inside a JSON string, JSON nested 10,000 deep, malformed JSON.
BAD_UTF8 = b'{"name": "\xff\xfe"}'
DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
BAD_BODIES = [
    (BAD_UTF8, "body: not valid UTF-8"),
    (DEEP, "body: nested too deeply"),
    (b'{"name": ', "body: not valid JSON: Input data was truncated"),
    (b"{bad", "body: not valid JSON: object keys must be strings (byte 1)"),
]


def json_body_routes(app: Litestar) -> list[tuple[str, str]]:
    """Every (method, path) of the app whose handler decodes a JSON ``data`` body."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            assert isinstance(handler, HTTPRouteHandler)
            if "data" not in handler.parsed_fn_signature.parameters:
                continue
            for method in handler.http_methods:
                found.append((method, route.path))
    return sorted(found)


def concrete(path: str) -> str:
    """A path template with each parameter replaced by a fresh id."""
    parts = []
    for part in path.split("/"):
        parts.append(str(uuid.uuid4()) if part.startswith("{") else part)
    return "/".join(parts)


async def row_counts(db: Database) -> dict[str, int]:
    async with db.sessionmaker() as session:
        return {
            table.name: int(await session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


class TestMalformedJson:
    async def test_every_json_endpoint_answers_400_naming_the_problem_and_writes_nothing(
        self, app: Litestar, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        supplier = await create_supplier(client, merchant, name="Acme", connector="portal")
        supplier_headers = {"Authorization": f"Bearer {supplier['api_key']}"}
        routes = json_body_routes(app)
        assert len(routes) >= 13
        before = await row_counts(db)
        for method, path in routes:
            headers = supplier_headers if path.startswith("/supplier/") else merchant.headers
            for body, detail in BAD_BODIES:
                r = await client.request(
                    method,
                    concrete(path),
                    content=body,
                    headers={**headers, "Content-Type": "application/json"},
                )
                assert r.status_code == 400, (method, path, r.status_code, r.text)
                assert r.json() == {
                    "status_code": 400,
                    "detail": detail,
                    "extra": {
                        "field": "body",
                        "errors": [
                            {
                                "field": "body",
                                "message": detail.removeprefix("body: "),
                                "source": "body",
                            }
                        ],
                    },
                }, (method, path)
        assert await row_counts(db) == before

    async def test_a_signed_webhook_nested_too_deeply_is_a_400_and_stores_nothing(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        r = await client.post(
            "/webhooks/shopify", content=DEEP, headers=webhook_headers(DEEP, secret=SHOPIFY_SECRET)
        )
        assert r.status_code == 400
        assert r.json() == {
            "status_code": 400,
            "detail": "body: nested too deeply",
            "extra": {"field": "body"},
        }
        assert (await row_counts(db))[WebhookDelivery.__tablename__] == 0

    async def test_the_fast_path_answers_the_same_json_not_a_plain_500(
        self, app: Litestar, merchant: MerchantHandle
    ) -> None:
        status, headers, body = await call_asgi(
            shopify_fast_path(app, app.state.services),
            webhook_headers(DEEP, secret=SHOPIFY_SECRET),
            [DEEP],
        )
        assert status == 400
        assert headers[b"content-type"] == b"application/json"
        assert json.loads(body)["detail"] == "body: nested too deeply"


async def call_asgi(
    asgi: Any, headers: dict[str, str], chunks: list[bytes], path: str = "/webhooks/shopify"
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One POST straight to an ASGI app, the body in ``chunks`` (as a server hands it over)."""
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    await asgi(scope, receive, send)
    start = sent[0]
    assert start["type"] == "http.response.start"
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


def too_large(limit: int) -> dict[str, Any]:
    return {
        "status_code": 413,
        "detail": f"body: larger than the limit of {limit} bytes",
        "extra": {"field": "body", "limit": limit},
    }


class TestBodyLimits:
    def test_the_limits(self) -> None:
        assert MAX_WEBHOOK_BODY == 4 * 1024 * 1024
        assert MAX_REQUEST_BODY == 8 * 1024 * 1024

    async def test_webhook_route_refuses_a_body_over_4_mib(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        body = b"{" + b" " * MAX_WEBHOOK_BODY + b"}"
        r = await client.post(
            "/webhooks/shopify", content=body, headers=webhook_headers(body, secret=SHOPIFY_SECRET)
        )
        assert r.status_code == 413
        assert r.json() == too_large(MAX_WEBHOOK_BODY)
        assert (await row_counts(db))[WebhookDelivery.__tablename__] == 0

    async def test_fast_path_refuses_a_declared_length_without_reading(
        self, app: Litestar, merchant: MerchantHandle
    ) -> None:
        headers = {"Content-Length": str(10 * 1024**3), **webhook_headers(b"", secret="x")}
        # Nothing to receive: a server that tried to read would get only a disconnect.
        status, _, body = await call_asgi(shopify_fast_path(app, app.state.services), headers, [])
        assert status == 413
        assert json.loads(body) == too_large(MAX_WEBHOOK_BODY)

    async def test_fast_path_refuses_a_chunked_body_once_it_crosses_the_limit(
        self, app: Litestar, merchant: MerchantHandle
    ) -> None:
        chunk = b" " * (1024 * 1024)
        chunks = [chunk] * 5
        status, _, body = await call_asgi(
            shopify_fast_path(app, app.state.services), webhook_headers(b"", secret="x"), chunks
        )
        assert status == 413
        assert json.loads(body) == too_large(MAX_WEBHOOK_BODY)

    async def test_every_other_endpoint_refuses_a_body_over_8_mib(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        before = await row_counts(db)
        body = b"[" + b" " * MAX_REQUEST_BODY + b"]"
        for extra in ({}, {"Idempotency-Key": "big-1"}):
            r = await client.put(
                "/api/v1/routing/settings",
                content=body,
                headers={**merchant.headers, "Content-Type": "application/json", **extra},
            )
            assert r.status_code == 413, extra
            assert r.json() == too_large(MAX_REQUEST_BODY), extra
            r = await client.post(
                "/api/v1/orders/import",
                content=body,
                headers={**merchant.headers, "Content-Type": "text/csv", **extra},
            )
            assert r.status_code == 413, extra
            assert r.json() == too_large(MAX_REQUEST_BODY), extra
        assert await row_counts(db) == before


@contextmanager
def peak_rss(pid: int) -> Iterator[dict[str, int]]:
    """Sample a process's resident memory every 5 ms; ``peak`` is the most seen."""
    proc = psutil.Process(pid)
    seen = {"start": proc.memory_info().rss, "peak": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen["peak"] = max(seen["peak"], proc.memory_info().rss)
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


async def _up(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/health/live")).status_code == 200
    except httpx.TransportError:
        return False


async def declared_but_never_sent(port: int, length: int) -> tuple[int, dict[str, Any]]:
    """Announce a huge body, send none of it, read the answer: only a server that answers
    without reading can reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = "".join(
            f"{k}: {v}\r\n" for k, v in webhook_headers(b"", secret=SHOPIFY_SECRET).items()
        )
        writer.write(
            f"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
            f"{head}\r\n".encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        headers = {}
        while (line := await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
        return int(status_line.split()[1]), json.loads(body)
    finally:
        writer.close()


class TestServerMemoryUnderOversizedBodies:
    async def test_memory_bounded_under_oversized_bodies(
        self, settings: Settings, merchant: MerchantHandle, tmp_path: Path
    ) -> None:
        """Four concurrent oversized webhooks to the real server: one announces 10 GiB, three
        stream 128 MiB each with no length. Each gets 413 and the server's memory stays put."""
        port = svc.free_port()
        proc = start_dropship(
            "serve", "--port", str(port), env=dropship_env(settings, tmp_path / "var")
        )
        streamed = 128 * 1024 * 1024
        chunk = b" " * (1024 * 1024)

        async def stream() -> AsyncIterator[bytes]:
            for _ in range(streamed // len(chunk)):
                yield chunk

        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                deadline = time.monotonic() + 60
                while not await _up(http):
                    assert time.monotonic() < deadline, "the server did not start"
                    await asyncio.sleep(0.1)
                # Warm up the webhook path so the baseline includes what it allocates anyway.
                body = json.dumps(order_payload()).encode()
                warm = await http.post(
                    "/webhooks/shopify",
                    content=body,
                    headers=webhook_headers(body, secret=SHOPIFY_SECRET),
                )
                assert warm.status_code == 200, warm.text

                async def chunked() -> tuple[int, dict[str, Any]]:
                    r = await http.post(
                        "/webhooks/shopify",
                        content=stream(),
                        headers=webhook_headers(b"", secret=SHOPIFY_SECRET),
                    )
                    return r.status_code, r.json()

                with peak_rss(proc.pid) as rss:
                    results = await asyncio.wait_for(
                        asyncio.gather(
                            declared_but_never_sent(port, 10 * 1024**3),
                            *(chunked() for _ in range(3)),
                        ),
                        timeout=120,
                    )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert results == [(413, too_large(MAX_WEBHOOK_BODY))] * 4
        grown = rss["peak"] - rss["start"]
        assert grown < 64 * 1024 * 1024, f"the server grew by {grown / 2**20:.0f} MiB"


@contextmanager
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event, with the context-bound fields the app's configuration merges in."""
    old = structlog.get_config()
    capture = structlog.testing.LogCapture()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, capture],
        cache_logger_on_first_use=False,
    )
    try:
        yield capture.entries
    finally:
        structlog.configure(**old)


def ignored_topic(request_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    body = b'{"id": 1}'
    headers = webhook_headers(body, secret=SHOPIFY_SECRET, topic="products/create")
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return body, headers


class TestRequestIds:
    async def test_unknown_paths_and_methods_carry_the_callers_id(self, client: Client) -> None:
        for method, path, status in (
            ("GET", "/no/such/path", 404),
            ("DELETE", "/health/live", 405),
            ("GET", "/api/v1/orders", 401),
        ):
            r = await client.request(method, path, headers={"X-Request-Id": "abc-123"})
            assert r.status_code == status
            assert r.headers["x-request-id"] == "abc-123"
            assert r.headers.get_list("x-request-id") == ["abc-123"]
            assert r.json()["status_code"] == status
            fresh = await client.request(method, path)
            assert len(fresh.headers["x-request-id"]) == 32
            assert int(fresh.headers["x-request-id"], 16) >= 0

    async def test_a_callers_id_is_bounded_and_sanitised(self, client: Client) -> None:
        r = await client.get(
            "/health/live", headers={"X-Request-Id": 'evil id"; x=<y>' + "z" * 500}
        )
        assert r.headers["x-request-id"] == "evilidx=y" + "z" * 55
        empty = await client.get("/health/live", headers={"X-Request-Id": "<>"})
        assert len(empty.headers["x-request-id"]) == 32  # nothing usable left: a new one

    async def test_log_lines_of_a_request_carry_its_id(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        body, headers = ignored_topic("req-42")
        with captured_logs() as logs:
            r = await client.post("/webhooks/shopify", content=body, headers=headers)
            body, headers = ignored_topic()
            fresh = await client.post("/webhooks/shopify", content=body, headers=headers)
        assert r.json() == {"status": "ignored"}
        assert r.headers["x-request-id"] == "req-42"
        lines = [e for e in logs if e["event"] == "webhook.topic_ignored"]
        assert [e["request_id"] for e in lines] == ["req-42", fresh.headers["x-request-id"]]

    async def test_the_webhook_fast_path_logs_and_answers_with_the_id(
        self, app: Litestar, merchant: MerchantHandle
    ) -> None:
        fast = shopify_fast_path(app, app.state.services)
        body, headers = ignored_topic("fast-7")
        with captured_logs() as logs:
            status, answer, _ = await call_asgi(fast, headers, [body])
            body, headers = ignored_topic()
            _, fresh, _ = await call_asgi(fast, headers, [body])
        assert status == 200
        assert answer[b"x-request-id"] == b"fast-7"
        lines = [e for e in logs if e["event"] == "webhook.topic_ignored"]
        assert [e["request_id"] for e in lines] == ["fast-7", fresh[b"x-request-id"].decode()]
        assert len(fresh[b"x-request-id"]) == 32
        assert structlog.contextvars.get_contextvars().get("request_id") is None
