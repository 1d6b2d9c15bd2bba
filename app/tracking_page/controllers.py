"""``GET /track/{token}``: the customer's tracking page, HTML for browsers and JSON for
``Accept: application/json``. Public (the token is the only credential), read-only, personal:
never cached, never indexed, and the token in its address never leaves in a ``Referer``."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Schema
from litestar.params import FromPath

from app.api.openapi import header, operation
from app.db import DbSession
from app.returns import service as returns_service
from app.tracking_page import i18n, returns_page, service
from app.tracking_page.render import render_page
from app.tracking_page.schemas import TrackingPageOut

HTML = "text/html"
JSON = "application/json"

#: On every answer of the route, the 404 included.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Vary": "Accept, Accept-Language",
}
#: Nothing may load but the page's own stylesheet (by nonce) and the store's https logo.
_CSP = (
    "default-src 'none'; style-src 'nonce-{nonce}'; img-src https:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_CSP_JSON = "default-src 'none'; frame-ancestors 'none'"


def _operation() -> dict[str, Any]:
    kwargs = operation(
        "getTrackingPage",
        "The customer's tracking page of one order: the store's branding, the order's name, "
        "date, status and items, and each shipment with its carrier, tracking number and link, "
        "status, estimated delivery and tracking events (newest first). HTML (no script) "
        "unless `Accept` prefers `application/json`; the language follows `Accept-Language` "
        "(`en`, `de`; else the store's default). No prices, addresses (city and country only) "
        "or emails. Public: the unguessable token in the path is the credential. A wrong, "
        "malformed or withdrawn token (the customer's data was redacted, the store uninstalled "
        "the app) is the same 404 as any unknown path.",
        api="public",
        invalid=None,
        not_found="No tracking page at this address.",
        parameters=[
            header("Accept-Language", "`de…` for German; English otherwise.", required=False)
        ],
        extra_responses={
            200: ResponseSpec(
                TrackingPageOut,
                description="The page: HTML, or this JSON for `Accept: application/json`.",
                generate_examples=False,
            )
        },
    )
    base: type[Any] = kwargs["operation_class"]

    @dataclass
    class TrackingPageOperation(base):  # type: ignore[misc]
        def __post_init__(self) -> None:
            super().__post_init__()
            ok = (self.responses or {}).get("200")
            if isinstance(ok, OpenAPIResponse):
                ok.content = {
                    **(ok.content or {}),
                    HTML: OpenAPIMediaType(
                        schema=Schema(type=OpenAPIType.STRING, description="The HTML page.")
                    ),
                }

    kwargs["operation_class"] = TrackingPageOperation
    return kwargs


class TrackingPageController(Controller):
    path = "/track"
    tags = ["tracking page"]

    @get("/{token:str}", summary="The customer's tracking page", **_operation())
    async def page(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[DbSession],
        token: FromPath[str],
    ) -> Response[Any]:
        view = await service.tracking_view(db_session, token)
        if view is None:
            # The body of every other 404: nothing tells a wrong token from a withdrawn one.
            raise NotFoundException(headers=HEADERS)
        locale = i18n.negotiate(request.headers.get("accept-language"), view.default_locale)
        page = TrackingPageOut.of(view, locale)
        if request.accept.best_match([HTML, JSON], default=HTML) == JSON:
            return Response(
                page, media_type=JSON, headers={**HEADERS, "Content-Security-Policy": _CSP_JSON}
            )
        nonce = secrets.token_urlsafe(16)
        return Response(
            render_page(page, nonce, token=token),
            media_type=HTML,
            headers={
                **HEADERS,
                "Content-Security-Policy": _CSP.format(nonce=nonce),
                "Content-Language": locale,
            },
        )

    # ------------------------------------------------------------------ returns (app.returns)
    @post(
        "/{token:str}/returns",
        status_code=201,
        summary="The customer asks for a return of shipped items",
        **returns_page.operation(),
    )
    async def request_return(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[DbSession],
        token: FromPath[str],
    ) -> Response[Any]:
        data = await returns_page.read_request(request)
        created = await returns_service.customer_request(
            db_session, token, [(ln.item, ln.quantity) for ln in data.lines], data.reason
        )
        if created is None:
            raise NotFoundException(headers=HEADERS)
        return returns_page.answer(request, token, created, HEADERS)
