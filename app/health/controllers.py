from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, get
from litestar.openapi import ResponseSpec
from litestar.response import Response

from app.api.openapi import operation
from app.services import Services


class Readiness(msgspec.Struct):
    """``status``: ``ok`` or ``unavailable``; ``checks``: each dependency's state."""

    status: str
    checks: dict[str, str]


@get(
    "/health/live",
    tags=["health"],
    summary="The process is up",
    **operation(
        "healthLive",
        "Liveness: answers 200 while the process serves requests. No credentials.",
        api="public",
        invalid=None,
    ),
)
async def live() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/health/ready",
    tags=["health"],
    summary="Database and broker reachable",
    **operation(
        "healthReady",
        "Readiness: 200 when the database and the broker answer within 2 seconds, else 503; "
        "`checks` says which one failed. No credentials.",
        api="public",
        invalid=None,
        extra_responses={
            200: ResponseSpec(Readiness, description="Ready", generate_examples=False),
            503: ResponseSpec(
                Readiness, description="A dependency is unreachable", generate_examples=False
            ),
        },
    ),
)
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    services: Services = request.app.state.services
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            await services.db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if services.settings.redis_url:
        from redis.asyncio import Redis

        client = Redis.from_url(services.settings.redis_url, socket_timeout=2)
        try:
            await client.ping()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
        finally:
            await client.aclose()
    else:
        runtime = getattr(request.app.state, "workers", None)
        checks["broker"] = "ok (in-process)" if runtime is not None else "no workers in process"
    ok = all(v.startswith("ok") for v in checks.values())
    return Response(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )
