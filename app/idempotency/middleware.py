"""``Idempotency-Key`` for every POST of the merchant and supplier APIs.

The first request with a key runs and its answer is stored; a retry with the same key and the same
request gets the stored answer (``Idempotent-Replayed: true``) and changes nothing; the same key
with a different request is refused (422); a retry while the first is still running gets 409.
Keys are scoped to the credential, so tenants never see each other's answers. Server errors (and
401/403/409/429, which depend on the moment) are not stored: the client may retry them.

The answer is stored before it is sent (answers of these POSTs are small JSON), so a client that
got it and retries at once is replayed rather than told the first request is still running. Keys
are remembered for ``RETENTION``; a key whose first request never finished (the process died) is
released after ``IN_FLIGHT_TIMEOUT``.

Secrets are shown once and never stored: a route whose answer carries one (a new supplier API
key) names those fields in its ``opt`` under ``SECRET_FIELDS``, with why each is withheld. The
stored answer has them set to null and a ``redacted`` object giving that reason, so a replay has
the same status and shape, says what is missing and what to do (rotate the key), and the
``idempotency_keys`` table never holds the secret.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import msgspec
import structlog
from litestar.types import ASGIApp
from sqlalchemy import delete, select, update

from app import limits
from app.api.deps import body_too_large
from app.db import Database, insert_for, utcnow, uuid7
from app.idempotency.models import IdempotencyRecord
from app.security import SecretBox
from app.services import Services

log = structlog.get_logger(__name__)

_PREFIXES = ("/api/", "/supplier/")
_NOT_STORED = {401, 403, 409, 429}
MAX_KEY_LENGTH = 255
RETENTION = timedelta(hours=24)
IN_FLIGHT_TIMEOUT = timedelta(minutes=5)
_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)
#: Route ``opt`` key: ``{field: why it is not replayed}`` for top-level answer fields that are
#: secrets (e.g. ``{"api_key": "shown once; rotate the key"}``).
SECRET_FIELDS = "idempotency_secret_fields"  # noqa: S105 (an opt key, not a secret)


class _BodyTooLarge(Exception):
    pass


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
    return msgspec.json.encode(
        {"status_code": status, "detail": detail, "extra": {"field": "Idempotency-Key"}}
    )


async def _read_body(receive: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client is gone
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def request_fingerprint(box: SecretBox, scope: Any, body: bytes) -> str:
    """What makes two requests "the same": path, query and body, keyed with the secret key
    (bodies may carry secrets, like a supplier's API key: a plain digest of them, stored for a
    day, could be tested against guesses).

    A multipart body's boundary is random per attempt in most HTTP clients, so it is left out:
    a retry of the same upload is the same request.
    """
    content_type = (_header(scope, b"content-type") or "").encode("latin-1")
    if content_type.lower().startswith(b"multipart/") and (m := _BOUNDARY.search(content_type)):
        body = body.replace(m.group(1), b"")
    return box.sign(b"\0".join([scope["path"].encode(), scope.get("query_string", b""), body]))


def _secret_fields(scope: Any) -> dict[str, str]:
    handler = scope.get("route_handler")
    fields = getattr(handler, "opt", {}).get(SECRET_FIELDS) if handler is not None else None
    return dict(fields) if fields else {}


def without_secrets(body: bytes, secrets: dict[str, str]) -> tuple[bytes, list[str]]:
    """The answer as it may be stored, and the secret fields taken out of it.

    Each secret field present becomes null and ``redacted`` says why. An answer that is not a
    JSON object cannot be checked field by field, so none of it is kept."""
    if not secrets:
        return body, []
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        doc = None
    if not isinstance(doc, dict):
        why = "the answer to this request held a secret and is shown only once"
        return msgspec.json.encode({"redacted": {"body": why}}), ["body"]
    removed = [name for name in secrets if doc.get(name) is not None]
    if not removed:
        return body, []
    for name in removed:
        doc[name] = None
    doc["redacted"] = {name: secrets[name] for name in removed}
    return msgspec.json.encode(doc), removed


async def _claim(db: Database, owner: str, key: str, request_hash: str) -> IdempotencyRecord | None:
    """Take the key for this request: None if this request now owns it, else the record of the
    request that does.

    ``INSERT ... ON CONFLICT DO NOTHING`` rather than catching ``IntegrityError``: one round
    trip, and no failed statement whose cursor lingers until the garbage collector frees it (see
    ``app.sqlite_writer`` for what such a cursor could do on SQLite).
    """
    now = utcnow()
    async with db.transaction() as session:
        inserted = await session.execute(
            insert_for(session)(IdempotencyRecord)
            .values(id=uuid7(), scope=owner, key=key, request_hash=request_hash, created_at=now)
            .on_conflict_do_nothing(index_elements=["scope", "key"])
        )
        if getattr(inserted, "rowcount", 0) == 1:
            return None
        existing = await session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.scope == owner, IdempotencyRecord.key == key
            )
        )
        if existing is None:  # deleted in between (a failed first attempt): the client retries
            return IdempotencyRecord(scope=owner, key=key, request_hash="", status_code=None)
        expired = existing.created_at < now - RETENTION
        abandoned = existing.status_code is None and existing.created_at < now - IN_FLIGHT_TIMEOUT
        if not (expired or abandoned):
            return existing
        taken = await session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.id == existing.id,
                IdempotencyRecord.created_at == existing.created_at,
            )
            .values(request_hash=request_hash, status_code=None, response_body=None, created_at=now)
        )
        if getattr(taken, "rowcount", 0) == 1:
            return None
        return IdempotencyRecord(scope=owner, key=key, request_hash="", status_code=None)


async def _finish(db: Database, owner: str, key: str, status: int, body: bytes) -> None:
    where = (IdempotencyRecord.scope == owner, IdempotencyRecord.key == key)
    try:
        async with db.transaction() as session:
            if status >= 500 or status in _NOT_STORED:
                await session.execute(delete(IdempotencyRecord).where(*where))
            else:
                await session.execute(
                    update(IdempotencyRecord)
                    .where(*where)
                    .values(status_code=status, response_body=body)
                )
    except Exception:  # the answer must still reach the client; the key frees itself later
        log.exception("idempotency.store_failed", key=key, status=status)


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
        if len(key) > MAX_KEY_LENGTH:
            await _json_response(
                send, 400, _error(400, f"Idempotency-Key: at most {MAX_KEY_LENGTH} characters")
            )
            return
        limit = (
            getattr(scope["litestar_app"], "request_max_body_size", None) or limits.MAX_REQUEST_BODY
        )
        try:
            declared = int(_header(scope, b"content-length") or 0)
        except ValueError:
            declared = 0
        try:
            if declared > limit:
                raise _BodyTooLarge
            body = await _read_body(receive, limit)
        except _BodyTooLarge:
            await _json_response(send, 413, msgspec.json.encode(body_too_large(limit)))
            return
        services: Services = scope["litestar_app"].state.services
        # The credential itself is never stored: a keyed digest of it names the scope.
        owner = services.box.sign(auth)[:64]
        request_hash = request_fingerprint(services.box, scope, body)
        db = services.db

        existing = await _claim(db, owner, key, request_hash)
        if existing is not None:
            if not existing.request_hash:  # changed hands between our insert and read
                await _json_response(send, 409, _error(409, "Idempotency-Key in use; retry"))
            elif existing.request_hash != request_hash:
                await _json_response(
                    send,
                    422,
                    _error(422, "Idempotency-Key was already used with a different request"),
                )
            elif existing.status_code is None:
                await _json_response(
                    send,
                    409,
                    _error(409, "Idempotency-Key: a request with this key is still running"),
                    [(b"retry-after", b"1")],
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

        start: dict[str, Any] | None = None
        out: list[bytes] = []
        finished = False

        async def capture(message: Any) -> None:
            # Hold the answer: it is stored first, then sent (below, once the app has returned
            # and released everything it held, e.g. SQLite's write lock).
            nonlocal start, finished
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body" and start is not None and not finished:
                out.append(message.get("body", b""))
                finished = not message.get("more_body", False)
            else:
                await send(message)

        try:
            await app(scope, replay_receive, capture)
        except BaseException:
            await _finish(db, owner, key, 500, b"")  # no answer: the client may retry
            raise
        if start is None or not finished:
            await _finish(db, owner, key, 500, b"")
            return
        response = b"".join(out)
        stored, removed = without_secrets(response, _secret_fields(scope))
        if removed:
            log.info("idempotency.secrets_not_stored", key=key, fields=removed)
        await _finish(db, owner, key, int(start["status"]), stored)
        await send(start)
        await send({"type": "http.response.body", "body": response})

    return middleware
