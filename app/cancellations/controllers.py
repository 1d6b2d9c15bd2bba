"""Merchant API: cancel an order, follow its cancellation, answer for a supplier."""

from __future__ import annotations

import uuid

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody

from app.api.deps import provide_merchant
from app.api.openapi import MERCHANT_SECURITY, operation
from app.cancellations import service
from app.cancellations.models import CancellationStatus
from app.cancellations.schemas import CancelIn, CancellationOut, POCancellationOut
from app.db import DbSession
from app.merchants.models import Merchant
from app.purchasing.schemas import CancellationAnswerIn

_ORDER_NOT_FOUND = "No order with this id in your store."


def answer(view: service.CancellationView) -> Response[CancellationOut]:
    """200 once the order is cancelled, 202 while suppliers are still being asked."""
    done = view.cancellation.status == CancellationStatus.CANCELLED
    return Response(CancellationOut.of(view), status_code=200 if done else 202)


class CancellationController(Controller):
    path = "/api/v1"
    tags = ["orders"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @post(
        "/orders/{order_id:uuid}/cancel",
        summary="Cancel an order: at once before routing, else at each supplier",
        **operation(
            "cancelOrder",
            "Cancel an order, with the `reason`. Not yet with a supplier: cancelled at once "
            "(200). Routed: every purchase order not yet shipped is cancelled at its supplier "
            "(through its connector; portal suppliers confirm in the supplier API; one that "
            "cannot be asked lands in the exceptions queue), what shipped becomes a return; "
            "the answer is the cancellation's state, 202 while suppliers are asked, 200 once "
            "the order is cancelled. Asking again while it runs answers its state.",
            api="merchant",
            method="POST",
            not_found=_ORDER_NOT_FOUND,
            conflict="the order is cancelled already, or nothing of it can be cancelled any "
            "more (every purchase order shipped)",
            extra_responses={
                200: ResponseSpec(CancellationOut, description="The order is cancelled."),
                202: ResponseSpec(
                    CancellationOut, description="Under way: suppliers are being asked."
                ),
            },
        ),
    )
    async def cancel(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        order_id: FromPath[uuid.UUID],
        data: JSONBody[CancelIn | None] = None,
    ) -> Response[CancellationOut]:
        view = await service.cancel_for_merchant(
            db_session, merchant.id, order_id, (data or CancelIn()).reason
        )
        return answer(view)

    @get(
        "/orders/{order_id:uuid}/cancellation",
        summary="An order's cancellation and where each supplier stands",
        **operation(
            "getOrderCancellation",
            "The cancellation of an order: who asked, why, its state, and per purchase order "
            "what was cancelled and what shipped.",
            api="merchant",
            invalid=None,
            not_found="No order with this id in your store, or it has no cancellation.",
        ),
    )
    async def get_cancellation(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        order_id: FromPath[uuid.UUID],
    ) -> CancellationOut:
        return CancellationOut.of(
            await service.merchant_cancellation(db_session, merchant.id, order_id)
        )

    @post(
        "/purchase-orders/{po_id:uuid}/cancellation",
        status_code=200,
        summary="Record a supplier's answer to a cancellation",
        **operation(
            "answerPurchaseOrderCancellation",
            "The supplier's answer to the cancellation of its purchase order, as you heard "
            "it (a supplier whose channel cannot cancel): `accepted: true` (it will not ship "
            "what is unshipped: stock is released) or `false` with the `reason` (it shipped: "
            "a return follows). The same answer twice is harmless.",
            api="merchant",
            method="POST",
            not_found="No purchase order with this id in your store.",
            conflict="no cancellation was asked for it, it was answered otherwise already, "
            "or it shipped (answer accepted=false)",
        ),
    )
    async def answer_for_supplier(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        po_id: FromPath[uuid.UUID],
        data: JSONBody[CancellationAnswerIn],
    ) -> POCancellationOut:
        row, po = await service.answer_for_merchant(
            db_session, merchant.id, po_id, data.accepted, data.reason
        )
        return POCancellationOut.of(row, po)
