"""The Litestar application factory: the API alone (``dropship.asgi`` adds the workers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide

from app import limits
from app.aggregator.controllers import AfterShipWebhookController
from app.api.deps import (
    ApiRequest,
    provide_services,
    provide_session,
)
from app.api.errors import EXCEPTION_HANDLERS
from app.api.openapi import openapi_config, swagger_asset
from app.cancellations.controllers import CancellationController
from app.credits.controllers import SupplierCreditController
from app.exceptions.controllers import ExceptionController
from app.health.controllers import live, ready
from app.idempotency.middleware import idempotency_middleware
from app.logging import configure_logging, request_id_middleware, stamp_request_id
from app.merchants.controllers import SettingsController
from app.metrics.controllers import metrics
from app.migrate import check_schema
from app.notifications.controllers import NotificationTemplateController
from app.orders.controllers import OrderController
from app.outbound.controllers import WebhookEndpointController
from app.purchasing.controllers import PurchaseOrderController
from app.purchasing.supplier_api import SupplierApiController
from app.refunds.controllers import (
    OrderRefundController,
    RefundController,
    StripeWebhookController,
)
from app.returns.controllers import ReturnController
from app.returns.supplier_api import SupplierReturnController
from app.routing.controllers import RerouteController, RoutingController
from app.services import Services
from app.settings import Settings
from app.suppliers.controllers import SupplierController, SupplierProductController
from app.tracking_page.controllers import TrackingPageController
from app.webhooks.controllers import ShopifyWebhookController

log = structlog.get_logger(__name__)

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
            AfterShipWebhookController,
            StripeWebhookController,
            OrderController,
            OrderRefundController,
            RefundController,
            ExceptionController,
            RerouteController,
            CancellationController,
            SupplierCreditController,
            SupplierController,
            SupplierProductController,
            RoutingController,
            PurchaseOrderController,
            SettingsController,
            NotificationTemplateController,
            SupplierApiController,
            ReturnController,
            SupplierReturnController,
            TrackingPageController,
            WebhookEndpointController,
            swagger_asset,
            metrics,
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
        request_max_body_size=limits.MAX_REQUEST_BODY,
        lifespan=[lifespan, *lifespans],
        # ``workers``: the in-process workers when a lifespan runs them (the health check says).
        state=State({"services": services, "workers": None, "queue_depths": None}),
        # Every error, ours and Litestar's, in one shape (see the module).
        exception_handlers=EXCEPTION_HANDLERS,
        # /schema is Swagger UI served from our own routes (works offline), see app.api.openapi.
        openapi_config=openapi_config(),
        debug=False,
        logging_config=None,  # app.logging owns logging (structlog, JSON in production)
    )
