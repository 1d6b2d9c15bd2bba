"""``POST /track/{token}/returns``: the customer's return request from the tracking page, as JSON
(``{"lines": [{"item", "quantity"}], "reason"}``, items numbered as the page lists them) or as
the page's own form (``item``, ``quantity``, ``reason``; answered by a redirect to the page)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import msgspec
from litestar import Request, Response
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, RequestBody, Schema

from app.api.openapi import operation as api_operation
from app.errors import InvalidInput
from app.returns.models import Return
from app.returns.schemas import CustomerReturnIn, CustomerReturnOut, CustomerReturnsCreated

FORM = "application/x-www-form-urlencoded"
#: A form or JSON body of a return request is small; anything bigger is no request of ours.
MAX_BODY = 64 * 1024
_AT = re.compile(r"^(.*) - at `\$\.?([^`]*)`$", re.DOTALL)
_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\[\]]*): (.*)$", re.DOTALL)


def operation() -> dict[str, Any]:
    form = Schema(
        type=OpenAPIType.OBJECT,
        required=["item", "quantity", "reason"],
        properties={
            "item": Schema(
                type=OpenAPIType.INTEGER, minimum=1, description="the item's number, 1 first"
            ),
            "quantity": Schema(type=OpenAPIType.INTEGER, minimum=1),
            "reason": Schema(type=OpenAPIType.STRING, min_length=1, max_length=1000),
        },
    )
    json_schema = Schema(
        type=OpenAPIType.OBJECT,
        required=["lines", "reason"],
        properties={
            "lines": Schema(
                type=OpenAPIType.ARRAY,
                min_items=1,
                max_items=500,
                items=Schema(
                    type=OpenAPIType.OBJECT,
                    required=["item", "quantity"],
                    properties={
                        "item": Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=500),
                        "quantity": Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=100_000),
                    },
                ),
            ),
            "reason": Schema(type=OpenAPIType.STRING, min_length=1, max_length=1000),
        },
    )
    return api_operation(
        "requestReturnFromTrackingPage",
        "The customer asks for a return of shipped items (numbered as the page lists them, 1 "
        "first) with the reason, within the store's return window (`returns.window_days` after "
        "delivery, or after shipping if never delivered). JSON answers 201 with the returns "
        "(one per supplier); the page's form (`item`, `quantity`, `reason`) is answered by a "
        "redirect (303) back to the page. Public: the token is the credential.",
        api="public",
        method="POST",
        not_found="No tracking page at this address.",
        conflict="the item has not shipped, is already being returned, or the return window ended",
        body=RequestBody(
            required=True,
            description="The items to return and why.",
            content={
                "application/json": OpenAPIMediaType(schema=json_schema),
                FORM: OpenAPIMediaType(schema=form),
            },
        ),
        extra_responses={
            201: ResponseSpec(CustomerReturnsCreated, description="The returns requested."),
            303: ResponseSpec(None, description="The form was taken: back to the page."),
        },
    )


def _is_form(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == FORM


async def read_request(request: Request[Any, Any, Any]) -> CustomerReturnIn:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise InvalidInput(f"larger than {MAX_BODY} bytes", field="body")
    raw: Any
    if _is_form(request):
        try:
            fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=10)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput("not a readable form", field="body") from exc

        def one(name: str) -> str:
            values = fields.get(name) or [""]
            return values[0]

        raw = {
            "lines": [
                {"item": _int(one("item"), "item"), "quantity": _int(one("quantity"), "quantity")}
            ],
            "reason": one("reason").strip(),
        }
    else:
        try:
            raw = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"not valid JSON: {exc}", field="body") from exc
    try:
        return msgspec.convert(raw, CustomerReturnIn)
    except msgspec.ValidationError as exc:
        message, field = str(exc), None
        if at := _AT.match(message):
            message, field = at.group(1), at.group(2) or None
        if named := _FIELD.match(message):
            sub, message = named.group(1), named.group(2)
            field = f"{field}.{sub}" if field else sub
        raise InvalidInput(message, field=field or "body") from exc


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput("a whole number", field=name) from None


def answer(
    request: Request[Any, Any, Any],
    token: str,
    created: Sequence[Return],
    headers: Mapping[str, str],
) -> Response[Any]:
    if _is_form(request):
        return Response(None, status_code=303, headers={**headers, "Location": f"/track/{token}"})
    return Response(
        CustomerReturnsCreated([CustomerReturnOut.of(r) for r in created]),
        status_code=201,
        headers=dict(headers),
    )
