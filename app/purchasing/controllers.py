"""Merchant API: the purchase orders sent to suppliers, and the dead-letter view."""

from __future__ import annotations

import uuid

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery

from app.api.deps import provide_merchant
from app.api.openapi import MERCHANT_SECURITY, operation
from app.api.pagination import DEFAULT_LIMIT, Page
from app.db import DbSession
from app.merchants.models import Merchant
from app.purchasing import service
from app.purchasing.schemas import PurchaseOrderOut


class PurchaseOrderController(Controller):
    path = "/api/v1/purchase-orders"
    tags = ["purchase orders"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/",
        summary="Purchase orders; dead_letter=true lists those that exhausted retries",
        **operation(
            "listPurchaseOrders",
            "The purchase orders sent to your suppliers, newest first, by status, order or "
            "supplier; `dead_letter=true` lists those whose placement gave up after its retries.",
            api="merchant",
        ),
    )
    async def list_pos(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        status: FromQuery[str | None] = None,
        order_id: FromQuery[uuid.UUID | None] = None,
        supplier_id: FromQuery[uuid.UUID | None] = None,
        dead_letter: FromQuery[bool] = False,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[PurchaseOrderOut]:
        page = await service.page_for_merchant(
            db_session,
            merchant.id,
            status=status,
            order_id=order_id,
            supplier_id=supplier_id,
            dead_letter=dead_letter,
            cursor=cursor,
            limit=limit,
        )
        return page.map(PurchaseOrderOut.of)

    @get(
        "/{po_id:uuid}",
        summary="One purchase order",
        **operation(
            "getPurchaseOrder",
            "One purchase order with its lines, placement attempts and last error.",
            api="merchant",
            invalid=None,  # a path id only: a malformed one is a 404
            not_found="No purchase order with this id in your store.",
        ),
    )
    async def get_one(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        po_id: FromPath[uuid.UUID],
    ) -> PurchaseOrderOut:
        po = await service.load_for_merchant(db_session, merchant.id, po_id)
        if po is None:
            raise NotFoundException(f"purchase order {po_id} not found")
        return PurchaseOrderOut.of(po)
