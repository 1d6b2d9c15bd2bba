"""Merchant API: credits expected from suppliers (``/api/v1/supplier-credits``)."""

from __future__ import annotations

import uuid

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody

from app.api.deps import provide_merchant
from app.api.openapi import MERCHANT_SECURITY, operation
from app.api.pagination import DEFAULT_LIMIT
from app.credits import service
from app.credits.schemas import SettleIn, SupplierCreditOut, SupplierCreditsOut
from app.db import DbSession
from app.merchants.models import Merchant


class SupplierCreditController(Controller):
    path = "/api/v1/supplier-credits"
    tags = ["supplier credits"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/",
        summary="What each supplier owes you back, and the credits",
        **operation(
            "listSupplierCredits",
            "Credits expected from suppliers: the cost of purchase orders cancelled after they "
            "were placed (`kind: cancellation`) and of returned lines (`kind: return`). "
            "`totals`: per supplier and currency, what is still `expected` and what was "
            "`settled` (of the `supplier_id` asked for, if any); `items`: the credits, newest "
            "first, filtered by `status` (`expected`, `settled`) and `supplier_id`.",
            api="merchant",
        ),
    )
    async def list_credits(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        status: FromQuery[str | None] = None,
        supplier_id: FromQuery[uuid.UUID | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> SupplierCreditsOut:
        found = await service.list_credits(
            db_session,
            merchant.id,
            status=status,
            supplier_id=supplier_id,
            cursor=cursor,
            limit=limit,
        )
        return SupplierCreditsOut.of(found)

    @post(
        "/{credit_id:uuid}/settle",
        status_code=200,
        summary="Mark a supplier credit settled",
        **operation(
            "settleSupplierCredit",
            "The supplier paid or credited it: the credit is `settled` (with an optional "
            "`note`, appended to its own).",
            api="merchant",
            method="POST",
            not_found="No supplier credit with this id in your store.",
            conflict="the credit is settled already",
        ),
    )
    async def settle(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        credit_id: FromPath[uuid.UUID],
        data: JSONBody[SettleIn | None] = None,
    ) -> SupplierCreditOut:
        credit = await service.settle(
            db_session, merchant.id, credit_id, data.note if data else None
        )
        return SupplierCreditOut.of(credit)
