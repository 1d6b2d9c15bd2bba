"""Merchant API of returns: request per line, list, one, approve, reject, receive."""

from __future__ import annotations

import uuid

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody

from app.api.deps import provide_merchant
from app.api.openapi import MERCHANT_SECURITY, operation
from app.api.pagination import DEFAULT_LIMIT, Page, check_limit
from app.db import DbSession
from app.merchants.models import Merchant
from app.returns import service
from app.returns.schemas import (
    ReceiveReturnIn,
    RejectReturnIn,
    ReturnOut,
    ReturnRequestIn,
    ReturnsCreated,
)

_NOT_FOUND = "No return with this id in your store."
_STEP = "the return's state does not allow this step (e.g. already received or rejected)"


class ReturnController(Controller):
    path = "/api/v1"
    tags = ["returns"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @post(
        "/orders/{order_id:uuid}/returns",
        status_code=201,
        summary="Request a return of shipped lines (one return per supplier)",
        **operation(
            "createReturn",
            "Request a return of order lines (`line_id`, `quantity`) with the reason, "
            "optionally as an exchange for another SKU or variant (one line). Never more than "
            "shipped minus what other returns take back. One return per purchase order "
            "(supplier); approved at once when your `returns.auto_approve` says so.",
            api="merchant",
            method="POST",
            not_found="No order with this id in your store.",
            conflict="more than can be returned (not shipped, or already being returned)",
        ),
    )
    async def create(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        order_id: FromPath[uuid.UUID],
        data: JSONBody[ReturnRequestIn],
    ) -> ReturnsCreated:
        exchange = None
        if data.exchange is not None:
            variant = data.exchange.variant_id
            exchange = service.ExchangeChoice(
                sku=data.exchange.sku, variant_id=int(variant) if variant is not None else None
            )
        created = await service.request_return(
            db_session,
            merchant,
            order_id,
            [(ln.line_id, ln.quantity) for ln in data.lines],
            data.reason,
            exchange,
        )
        return ReturnsCreated([ReturnOut.of(r) for r in created])

    @get(
        "/returns",
        summary="Returns (newest first, cursor-paginated)",
        **operation(
            "listReturns",
            "Your returns, newest first, by `status` and `order_id`.",
            api="merchant",
        ),
    )
    async def list_returns(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        status: FromQuery[str | None] = None,
        order_id: FromQuery[uuid.UUID | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[ReturnOut]:
        check_limit(limit)
        page = await service.page_for_merchant(
            db_session, merchant.id, status=status, order_id=order_id, cursor=cursor, limit=limit
        )
        return page.map(ReturnOut.of)

    @get(
        "/returns/{return_id:uuid}",
        summary="One return",
        **operation(
            "getReturn",
            "One return with its lines, status, the instructions the customer got (address, "
            "label) and its condition once received.",
            api="merchant",
            invalid=None,
            not_found=_NOT_FOUND,
        ),
    )
    async def get_one(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        return_id: FromPath[uuid.UUID],
    ) -> ReturnOut:
        return ReturnOut.of(await service.get_for_merchant(db_session, merchant.id, return_id))

    @post(
        "/returns/{return_id:uuid}/approve",
        status_code=200,
        summary="Approve a requested return",
        **operation(
            "approveReturn",
            "Approve a requested return: the supplier is told, and the customer gets its "
            "address or label, else your return address and instructions.",
            api="merchant",
            method="POST",
            not_found=_NOT_FOUND,
            conflict=_STEP,
        ),
    )
    async def approve(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        return_id: FromPath[uuid.UUID],
    ) -> ReturnOut:
        return ReturnOut.of(await service.approve(db_session, merchant.id, return_id))

    @post(
        "/returns/{return_id:uuid}/reject",
        status_code=200,
        summary="Reject a requested return, with the reason",
        **operation(
            "rejectReturn",
            "Reject a requested return with the reason (the customer is told).",
            api="merchant",
            method="POST",
            not_found=_NOT_FOUND,
            conflict=_STEP,
        ),
    )
    async def reject(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        return_id: FromPath[uuid.UUID],
        data: JSONBody[RejectReturnIn],
    ) -> ReturnOut:
        return ReturnOut.of(await service.reject(db_session, merchant.id, return_id, data.reason))

    @post(
        "/returns/{return_id:uuid}/receive",
        status_code=200,
        summary="Mark an approved return received, with the item's condition",
        **operation(
            "receiveReturn",
            "Mark an approved return received: `resellable` puts the items back into the "
            "supplier's stock, `damaged` disposes of them. An exchange's replacement order is "
            "created now; otherwise the refund follows your `refunds` policy.",
            api="merchant",
            method="POST",
            not_found=_NOT_FOUND,
            conflict=_STEP,
        ),
    )
    async def receive(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        return_id: FromPath[uuid.UUID],
        data: JSONBody[ReceiveReturnIn],
    ) -> ReturnOut:
        ret = await service.receive_for_merchant(db_session, merchant.id, return_id, data.condition)
        return ReturnOut.of(ret)
