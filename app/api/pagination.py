"""Keyset (cursor) pagination: stable under inserts, O(limit) at any depth.

A cursor is the ``(created_at, id)`` of the last item of a page; the next page holds the items
strictly after it in ``created_at DESC, id DESC`` order. Cursors are opaque to clients.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec
from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.errors import InvalidInput

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None

    def map(self, shape: Callable[[T], R]) -> Page[R]:
        """The same page, each item shaped: a service pages rows, its controller shapes them."""
        return Page(items=[shape(item) for item in self.items], next_cursor=self.next_cursor)


def encode_cursor(created_at: datetime, id_: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{id_}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, _, id_ = raw.partition("|")
        at, last_id = datetime.fromisoformat(ts), uuid.UUID(id_)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise _bad_cursor() from exc
    if at.tzinfo is None:  # never produced by encode_cursor; naive datetimes cannot be compared
        raise _bad_cursor()
    return at, last_id


def _bad_cursor() -> InvalidInput:
    return InvalidInput(
        "not a cursor returned by this API (use next_cursor from the previous page)",
        field="cursor",
    )


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"must be between 1 and {MAX_LIMIT}, got {limit}", field="limit")
    return limit


async def rows_page(
    session: AsyncSession,
    query: Select[R],
    created_at: InstrumentedAttribute[datetime],
    id_: InstrumentedAttribute[uuid.UUID],
    *,
    cursor: str | None,
    limit: int,
    oldest_first: bool = False,
) -> Page[R]:
    """One page of ``query``'s rows, newest first (or oldest first: work queues read in arrival
    order), keyed on the rows' ``created_at`` and ``id`` columns given."""
    check_limit(limit)
    if cursor:
        at, last_id = decode_cursor(cursor)
        if oldest_first:
            query = query.where(or_(created_at > at, and_(created_at == at, id_ > last_id)))
        else:
            query = query.where(or_(created_at < at, and_(created_at == at, id_ < last_id)))
    order = (created_at, id_) if oldest_first else (created_at.desc(), id_.desc())
    rows: list[Any] = list(await session.scalars(query.order_by(*order).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        items=rows,
        next_cursor=(
            encode_cursor(getattr(rows[-1], created_at.key), getattr(rows[-1], id_.key))
            if more
            else None
        ),
    )
