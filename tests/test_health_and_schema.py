from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]


async def test_live_and_ready(client: Client, backend: str) -> None:
    live = await client.get("/health/live")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    assert live.headers["x-request-id"]

    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == ("ok" if backend == "postgres" else "ok (in-process)")


async def test_request_id_is_echoed(client: Client) -> None:
    r = await client.get("/health/live", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


async def test_openapi_schema_lists_the_contract_paths(client: Client) -> None:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in ("/webhooks/shopify", "/api/v1/orders", "/api/v1/orders/import", "/health/ready"):
        assert path in paths, path


async def test_unknown_path_is_a_json_404(client: Client) -> None:
    r = await client.get("/api/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["status_code"] == 404
