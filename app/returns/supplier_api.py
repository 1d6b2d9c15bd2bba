"""The supplier API of returns (``/supplier/v1/returns``): what comes back to the supplier, and
its receipt with the item's condition. Authenticated like the rest of the supplier API."""

from __future__ import annotations

import uuid

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody

from app.api.openapi import SUPPLIER_SECURITY, operation
from app.api.pagination import DEFAULT_LIMIT, Page, check_limit
from app.db import DbSession
from app.purchasing.supplier_api import provide_supplier
from app.returns import service
from app.returns.schemas import ReceiveReturnIn, SupplierReturnOut
from app.suppliers.models import Supplier


class SupplierReturnController(Controller):
    path = "/supplier/v1/returns"
    tags = ["supplier API"]
    security = SUPPLIER_SECURITY
    dependencies = {"supplier": Provide(provide_supplier)}

    @get(
        "/",
        summary="Returns coming to you (approved) and those you received",
        **operation(
            "supplierListReturns",
            "Returns of your purchase orders, oldest first: `status=approved` (on their way "
            "to you) or `received`; both without a status.",
            api="supplier",
        ),
    )
    async def list_returns(
        self,
        db_session: NamedDependency[DbSession],
        supplier: NamedDependency[Supplier],
        status: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[SupplierReturnOut]:
        check_limit(limit)
        page = await service.page_for_supplier(
            db_session, supplier.id, status, cursor=cursor, limit=limit
        )
        return page.map(SupplierReturnOut.of)

    @post(
        "/{return_id:uuid}/receive",
        status_code=200,
        summary="Mark a return received, with the item's condition",
        **operation(
            "supplierReceiveReturn",
            "The items of a return arrived: `resellable` (back into your stock, counted in "
            "your catalog) or `damaged` (disposed of).",
            api="supplier",
            method="POST",
            not_found="No return with this id coming to you.",
            conflict="the return was received already",
        ),
    )
    async def receive(
        self,
        db_session: NamedDependency[DbSession],
        supplier: NamedDependency[Supplier],
        return_id: FromPath[uuid.UUID],
        data: JSONBody[ReceiveReturnIn],
    ) -> SupplierReturnOut:
        ret = await service.receive_for_supplier(db_session, supplier.id, return_id, data.condition)
        return SupplierReturnOut.of(ret)
