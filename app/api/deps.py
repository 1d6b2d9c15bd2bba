"""Request-scoped dependencies (the transaction, the authenticated merchant) and the API's
rendering of validation errors."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Any

from litestar import Request, Response
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import (
    NotAuthorizedException,
    SerializationException,
    ValidationException,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.merchants.models import Merchant
from app.merchants.service import authenticate
from app.services import Services


class ApiRequest(Request[Any, Any, Any]):
    """The app's request class: a JSON body that cannot be decoded is the client's error.

    Litestar turns malformed JSON into a 400 but lets two errors of its decoder through as 500s:
    invalid UTF-8 inside a string (``UnicodeDecodeError``) and nesting deeper than the
    interpreter's recursion limit (``RecursionError``). Every ``data`` body of every endpoint is
    decoded here, so this one place covers them all, in the API's error shape.
    """

    async def json(self) -> Any:
        try:
            return await super().json()
        except SerializationException as exc:
            reason = str(exc.detail).removeprefix("JSON is malformed: ")
            raise body_error(f"not valid JSON: {reason}") from None
        except UnicodeDecodeError:
            raise body_error("not valid UTF-8") from None
        except RecursionError:
            raise body_error("nested too deeply") from None


def body_error(message: str) -> ValidationException:
    """A 400 about the request body as a whole, rendered by ``validation_error``."""
    return ValidationException(
        f"body: {message}", extra=[{"key": "body", "message": message, "source": "body"}]
    )


def body_too_large(limit: int) -> dict[str, Any]:
    """The one 413 answer (API, webhook, idempotency middleware): the body and its limit."""
    return {
        "status_code": 413,
        "detail": f"body: larger than the limit of {limit} bytes",
        "extra": {"field": "body", "limit": limit},
    }


async def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


#: Route ``opt`` key: the handler only reads, though its method is not GET (a dry-run).
READ_ONLY = "read_only"


async def provide_session(request: Request[Any, Any, Any]) -> AsyncGenerator[AsyncSession, None]:
    """One request, one transaction: committed before the response is sent, rolled back on error.

    GET and HEAD requests (and routes marked ``opt={READ_ONLY: True}``) get a read-only session:
    on SQLite it never waits for the write lock, so reads go on while another tenant imports.
    """
    services: Services = request.app.state.services
    read_only = request.method in ("GET", "HEAD") or bool(request.route_handler.opt.get(READ_ONLY))
    factory = services.db.read_sessionmaker if read_only else services.db.sessionmaker
    async with factory() as session:
        try:
            yield session
        except Exception:
            await session.rollback()
            raise
        else:
            await session.commit()


#: RFC 6750: a 401 says which scheme to use.
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dropship"'}


def bearer_token(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException(
            "missing bearer token: send 'Authorization: Bearer <token>'", headers=_CHALLENGE
        )
    return token.strip()


async def provide_merchant(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> Merchant:
    try:
        merchant = await authenticate(db_session, bearer_token(request))
        if merchant is None:
            raise NotAuthorizedException(
                "invalid or revoked merchant token",
                headers={"WWW-Authenticate": 'Bearer realm="dropship", error="invalid_token"'},
            )
    except Exception:
        # When a dependency fails, Litestar never runs the cleanup of those already resolved:
        # ``provide_session`` would keep its transaction (on SQLite, the database's write lock)
        # until the garbage collector finalises it. Release it now.
        await db_session.close()
        raise
    return merchant


#: ``field: message``, the field possibly a path (``lines[0].price``).
_FIELD_PREFIX = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_]*(?:\[\d+\]|\.[A-Za-z_][A-Za-z0-9_]*)*): (.*)$", re.DOTALL
)
_AT_PATH = re.compile(r"^(.*) - at `(\$[^`]*)`$", re.DOTALL)
_NAMED_FIELD = re.compile(r"^Object (missing required|contains unknown) field `([^`]+)`$")


def validation_error(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    """Litestar's validation errors in the API's error shape, with the fields named in ``detail``.

    Litestar answers ``{"detail": "Validation failed for POST /path", "extra": [{"key", ...}]}``;
    here ``detail`` reads ``lines[0].quantity: Expected `int` >= 1`` and ``extra`` is an object:
    ``{"field": <first field>, "errors": [{"field", "message", "source"}, ...]}``.
    """
    errors: list[dict[str, Any]] = []
    raw = exc.extra if isinstance(exc.extra, list) else []
    for item in raw:
        if not isinstance(item, dict):
            continue
        key = str(item.get("key") or "")
        if (
            key in ("", "data")
            and len(raw) == 1
            and (at := _AT_PATH.match(str(exc.__cause__ or "")))
        ):
            # A path Litestar drops (a body that is a list: ``$.data[1].quantity``): msgspec's
            # own error, the cause, still has it.
            key = at.group(2).removeprefix("$").removeprefix(".")
        message = str(item.get("message") or "invalid value")
        if key == "data" or key.startswith(("data[", "data.")):  # the body itself
            key = key.removeprefix("data").removeprefix(".")
        # Missing or unknown fields, and checks written as "field: message", are reported on
        # the object that holds them: point at the field itself.
        if named := _NAMED_FIELD.match(message):
            sub = named.group(2)
            message = "required" if named.group(1) == "missing required" else "unknown field"
        elif prefixed := _FIELD_PREFIX.match(message):
            sub, message = prefixed.group(1), prefixed.group(2)
        else:
            sub = ""
        if sub:
            key = f"{key}.{sub}" if key else sub
        errors.append({"field": key or None, "message": message, "source": item.get("source")})
    if errors:
        detail = "; ".join(
            f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors
        )
    else:
        detail = str(exc.detail)
    return Response(
        {
            "status_code": exc.status_code,
            "detail": detail,
            "extra": {"field": errors[0]["field"] if errors else None, "errors": errors},
        },
        status_code=exc.status_code,
    )
