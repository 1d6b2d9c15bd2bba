"""Every error answer in one shape, ``{"status_code", "detail", "extra"}``, from one table of
handlers: the domain errors (``app.errors``), Litestar's own (validation, 404, 405, 413) and,
for anything unexpected, a 500 that is logged with its traceback and says nothing more."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import ExceptionHandlersMap

from app import limits
from app.api.deps import body_too_large, validation_error
from app.errors import DomainError

log = structlog.get_logger(__name__)


def domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[object]:
    """``detail`` starts with the field at fault (``"lines[0].sku: ..."``), which
    ``extra.field`` also names."""
    return Response(
        {
            "status_code": exc.status,
            "detail": str(exc),
            "extra": ({"field": exc.field} if exc.field else {}) | exc.extra,
        },
        status_code=exc.status,
    )


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[object]:
    return Response(
        {"status_code": exc.status_code, "detail": exc.detail, "extra": exc.extra or {}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def too_large(request: Request[Any, Any, Any], exc: RequestEntityTooLarge) -> Response[object]:
    limit = request.route_handler.resolve_request_max_body_size() or limits.MAX_REQUEST_BODY
    return Response(body_too_large(limit), status_code=413)


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    log.exception("request.failed", path=request.url.path, error=repr(exc))
    return Response(
        {"status_code": 500, "detail": "internal server error", "extra": {}}, status_code=500
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    Exception: internal_error,
    HTTPException: http_error,
    DomainError: domain_error,
    RequestEntityTooLarge: too_large,
    # Every endpoint names the offending field in ``detail`` (see the function).
    ValidationException: validation_error,
}
