"""Merchant API: webhook endpoints and their delivery logs."""

from __future__ import annotations

import uuid

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody

from app.api.deps import provide_merchant
from app.api.openapi import MERCHANT_SECURITY, operation
from app.api.pagination import DEFAULT_LIMIT, Page
from app.db import DbSession
from app.idempotency.middleware import SECRET_FIELDS
from app.merchants.models import Merchant
from app.outbound import service
from app.outbound.models import DeliveryAttempt, EndpointDelivery, WebhookEndpoint
from app.outbound.schemas import (
    AttemptOut,
    DeliveryOut,
    EndpointCreated,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
)
from app.services import Services

_NOT_FOUND = "No webhook endpoint with this id in your store."
_SECRET_SHOWN_ONCE = {
    SECRET_FIELDS: {
        "secret": "the signing secret is shown only in the first answer and is not kept in "
        "replays; if it was lost, issue a new one with POST "
        "/api/v1/webhook-endpoints/{id}/rotate-secret (new Idempotency-Key)"
    }
}


def endpoint_out(e: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(
        id=e.id,
        url=e.url,
        events=list(e.events),
        description=e.description,
        enabled=e.enabled,
        disabled_at=e.disabled_at,
        disabled_reason=e.disabled_reason,
        consecutive_failures=e.consecutive_failures,
        failing_since=e.failing_since,
        last_success_at=e.last_success_at,
        created_at=e.created_at,
        updated_at=e.updated_at,
    )


def delivery_out(row: tuple[EndpointDelivery, list[DeliveryAttempt]]) -> DeliveryOut:
    d, attempts = row
    return DeliveryOut(
        id=d.id,
        endpoint_id=d.endpoint_id,
        message_id=d.message_id,
        event_type=d.event_type,
        status=d.status,
        attempts=d.attempts,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        next_attempt_at=d.next_attempt_at,
        created_at=d.created_at,
        delivered_at=d.delivered_at,
        payload=msgspec.json.decode(d.body),
        attempt_log=[
            AttemptOut(
                attempted_at=a.attempted_at,
                status_code=a.status_code,
                duration_ms=a.duration_ms,
                response_excerpt=a.response_excerpt,
                error=a.error,
            )
            for a in attempts
        ],
    )


class WebhookEndpointController(Controller):
    path = "/api/v1/webhook-endpoints"
    tags = ["webhook endpoints"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/",
        summary="List webhook endpoints, oldest first (cursor-paginated)",
        **operation(
            "listWebhookEndpoints",
            "Your outbound webhook endpoints (never their secrets).",
            api="merchant",
        ),
    )
    async def list_endpoints(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[EndpointOut]:
        page = await service.list_endpoints(db_session, merchant.id, cursor=cursor, limit=limit)
        return page.map(endpoint_out)

    @post(
        "/",
        status_code=201,
        summary="Register an endpoint; its signing secret is shown once",
        opt=_SECRET_SHOWN_ONCE,
        **operation(
            "createWebhookEndpoint",
            "Register an HTTPS URL to receive the events named in `events` (`*`: all), signed "
            "as the Standard Webhooks specification says (`webhook-id`, `webhook-timestamp`, "
            "`webhook-signature`). The answer carries the signing secret (`whsec_…`), shown "
            "this once.",
            api="merchant",
            method="POST",
            conflict="the store already has the most endpoints allowed",
        ),
    )
    async def create(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        data: JSONBody[EndpointIn],
    ) -> EndpointCreated:
        endpoint, secret = await service.create_endpoint(
            db_session,
            services.box,
            merchant.id,
            url=data.url,
            events=data.events,
            description=data.description,
            enabled=data.enabled,
            allow_http=services.settings.outbound_allow_http,
        )
        return EndpointCreated(endpoint=endpoint_out(endpoint), secret=secret)

    @get(
        "/{endpoint_id:uuid}",
        summary="One webhook endpoint (never its secret)",
        **operation(
            "getWebhookEndpoint",
            "One of your webhook endpoints, with its failure count.",
            api="merchant",
            invalid=None,
            not_found=_NOT_FOUND,
        ),
    )
    async def get_one(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        endpoint_id: FromPath[uuid.UUID],
    ) -> EndpointOut:
        return endpoint_out(await service.get_endpoint(db_session, merchant.id, endpoint_id))

    @patch(
        "/{endpoint_id:uuid}",
        summary="Change the URL, events, description, or turn it on or off",
        **operation(
            "updateWebhookEndpoint",
            "Change an endpoint; only the fields sent change. `enabled: true` turns a disabled "
            "endpoint back on with its failure count reset.",
            api="merchant",
            method="PATCH",
            not_found=_NOT_FOUND,
        ),
    )
    async def update(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        endpoint_id: FromPath[uuid.UUID],
        data: JSONBody[EndpointPatch],
    ) -> EndpointOut:
        endpoint = await service.update_endpoint(
            db_session,
            merchant.id,
            endpoint_id,
            url=data.url,
            events=data.events,
            description=data.description,
            enabled=data.enabled,
            allow_http=services.settings.outbound_allow_http,
        )
        return endpoint_out(endpoint)

    @delete(
        "/{endpoint_id:uuid}",
        status_code=204,
        summary="Remove an endpoint and its delivery log",
        **operation(
            "deleteWebhookEndpoint",
            "Remove an endpoint: no more events go to it; its delivery log goes with it.",
            api="merchant",
            method="DELETE",
            invalid=None,
            not_found=_NOT_FOUND,
        ),
    )
    async def remove(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        endpoint_id: FromPath[uuid.UUID],
    ) -> None:
        await service.delete_endpoint(db_session, merchant.id, endpoint_id)

    @post(
        "/{endpoint_id:uuid}/rotate-secret",
        status_code=200,
        summary="Issue a new signing secret",
        opt=_SECRET_SHOWN_ONCE,
        **operation(
            "rotateWebhookEndpointSecret",
            "Issue a new signing secret (shown this once). For 24 hours every attempt carries "
            "two signatures (`v1,<new> v1,<old>`), so the receiver can switch over without "
            "missing a message; then only the new secret signs.",
            api="merchant",
            method="POST",
            not_found=_NOT_FOUND,
        ),
    )
    async def rotate(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        services: NamedDependency[Services],
        endpoint_id: FromPath[uuid.UUID],
    ) -> EndpointCreated:
        endpoint, secret = await service.rotate_secret(
            db_session, services.box, merchant.id, endpoint_id
        )
        return EndpointCreated(endpoint=endpoint_out(endpoint), secret=secret)

    @get(
        "/{endpoint_id:uuid}/deliveries",
        summary="The endpoint's delivery log, newest first (cursor-paginated)",
        **operation(
            "listWebhookDeliveries",
            "Every event sent (or being sent) to the endpoint, newest first: status, attempts, "
            "the last answer's status code, the next attempt, the payload and each attempt.",
            api="merchant",
            not_found=_NOT_FOUND,
        ),
    )
    async def deliveries(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        endpoint_id: FromPath[uuid.UUID],
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[DeliveryOut]:
        page = await service.list_deliveries(
            db_session, merchant.id, endpoint_id, cursor=cursor, limit=limit
        )
        return page.map(delivery_out)

    @post(
        "/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/retry",
        status_code=202,
        summary="Send a delivery again now",
        **operation(
            "retryWebhookDelivery",
            "Send a delivery again (same `webhook-id` and body, a new timestamp and signature), "
            "with a fresh day of retries if it fails.",
            api="merchant",
            method="POST",
            not_found="No such endpoint in your store, or no such delivery for it.",
            conflict="the endpoint is disabled, or the delivery is being sent right now",
        ),
    )
    async def retry(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        endpoint_id: FromPath[uuid.UUID],
        delivery_id: FromPath[uuid.UUID],
    ) -> DeliveryOut:
        return delivery_out(
            await service.retry_delivery(db_session, merchant.id, endpoint_id, delivery_id)
        )
