"""Merchant order API under ``/api/v1``. Thin: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import (
    NotFoundException,
)
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from app.api.deps import provide_merchant
from app.api.openapi import MERCHANT_SECURITY, csv_body, operation
from app.api.pagination import DEFAULT_LIMIT, Page, check_limit
from app.api.uploads import csv_text
from app.db import DbSession
from app.errors import Conflict, InvalidInput
from app.inputs import check_datetime
from app.merchants.models import Merchant
from app.orders import service
from app.orders.csv_import import HEADER, REQUIRED_COLUMNS, import_orders
from app.orders.models import OrderStatus
from app.orders.schemas import (
    ImportReport,
    OrderDetail,
    OrderIn,
    OrderRefund,
    OrderSummary,
)
from app.purchasing.schemas import OrderPurchaseOrder
from app.services import Services


class OrderController(Controller):
    path = "/api/v1/orders"
    tags = ["orders"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/",
        summary="List orders (newest first, cursor-paginated)",
        **operation(
            "listOrders",
            "Your orders, newest first, filtered by status (several separated by commas) and "
            "by creation time; follow `next_cursor` for the next page.",
            api="merchant",
        ),
    )
    async def list_orders(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        status: Annotated[
            str | None, QueryParameter(description="one status, or several separated by commas")
        ] = None,
        created_from: Annotated[
            datetime | None,
            QueryParameter(description="ISO 8601 with a UTC offset, inclusive"),
        ] = None,
        created_to: Annotated[
            datetime | None,
            QueryParameter(description="ISO 8601 with a UTC offset, exclusive"),
        ] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[OrderSummary]:
        check_limit(limit)
        # An empty value (``?status=``) is no filter, never "no status matches".
        wanted = [s.strip() for s in (status or "").split(",") if s.strip()]
        bad = [s for s in wanted if s not in OrderStatus.ALL]
        if bad:
            raise InvalidInput(
                f"unknown value(s) {', '.join(bad)}; "
                f"one of {', '.join(OrderStatus.ALL)} (several separated by commas)",
                field="status",
            )
        for name, value in (("created_from", created_from), ("created_to", created_to)):
            try:
                check_datetime(name, value)
            except ValueError as exc:
                raise InvalidInput(str(exc).removeprefix(f"{name}: "), field=name) from exc
        page = await service.list_orders(
            db_session,
            merchant.id,
            statuses=wanted,
            created_from=created_from,
            created_to=created_to,
            cursor=cursor,
            limit=limit,
        )
        return page.map(OrderSummary.of)

    @get(
        "/{order_id:uuid}",
        summary="One order with lines and timeline",
        **operation(
            "getOrder",
            "One order with its lines, totals, addresses, tracking link and timeline, and the "
            "purchase orders sent to suppliers with their shipments.",
            api="merchant",
            invalid=None,  # a path id only: a malformed one is a 404
            not_found="No order with this id in your store.",
        ),
    )
    async def get_one(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        order_id: FromPath[uuid.UUID],
    ) -> OrderDetail:
        view = await service.order_view(db_session, merchant.id, order_id)
        if view is None:
            raise NotFoundException(f"order {order_id} not found")
        return OrderDetail.of(
            view.order,
            services.settings.public_url,
            _purchase_orders_out(view),
            [OrderRefund.of(r) for r in view.refunds],
        )

    @post(
        "/",
        status_code=201,
        summary="Enter an order by hand (validated like Shopify orders)",
        **operation(
            "createOrder",
            "Enter an order by hand (phone or email sales): it is validated like a Shopify "
            "order and then routed. `reference` is unique in your store.",
            api="merchant",
            method="POST",
            conflict="an order with this `reference` already exists (`extra.order_id` is it)",
        ),
    )
    async def create(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        data: JSONBody[OrderIn],
    ) -> OrderDetail:
        intake = await service.enter_order(db_session, merchant.id, data.to_draft())
        if not intake.created:
            raise Conflict(
                f"an order with reference {data.reference!r} already exists",
                field="reference",
                order_id=str(intake.order.id),
            )
        return OrderDetail.of(intake.order, services.settings.public_url)

    @post(
        "/import",
        status_code=200,
        summary="Import orders from CSV (text/csv body or multipart 'file'): per-row report",
        **operation(
            "importOrders",
            "Import orders from a CSV file, one row per order line, rows grouped into orders by "
            "`reference`. Answers a report for every row (created, duplicate or rejected with "
            "the reason); a file that cannot be read at all is a 400.",
            api="merchant",
            method="POST",
            body=csv_body(HEADER, REQUIRED_COLUMNS, "Orders as"),
        ),
    )
    async def import_csv(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
    ) -> ImportReport:
        # Authentication opened the request's transaction (on SQLite: the database's write
        # lock); end it before the upload is read, which may take a while.
        await db_session.commit()
        text = await csv_text(request)
        return await import_orders(db_session, merchant.id, text)


def _purchase_orders_out(view: service.OrderView) -> list[OrderPurchaseOrder]:
    return [OrderPurchaseOrder.of(po, view.shipments.get(po.id, [])) for po in view.purchase_orders]
