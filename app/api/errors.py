"""Domain errors as HTTP answers: one handler for the whole ``app.errors`` family."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from app.errors import DomainError


def domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[object]:
    """``{"status_code", "detail", "extra"}`` like every other error; ``detail`` starts with the
    field at fault (``"lines[0].sku: ..."``), which ``extra.field`` also names."""
    return Response(
        {
            "status_code": exc.status,
            "detail": str(exc),
            "extra": ({"field": exc.field} if exc.field else {}) | exc.extra,
        },
        status_code=exc.status,
    )
