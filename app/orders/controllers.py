"""Merchant order API under ``/api/v1``. Thin: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotFoundException,
)
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from app.api.deps import provide_merchant
from app.api.openapi import MERCHANT_SECURITY, csv_body, operation
from app.api.pagination import DEFAULT_LIMIT, Page, check_limit
from app.csvfile import CsvFormatError
from app.db import DbSession
from app.inputs import check_datetime
from app.merchants.models import Merchant
from app.orders import service
from app.orders.csv_import import HEADER, REQUIRED_COLUMNS, import_orders
from app.orders.models import OrderStatus
from app.orders.schemas import (
    ImportReport,
    OrderDetail,
    OrderIn,
    OrderSummary,
)
from app.purchasing.schemas import OrderPurchaseOrder, SupplierLineOut
from app.purchasing.supplier_api import shipment_out
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
            raise ClientException(
                f"status: unknown value(s) {', '.join(bad)}; "
                f"one of {', '.join(OrderStatus.ALL)} (several separated by commas)",
                extra={"field": "status"},
            )
        for name, value in (("created_from", created_from), ("created_to", created_to)):
            try:
                check_datetime(name, value)
            except ValueError as exc:
                raise ClientException(str(exc), extra={"field": name}) from exc
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
        return OrderDetail.of(view.order, services.settings.public_url, _purchase_orders_out(view))

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
            raise HTTPException(
                status_code=409,
                detail=f"reference: an order with reference {data.reference!r} already exists",
                extra={"field": "reference", "order_id": str(intake.order.id)},
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
        text = await _csv_text(request)
        try:
            return await import_orders(db_session, merchant.id, text)
        except CsvFormatError as exc:
            raise ClientException(str(exc), extra={"field": exc.field}) from exc


_CSV_TYPES = ("text/csv", "text/plain", "application/csv", "application/vnd.ms-excel")


async def _csv_text(request: Request[Any, Any, Any]) -> str:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ClientException(
                "file: send the CSV as the multipart field 'file'", extra={"field": "file"}
            )
        raw = await upload.read()
    elif media_type in _CSV_TYPES:
        raw = await request.body()
    else:
        raise ClientException(
            f"Content-Type: send the CSV as a text/csv body or as multipart field 'file', "
            f"not {media_type or 'no content type'}",
            extra={"field": "Content-Type"},
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ClientException(
            f"file: not UTF-8 text (byte {exc.start}); export the CSV as UTF-8",
            extra={"field": "file"},
        ) from exc


def _purchase_orders_out(view: service.OrderView) -> list[OrderPurchaseOrder]:
    return [
        OrderPurchaseOrder(
            id=po.id,
            supplier_id=po.supplier_id,
            number=po.number,
            status=po.status,
            currency=po.currency,
            total_cost=po.total_cost,
            supplier_reference=po.supplier_reference,
            last_error=po.last_error,
            lines=[SupplierLineOut.of(ln) for ln in po.lines],
            shipments=[shipment_out(sh) for sh in view.shipments.get(po.id, [])],
        )
        for po in view.purchase_orders
    ]
