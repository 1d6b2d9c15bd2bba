"""``POST /webhooks/tracking/aftership``: AfterShip's signed pushes. Verified, stored in the
webhook inbox (deduplicated on ``event_id``) and answered; a worker applies them."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import ResponseSpec
from litestar.response import Response

from app import limits
from app.aggregator import service
from app.api.deps import body_too_large
from app.api.openapi import error_response, header, json_object_body, operation
from app.db import DbSession
from app.services import Services


class TrackingPushAck(msgspec.Struct):
    """``accepted``: stored, applied shortly; ``duplicate``: a redelivery, nothing happens."""

    status: Literal["accepted", "duplicate"]


class AfterShipWebhookController(Controller):
    path = "/webhooks/tracking/aftership"
    tags = ["webhooks"]

    @post(
        "/",
        status_code=200,
        summary="AfterShip tracking push receiver",
        request_max_body_size=limits.MAX_WEBHOOK_BODY,
        **operation(
            "receiveAfterShipWebhook",
            "Called by AfterShip, not by people: verifies `aftership-hmac-sha256` (base64 "
            "HMAC-SHA256 of the raw body with `DROPSHIP_AFTERSHIP_WEBHOOK_SECRET`), stores the "
            "push and answers; a worker records its checkpoints as tracking events of the "
            "shipments following that tracking. A redelivery (same `event_id`) answers "
            "`duplicate` and changes nothing; a tracking no shipment follows is accepted and "
            "ignored.",
            api="webhook",
            method="POST",
            invalid="A body that is not UTF-8 JSON with an `event_id`.",
            body=json_object_body(
                "AfterShip's webhook body: `{event, event_id, msg: <Tracking>, ts}`."
            ),
            parameters=[header("aftership-hmac-sha256", "The body's signature.")],
            extra_responses={
                200: ResponseSpec(
                    TrackingPushAck, description="Stored, or a redelivery", generate_examples=False
                ),
                401: error_response("`aftership-hmac-sha256` missing or not matching the body."),
                503: error_response(
                    "Not configured: `DROPSHIP_AFTERSHIP_WEBHOOK_SECRET` is unset."
                ),
            },
        ),
    )
    async def receive(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[DbSession]
    ) -> Response[bytes]:
        """Verified with ``aftership-hmac-sha256``; answers ``{"status": "accepted" |
        "duplicate"}``."""
        services: Services = request.app.state.services
        try:
            raw = await request.body()
        except RequestEntityTooLarge:
            return Response(
                msgspec.json.encode(body_too_large(limits.MAX_WEBHOOK_BODY)),
                status_code=413,
                media_type="application/json",
            )
        receipt = await service.receive_push(db_session, services.settings, request.headers, raw)
        body: dict[str, Any] = (
            {"status": receipt.outcome}
            if receipt.status == 200
            else {
                "status_code": receipt.status,
                "detail": receipt.outcome,
                "extra": {"field": "body"} if receipt.status == 400 else {},
            }
        )
        return Response(
            msgspec.json.encode(body), status_code=receipt.status, media_type="application/json"
        )
