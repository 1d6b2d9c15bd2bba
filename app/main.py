"""The Litestar application factory: the API alone (``dropship.asgi`` adds the workers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import structlog
from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from app.api.deps import (
    ApiRequest,
    body_too_large,
    provide_services,
    provide_session,
    validation_error,
)
from app.api.errors import domain_error
from app.api.openapi import openapi_config, swagger_asset
from app.errors import DomainError
from app.exceptions.controllers import ExceptionController
from app.health.controllers import live, ready
from app.idempotency.middleware import idempotency_middleware
from app.logging import configure_logging, request_id_middleware, stamp_request_id
from app.migrate import check_schema
from app.orders.controllers import OrderController
from app.purchasing.controllers import PurchaseOrderController
from app.purchasing.supplier_api import SupplierApiController
from app.routing.controllers import RerouteController, RoutingController
from app.services import Services
from app.settings import Settings
from app.suppliers.controllers import SupplierController, SupplierProductController
from app.webhooks.controllers import ShopifyWebhookController

log = structlog.get_logger(__name__)

#: Largest request body any endpoint reads (bytes); larger ones get a 413 before being buffered.
MAX_REQUEST_BODY = 8 * 1024 * 1024


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    log.exception("request.failed", path=request.url.path, error=repr(exc))
    return Response(
        {"status_code": 500, "detail": "internal server error", "extra": {}}, status_code=500
    )


#: A lifespan added to the API's: entered once the API is up (schema checked, ingest writer
#: started), left before it shuts down.
Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]


def create_app(
    settings: Settings | None = None,
    *,
    lifespans: Sequence[Lifespan] = (),
    check_migrations: bool = True,
    configure_logs: bool = True,
) -> Litestar:
    """Build the API; ``lifespans`` run inside its own (e.g. the in-process workers)."""
    settings = settings or Settings()
    if configure_logs:
        configure_logging(settings)
    services = Services.build(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if check_migrations:
            await check_schema(settings.database_url)
        await services.ingest.start()
        try:
            yield
        finally:
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
        request_class=ApiRequest,
        # Answers that never reach the middleware (404, 405) still carry the request id.
        before_send=[stamp_request_id],
        # No endpoint buffers more than this (the webhook has its own, smaller, bound).
        request_max_body_size=MAX_REQUEST_BODY,
        lifespan=[lifespan, *lifespans],
        # ``workers``: the in-process workers when a lifespan runs them (the health check says).
        state=State({"services": services, "workers": None}),
        exception_handlers={
            Exception: _internal_error,
            HTTPException: _http_error,
            DomainError: domain_error,
            RequestEntityTooLarge: _too_large,
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


def _too_large(request: Request[Any, Any, Any], exc: RequestEntityTooLarge) -> Response[object]:
    limit = request.route_handler.resolve_request_max_body_size() or MAX_REQUEST_BODY
    return Response(body_too_large(limit), status_code=413)
