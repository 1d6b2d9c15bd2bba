"""Merchant API: refunds (``POST /api/v1/orders/{id}/refunds``, ``GET /api/v1/refunds``), and
Stripe's webhook receiver (``POST /webhooks/stripe``)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Response

from app import limits
from app.api.deps import body_too_large, provide_merchant
from app.api.openapi import (
    MERCHANT_SECURITY,
    error_response,
    header,
    json_object_body,
    operation,
)
from app.api.pagination import DEFAULT_LIMIT, Page
from app.db import DbSession
from app.merchants.models import Merchant
from app.refunds import service
from app.refunds.schemas import RefundIn, RefundOut, StripeWebhookAck
from app.services import Services


class OrderRefundController(Controller):
    path = "/api/v1/orders"
    tags = ["refunds"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @post(
        "/{order_id:uuid}/refunds",
        status_code=201,
        summary="Refund the customer through Stripe: an amount, or lines and shipping",
        **operation(
            "createRefund",
            '`{"amount": "12.30"}`, or `{"lines": [{"line_id", "quantity"}], '
            '"shipping": true}`, with a `reason`. A line is refunded at its discounted price '
            "with its share of tax and order discounts; shipping once. Never more than the "
            "order's total minus what was refunded already (checked with the order locked, "
            "also against concurrent requests). The refund is sent to Stripe at once with an "
            "idempotency key of its own, so it is made once; it answers `requested` and "
            "follows Stripe's state.",
            api="merchant",
            method="POST",
            not_found="No such order of yours.",
            conflict="more than what is left to refund (`extra.remaining`), a line or the "
            "shipping refunded already, an order without a Stripe payment, or Stripe not "
            "connected",
        ),
    )
    async def create_refund(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        order_id: FromPath[uuid.UUID],
        data: JSONBody[RefundIn],
    ) -> RefundOut:
        refund = await service.create_refund(
            db_session,
            merchant.id,
            order_id,
            amount=data.amount,
            lines=[service.LineRequest(ln.line_id, ln.quantity) for ln in data.lines or []],
            shipping=data.shipping,
            reason=data.reason,
        )
        return RefundOut.of(refund)


class RefundController(Controller):
    path = "/api/v1/refunds"
    tags = ["refunds"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/",
        summary="Refunds, newest first",
        **operation(
            "listRefunds",
            "Your refunds, newest first; `order_id` and `status` (comma-separated: "
            "`requested`, `pending`, `requires_action`, `succeeded`, `failed`, `canceled`) "
            "filter them.",
            api="merchant",
        ),
    )
    async def list_refunds(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        order_id: FromQuery[uuid.UUID | None] = None,
        status: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[RefundOut]:
        statuses = [s.strip() for s in (status or "").split(",") if s.strip()]
        page = await service.list_refunds(
            db_session,
            merchant.id,
            order_id=order_id,
            statuses=statuses[: limits.MAX_LIST],
            cursor=cursor,
            limit=limit,
        )
        return page.map(RefundOut.of)

    @get(
        "/{refund_id:uuid}",
        summary="One refund",
        **operation(
            "getRefund",
            "One refund with its state at Stripe and, when it failed, Stripe's reason.",
            api="merchant",
            invalid=None,
            not_found="No such refund of yours.",
        ),
    )
    async def get_refund(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        refund_id: FromPath[uuid.UUID],
    ) -> RefundOut:
        return RefundOut.of(await service.get_refund(db_session, merchant.id, refund_id))


class StripeWebhookController(Controller):
    path = "/webhooks/stripe"
    tags = ["webhooks"]

    @post(
        "/",
        status_code=200,
        summary="Stripe webhook receiver",
        request_max_body_size=limits.MAX_WEBHOOK_BODY,
        **operation(
            "receiveStripeWebhook",
            "Called by Stripe, not by people: verifies `Stripe-Signature` (`t=…,v1=…`, any "
            "`v1` of a secret rotation, at most 5 minutes old) with "
            "`DROPSHIP_STRIPE_WEBHOOK_SECRET` (a comma-separated list during a rotation), "
            "stores the event once by its id and applies it: `charge.refunded`, "
            "`refund.created`, `refund.updated` and `refund.failed` move our refund forward "
            "(never back). A replay answers `duplicate` and changes nothing; an event for an "
            "account or refund that is not ours is recorded and `ignored`.",
            api="webhook",
            method="POST",
            invalid="`Stripe-Signature` missing, forged or too old, or a body that is not a "
            "Stripe event.",
            body=json_object_body("A Stripe event: `{id, type, data: {object}, account?}`."),
            parameters=[header("stripe-signature", "`t=<unix time>,v1=<signature>[,v1=…]`.")],
            extra_responses={
                200: ResponseSpec(
                    StripeWebhookAck,
                    description="Applied, ignored or a replay",
                    generate_examples=False,
                ),
                503: error_response("Not configured: `DROPSHIP_STRIPE_WEBHOOK_SECRET` is unset."),
            },
        ),
    )
    async def receive(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[DbSession]
    ) -> Response[bytes]:
        services: Services = request.app.state.services
        try:
            raw = await request.body()
        except RequestEntityTooLarge:
            return Response(
                msgspec.json.encode(body_too_large(limits.MAX_WEBHOOK_BODY)),
                status_code=413,
                media_type="application/json",
            )
        receipt = await service.receive_webhook(db_session, services.settings, request.headers, raw)
        body: dict[str, Any] = (
            {"status": receipt.outcome}
            if receipt.status == 200
            else {
                "status_code": receipt.status,
                "detail": receipt.outcome,
                "extra": (
                    {"field": receipt.outcome.partition(":")[0]} if receipt.status == 400 else {}
                ),
            }
        )
        return Response(
            msgspec.json.encode(body), status_code=receipt.status, media_type="application/json"
        )
