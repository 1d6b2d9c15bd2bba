"""Merchant order API under ``/api/v1``. Thin: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ClientException, HTTPException, NotFoundException
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import provide_merchant
from app.api.pagination import DEFAULT_LIMIT, Page, check_limit, decode_cursor, encode_cursor
from app.merchants.models import Merchant
from app.orders.csv_import import CsvFormatError, import_orders
from app.orders.models import ExceptionCase, Order, OrderStatus
from app.orders.schemas import (
    ExceptionOut,
    ImportReport,
    OrderDetail,
    OrderIn,
    OrderSummary,
)
from app.orders.service import create_order, get_order
from app.services import Services


class OrderController(Controller):
    path = "/api/v1/orders"
    tags = ["orders"]
    dependencies = {"merchant": Provide(provide_merchant)}

    @get("/", summary="List orders (newest first, cursor-paginated)")
    async def list_orders(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        status: Annotated[
            str | None, QueryParameter(description="one status, or several separated by commas")
        ] = None,
        created_from: Annotated[
            datetime | None, QueryParameter(description="ISO 8601, inclusive")
        ] = None,
        created_to: Annotated[
            datetime | None, QueryParameter(description="ISO 8601, exclusive")
        ] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[OrderSummary]:
        check_limit(limit)
        query = select(Order).where(Order.merchant_id == merchant.id)
        if status:
            wanted = [s.strip() for s in status.split(",") if s.strip()]
            bad = [s for s in wanted if s not in OrderStatus.ALL]
            if bad:
                raise ClientException(
                    f"status: unknown value(s) {', '.join(bad)}; "
                    f"one of {', '.join(OrderStatus.ALL)}"
                )
            query = query.where(Order.status.in_(wanted))
        for name, value in (("created_from", created_from), ("created_to", created_to)):
            if value is not None and value.tzinfo is None:
                raise ClientException(f"{name}: include a UTC offset, e.g. 2026-01-31T00:00:00Z")
        if created_from is not None:
            query = query.where(Order.created_at >= created_from)
        if created_to is not None:
            query = query.where(Order.created_at < created_to)
        if cursor:
            at, last_id = decode_cursor(cursor)
            query = query.where(
                or_(Order.created_at < at, and_(Order.created_at == at, Order.id < last_id))
            )
        rows = list(
            (
                await db_session.scalars(
                    query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
                )
            ).all()
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            items=[OrderSummary.of(o) for o in rows],
            next_cursor=encode_cursor(rows[-1].created_at, rows[-1].id) if more else None,
        )

    @get("/{order_id:uuid}", summary="One order with lines and timeline")
    async def get_one(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        order_id: FromPath[uuid.UUID],
    ) -> OrderDetail:
        order = await get_order(db_session, merchant.id, order_id)
        if order is None:
            raise NotFoundException(f"order {order_id} not found")
        return OrderDetail.of(order, services.settings.public_url)

    @post("/", status_code=201, summary="Enter an order by hand (validated like Shopify orders)")
    async def create(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        data: JSONBody[OrderIn],
    ) -> OrderDetail:
        intake = await create_order(db_session, merchant.id, data.to_draft())
        if not intake.created:
            raise HTTPException(
                status_code=409,
                detail=f"reference: an order with reference {data.reference!r} already exists",
                extra={"order_id": str(intake.order.id)},
            )
        await db_session.flush()
        order = await get_order(db_session, merchant.id, intake.order.id)
        assert order is not None
        return OrderDetail.of(order, services.settings.public_url)

    @post(
        "/import",
        status_code=200,
        summary="Import orders from CSV (text/csv body or multipart 'file'): per-row report",
    )
    async def import_csv(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
    ) -> ImportReport:
        text = await _csv_text(request)
        try:
            return await import_orders(db_session, merchant.id, text)
        except CsvFormatError as exc:
            raise ClientException(str(exc)) from exc


async def _csv_text(request: Request[Any, Any, Any]) -> str:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ClientException("file: send the CSV as the multipart field 'file'")
        raw = await upload.read()
    elif content_type.startswith(("text/csv", "text/plain", "application/csv")):
        raw = await request.body()
    else:
        raise ClientException("send the CSV as a text/csv body or as multipart field 'file'")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ClientException("file: not UTF-8 text") from exc


class ExceptionController(Controller):
    path = "/api/v1/exceptions"
    tags = ["exceptions"]
    dependencies = {"merchant": Provide(provide_merchant)}

    @get("/", summary="The exceptions queue: everything that needs a person, with the reason")
    async def list_exceptions(
        self,
        db_session: NamedDependency[AsyncSession],
        merchant: NamedDependency[Merchant],
        include_resolved: FromQuery[bool] = False,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[ExceptionOut]:
        check_limit(limit)
        query = select(ExceptionCase).where(ExceptionCase.merchant_id == merchant.id)
        if not include_resolved:
            query = query.where(ExceptionCase.resolved_at.is_(None))
        if cursor:
            at, last_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    ExceptionCase.created_at < at,
                    and_(ExceptionCase.created_at == at, ExceptionCase.id < last_id),
                )
            )
        rows = list(
            (
                await db_session.scalars(
                    query.order_by(ExceptionCase.created_at.desc(), ExceptionCase.id.desc()).limit(
                        limit + 1
                    )
                )
            ).all()
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            items=[
                ExceptionOut(
                    id=c.id,
                    kind=c.kind,
                    reason=c.reason,
                    order_id=c.order_id,
                    created_at=c.created_at,
                    resolved_at=c.resolved_at,
                    data=c.data,
                )
                for c in rows
            ],
            next_cursor=encode_cursor(rows[-1].created_at, rows[-1].id) if more else None,
        )
