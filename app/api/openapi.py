"""The OpenAPI document's shared parts: security schemes, the error answers of each kind of
route, request bodies the handlers read themselves, and the offline Swagger UI.

Every route passes ``**operation(...)`` to its decorator: one place decides which error statuses
an operation documents (from what it does: authenticated, path ids, a body, a state check, an
``Idempotency-Key``), so the document stays exact without the same dict on every route.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
from litestar import get
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)
from litestar.params import FromPath
from litestar.response import File

MERCHANT_AUTH = "merchantToken"
SUPPLIER_AUTH = "supplierKey"
SHOPIFY_HMAC = "shopifyHmac"

MERCHANT_SECURITY: list[SecurityRequirement] = [{MERCHANT_AUTH: []}]
SUPPLIER_SECURITY: list[SecurityRequirement] = [{SUPPLIER_AUTH: []}]
SHOPIFY_SECURITY: list[SecurityRequirement] = [{SHOPIFY_HMAC: []}]

SECURITY_SCHEMES: dict[str, SecurityScheme] = {
    MERCHANT_AUTH: SecurityScheme(
        type="http",
        scheme="bearer",
        description="The merchant's API token (`dropship merchant create` prints it once): "
        "`Authorization: Bearer <token>`. Every `/api/v1` operation needs it.",
    ),
    SUPPLIER_AUTH: SecurityScheme(
        type="http",
        scheme="bearer",
        description="A supplier's API key (shown once when the supplier is created or its key "
        "rotated): `Authorization: Bearer <key>`. Every `/supplier/v1` operation needs it.",
    ),
    SHOPIFY_HMAC: SecurityScheme(
        type="apiKey",
        name="X-Shopify-Hmac-Sha256",
        security_scheme_in="header",
        description="Base64 HMAC-SHA256 of the raw body with the Shopify app's client secret "
        "(`DROPSHIP_SHOPIFY_API_SECRET`, or the previous one while a rotation rolls out).",
    ),
}


class ErrorBody(msgspec.Struct):
    """Every error answer. ``extra.field`` names the offending field when there is one."""

    status_code: int
    detail: str
    extra: dict[str, Any]


Api = Literal["merchant", "supplier", "webhook", "public"]

_IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key",
    param_in="header",
    required=False,
    description="Makes a retry safe: the same key with the same request replays the first "
    "answer (with `Idempotent-Replayed: true`) and changes nothing; the same key with another "
    "request is a 422. Keys are kept 24 hours, per credential.",
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
)
_REPLAYED = OpenAPIHeader(
    description="`true` when this is the stored answer to an earlier request with the same "
    "`Idempotency-Key`.",
    schema=Schema(type=OpenAPIType.STRING, enum=["true"]),
)


def error_response(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


def operation(
    operation_id: str,
    description: str,
    *,
    api: Api,
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET",
    not_found: str | None = None,
    conflict: str | None = None,
    invalid: str | None = "Invalid input: `detail` names the field (also in `extra.field`).",
    body: RequestBody | None = None,
    parameters: Sequence[Parameter] = (),
    extra_responses: Mapping[int, ResponseSpec] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for a route decorator: the id, the description and every error answer.

    ``invalid``: what a 400 means (None: no input but a path id, and a malformed id is a 404).
    ``not_found``: what a 404 means (a path id, or a referenced row that is not the caller's).
    ``conflict``: what a 409 means, if the operation checks a state. ``body``: a request body
    the handler reads itself (so Litestar cannot see it). POSTs of the merchant and supplier
    APIs honour ``Idempotency-Key`` (see ``app.idempotency.middleware``): documented here.
    """
    idempotent = method == "POST" and api in ("merchant", "supplier")
    has_body = method in ("POST", "PUT", "PATCH")
    if invalid and idempotent:
        invalid += " Also an `Idempotency-Key` longer than 255 characters."
    responses: dict[int, ResponseSpec] = {400: error_response(invalid)} if invalid else {}
    if api == "merchant":
        responses[401] = error_response("Missing, invalid or revoked merchant token.")
    elif api == "supplier":
        responses[401] = error_response("Missing or invalid supplier key.")
    if not_found:
        responses[404] = error_response(not_found)
    conflicts = [c for c in (conflict,) if c]
    if idempotent:
        conflicts.append("a request with the same `Idempotency-Key` is still running")
    if conflicts:
        responses[409] = error_response("; or ".join(c[0].upper() + c[1:] for c in conflicts) + ".")
    if has_body:
        responses[413] = error_response("The request body is larger than the limit.")
    if idempotent:
        responses[422] = error_response(
            "The `Idempotency-Key` was already used with another request."
        )
    responses.update(extra_responses or {})
    kwargs: dict[str, Any] = {
        "operation_id": operation_id,
        "description": description,
        "responses": responses,
    }
    added = [*parameters, *([_IDEMPOTENCY_KEY] if idempotent else [])]
    if added or body is not None or invalid is None:
        kwargs["operation_class"] = _operation_class(
            added, body, replayed=idempotent, no_400=invalid is None
        )
    return kwargs


