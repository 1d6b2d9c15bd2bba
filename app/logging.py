"""Structured logging: JSON lines in production (or when not on a terminal), readable lines on a
terminal; every line of a request carries its ``request_id``."""

from __future__ import annotations

import logging
import re
import sys
import uuid
from typing import Any

import structlog
from litestar.types import ASGIApp, Message, Scope

from app.settings import Settings


def configure_logging(settings: Settings) -> None:
    as_json = settings.log_format == "json" or (
        settings.log_format == "auto" and (settings.env == "production" or not sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(settings.log_level.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        # Cached loggers ignore any later configure(): only in production, so a process that
        # configures logging twice (tests, the CLI run in-process) logs through the last one.
        cache_logger_on_first_use=settings.env == "production",
    )
    # Route stdlib logging (uvicorn, dramatiq, alembic) through the same renderer.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("uvicorn.access", "dramatiq.worker.WorkerThread", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


#: Longest ``X-Request-Id`` kept from a caller; longer ones are cut.
MAX_REQUEST_ID = 64
#: What a caller's id may contain (uuids, hex, base64, dotted or colon-separated ids); the rest
#: is dropped so an id never forges a log field or a header.
_UNSAFE_ID_CHAR = re.compile(r"[^A-Za-z0-9._:/+=@-]")
_SCOPE_KEY = "dropship.request_id"


def request_id_of(scope: Scope) -> str:
    """The request's id: the caller's ``X-Request-Id`` (bounded, sanitised) or a new one.

    Kept in the scope, so every layer (the webhook fast path, Litestar's middleware, the hook
    that stamps answers the middleware never saw, such as 404s) uses the same one.
    """
    state: Any = scope
    if request_id := state.get(_SCOPE_KEY):
        return str(request_id)
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            request_id = _UNSAFE_ID_CHAR.sub("", value[: MAX_REQUEST_ID * 4].decode("latin-1"))
            request_id = request_id[:MAX_REQUEST_ID]
            break
    request_id = request_id or uuid.uuid4().hex
    state[_SCOPE_KEY] = request_id
    return str(request_id)


async def stamp_request_id(message: Message, scope: Scope) -> None:
    """Add ``x-request-id`` to an answer that has none (Litestar ``before_send`` hook)."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers", ()))
    if not any(key.lower() == b"x-request-id" for key, _ in headers):
        headers.append((b"x-request-id", request_id_of(scope).encode()))
        message["headers"] = headers


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Bind the request id to every log line of the request and send it back in the answer."""

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_id = request_id_of(scope)

        async def send_with_id(message: Any) -> None:
            await stamp_request_id(message, scope)
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await app(scope, receive, send_with_id)

    return middleware
