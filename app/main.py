"""The Litestar application factory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ASGIApp

from app.api.deps import provide_services, provide_session, validation_error
from app.api.openapi import openapi_config, swagger_asset
from app.health.controllers import live, ready
from app.idempotency.middleware import idempotency_middleware
from app.logging import configure_logging
from app.migrate import check_schema
from app.orders.controllers import ExceptionController, OrderController
from app.purchasing.supplier_api import SupplierApiController
from app.routing.controllers import PurchaseOrderController, RerouteController, RoutingController
from app.services import Services
from app.settings import Settings
from app.suppliers.controllers import SupplierController, SupplierProductController
from app.webhooks.controllers import ShopifyWebhookController

log = structlog.get_logger(__name__)


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Bind a request id (the caller's ``X-Request-Id`` or a new one) to every log line."""

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_id = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")[:64]
                break
        request_id = request_id or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")

    return middleware


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    log.exception("request.failed", path=request.url.path, error=repr(exc))
    return Response(
        {"status_code": 500, "detail": "internal server error", "extra": {}}, status_code=500
    )


def create_app(
    settings: Settings | None = None,
    *,
    run_workers: bool | None = None,
    check_migrations: bool = True,
    configure_logs: bool = True,
) -> Litestar:
    """Build the API. ``run_workers`` defaults to "yes when there is no Redis" (embedded mode)."""
    settings = settings or Settings()
    if configure_logs:
        configure_logging(settings)
    services = Services.build(settings)
    with_workers = settings.embedded_broker if run_workers is None else run_workers

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if check_migrations:
            await check_schema(settings.database_url)
        await services.ingest.start()
        runtime = None
        if with_workers:
            from workers.runtime import WorkerRuntime

            runtime = WorkerRuntime(settings, services.db)
            await runtime.start()
        app.state.workers = runtime
        try:
            yield
        finally:
            if runtime is not None:
                await runtime.stop()
            await services.ingest.stop()
            await services.db.dispose()

    return Litestar(
        route_handlers=[
            live,
            ready,
            ShopifyWebhookController,
            OrderController,
            ExceptionController,
            RerouteController,
            SupplierController,
            SupplierProductController,
            RoutingController,
            PurchaseOrderController,
            SupplierApiController,
            swagger_asset,
        ],
        dependencies={
            "db_session": Provide(provide_session),
            "services": Provide(provide_services),
        },
        middleware=[request_id_middleware, idempotency_middleware],
        lifespan=[lifespan],
        state=State({"services": services, "workers": None}),
        exception_handlers={
            Exception: _internal_error,
            HTTPException: _http_error,
            # Every endpoint names the offending field in ``detail`` (see the function).
            ValidationException: validation_error,
        },
        # /schema is Swagger UI served from our own routes (works offline), see app.api.openapi.
        openapi_config=openapi_config(),
        debug=False,
        logging_config=None,  # app.logging owns logging (structlog, JSON in production)
    )


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[object]:
    return Response(
        {"status_code": exc.status_code, "detail": exc.detail, "extra": exc.extra or {}},
        status_code=exc.status_code,
        headers=exc.headers,
    )
