"""``GET /track/{token}``: the customer's tracking page, HTML for browsers and JSON for
``Accept: application/json``. Public (the token is the only credential), read-only, personal:
never cached, never indexed, and the token in its address never leaves in a ``Referer``."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Schema
from litestar.params import FromPath

from app.api.openapi import header, operation
from app.cancellations import service as cancellations
from app.cancellations.schemas import CancellationOut
from app.db import DbSession
from app.errors import InvalidInput
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

    @post(
        "/{token:str}/cancel",
        summary="The customer cancels the order from its tracking page",
        **operation(
            "cancelFromTrackingPage",
            "The customer cancels the order (the page's form: `reason`, optional, at most "
            "1,000 characters, as a form field or JSON), if the store allows it "
            "(`cancellation.customer_can_cancel`) and nothing of the order has shipped. A "
            "browser's form post is sent back to the page (303); `Accept: application/json` "
            "gets the cancellation's state (202 while the suppliers are asked, 200 once "
            "cancelled).",
            api="public",
            method="POST",
            not_found="No tracking page at this address.",
            conflict="the store does not allow it, part of the order has shipped, or it is "
            "cancelled (or being cancelled) already",
            extra_responses={
                200: ResponseSpec(CancellationOut, description="Cancelled."),
                202: ResponseSpec(CancellationOut, description="Under way."),
                303: ResponseSpec(None, description="A form post: back to the page."),
            },
        ),
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[DbSession],
        token: FromPath[str],
    ) -> Response[Any]:
        reason = _reason(request.headers.get("content-type") or "", await request.body())
        view = await cancellations.cancel_by_token(db_session, token, reason)
        if request.accept.best_match([HTML, JSON], default=HTML) == JSON:
            done = view.cancellation.status == "cancelled"
            return Response(
                CancellationOut.of(view),
                status_code=200 if done else 202,
                media_type=JSON,
                headers=HEADERS,
            )
        return Response(None, status_code=303, headers={**HEADERS, "Location": f"/track/{token}"})


#: The reason a customer may give, in characters.
MAX_REASON = 1000


def _reason(content_type: str, body: bytes) -> str:
    """``reason`` from a form post or a JSON body (either may be empty)."""
    if not body:
        return ""
    if content_type.split(";")[0].strip().lower() == JSON:
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise InvalidInput("not valid JSON", field="body") from None
        value = data.get("reason", "") if isinstance(data, dict) else None
    else:
        try:
            fields = parse_qs(body.decode(), max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            raise InvalidInput("not a form", field="body") from None
        value = (fields.get("reason") or [""])[0]
    if not isinstance(value, str):
        raise InvalidInput("text", field="reason")
    if len(value) > MAX_REASON or "\x00" in value:
        raise InvalidInput(f"at most {MAX_REASON} characters, no NUL", field="reason")
    return value
