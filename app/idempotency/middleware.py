"""``Idempotency-Key`` for every POST of the merchant and supplier APIs.

The first request with a key runs and its answer is stored; a retry with the same key and the same
request gets the stored answer (``Idempotent-Replayed: true``) and changes nothing; the same key
with a different request is refused (422); a retry while the first is still running gets 409.
Keys are scoped to the credential, so tenants never see each other's answers. Server errors are
not stored: the client may retry them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from litestar.types import ASGIApp
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from app.idempotency.models import IdempotencyRecord
from app.services import Services

_PREFIXES = ("/api/", "/supplier/")
_NOT_STORED = {401, 403, 409, 429}


def _header(scope: Any, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _json_response(
    send: Any, status: int, body: bytes, extra: list[Any] | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


def _error(status: int, detail: str) -> bytes:
    import msgspec

    return msgspec.json.encode({"status_code": status, "detail": detail, "extra": {}})


def idempotency_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not scope["path"].startswith(_PREFIXES)
        ):
            await app(scope, receive, send)
            return
        key = _header(scope, b"idempotency-key")
        auth = _header(scope, b"authorization")
        if not key or not auth:
            await app(scope, receive, send)
            return
        if len(key) > 255:
            await _json_response(send, 400, _error(400, "Idempotency-Key: at most 255 characters"))
            return

        chunks: list[bytes] = []
        more: bool = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        owner = hashlib.sha256(auth.encode()).hexdigest()[:64]
        request_hash = hashlib.sha256(
            b"\0".join([scope["path"].encode(), scope.get("query_string", b""), body])
        ).hexdigest()
        services: Services = scope["litestar_app"].state.services
        db = services.db

        try:
            async with db.transaction() as session:
                session.add(IdempotencyRecord(scope=owner, key=key, request_hash=request_hash))
                await session.flush()
        except IntegrityError:
            async with db.sessionmaker() as session:
                existing = await session.scalar(
                    select(IdempotencyRecord).where(
                        IdempotencyRecord.scope == owner, IdempotencyRecord.key == key
                    )
                )
            if existing is None:  # deleted between our insert and read: let the client retry
                await _json_response(send, 409, _error(409, "Idempotency-Key in use; retry"))
            elif existing.request_hash != request_hash:
                await _json_response(
                    send,
                    422,
                    _error(422, "Idempotency-Key was already used with a different request"),
                )
            elif existing.status_code is None:
                await _json_response(
                    send, 409, _error(409, "a request with this Idempotency-Key is still running")
                )
            else:
                await _json_response(
                    send,
                    existing.status_code,
                    existing.response_body or b"",
                    [(b"idempotent-replayed", b"true")],
                )
            return

        sent = False

        async def replay_receive() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status = 500
        out: list[bytes] = []

        async def capture(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                out.append(message.get("body", b""))
            await send(message)

        try:
            await app(scope, replay_receive, capture)
        finally:
            async with db.transaction() as session:
                where = (IdempotencyRecord.scope == owner, IdempotencyRecord.key == key)
                if status >= 500 or status in _NOT_STORED:
                    await session.execute(delete(IdempotencyRecord).where(*where))
                else:
                    await session.execute(
                        update(IdempotencyRecord)
                        .where(*where)
                        .values(status_code=status, response_body=b"".join(out))
                    )

    return middleware