def _operation_class(
    parameters: Sequence[Parameter], body: RequestBody | None, *, replayed: bool, no_400: bool
) -> type[Operation]:
    """An ``Operation`` that adds what Litestar cannot infer from the signature: header
    parameters read by middleware, a body read from the raw request, the replay header; and
    drops the 400 Litestar documents for any path parameter when only a path id is taken."""

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            self.parameters = [*(self.parameters or []), *parameters] or None
            if no_400 and self.responses:
                self.responses.pop("400", None)
            if body is not None:
                self.request_body = body
            if replayed:
                for status, answer in (self.responses or {}).items():
                    if status.startswith("2") and isinstance(answer, OpenAPIResponse):
                        answer.headers = {
                            **(answer.headers or {}),
                            "Idempotent-Replayed": _REPLAYED,
                        }

    return DocumentedOperation


def csv_body(columns: Iterable[str], required: Iterable[str], what: str) -> RequestBody:
    """A CSV upload: a ``text/csv`` body, or a multipart form whose ``file`` field is the CSV."""
    header = ",".join(columns)
    needed = ", ".join(required)
    description = (
        f"{what} UTF-8 CSV (a BOM is allowed), as a `text/csv` body or as the `file` field of a "
        f"`multipart/form-data` form. Header line:\n\n`{header}`\n\nRequired columns: {needed}."
    )
    text = Schema(type=OpenAPIType.STRING, description=f"The CSV, header line `{header}`.")
    form = Schema(
        type=OpenAPIType.OBJECT,
        required=["file"],
        properties={
            "file": Schema(
                type=OpenAPIType.STRING,
                content_media_type="text/csv",
                description=f"The CSV file, header line `{header}`.",
            )
        },
    )
    return RequestBody(
        required=True,
        description=description,
        content={
            "text/csv": OpenAPIMediaType(schema=text),
            "multipart/form-data": OpenAPIMediaType(schema=form),
        },
    )


def json_object_body(description: str) -> RequestBody:
    return RequestBody(
        required=True,
        description=description,
        content={
            "application/json": OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.OBJECT, additional_properties=Schema())
            )
        },
    )


def header(name: str, description: str, *, required: bool = True) -> Parameter:
    return Parameter(
        name=name,
        param_in="header",
        required=required,
        description=description,
        schema=Schema(type=OpenAPIType.STRING),
    )


# --------------------------------------------------------------------------- offline docs page

ASSETS_PATH = "/schema/assets"
#: The Swagger UI files the page loads, served from the ``swagger-ui-py`` package (no CDN).
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def _swagger_static() -> Path:
    # Located without importing ``swagger_ui`` (its package imports web-framework adapters).
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


_STATIC = _swagger_static()


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def swagger_asset(name: FromPath[str]) -> File:
    """One of Swagger UI's files; anything else is a 404."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFoundException(f"no asset {name}")
    return File(
        _STATIC / name,
        media_type=media_type,
        content_disposition_type="inline",
        headers={"Cache-Control": "public, max-age=86400"},
    )


def openapi_config() -> OpenAPIConfig:
    swagger = SwaggerRenderPlugin(
        path=["/", "/swagger"],
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )
    return OpenAPIConfig(
        title="dropship",
        version="0.1.0",
        description=(
            "Dropshipping orchestration: Shopify orders in, purchase orders out.\n\n"
            "The merchant API (`/api/v1`) takes the merchant's token, the supplier API "
            "(`/supplier/v1`) a supplier's key, both as `Authorization: Bearer …`. Errors are "
            '`{"status_code", "detail", "extra"}`; bad input is a 400 whose `detail` and '
            "`extra.field` name the field. Lists are cursor-paginated (`?cursor=&limit=`). "
            "Every POST of both APIs honours `Idempotency-Key`."
        ),
        path="/schema",
        components=Components(security_schemes=dict(SECURITY_SCHEMES)),
        render_plugins=[swagger],
    )
