"""Keyset (cursor) pagination: stable under inserts, O(limit) at any depth."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Generic, TypeVar

import msgspec
from litestar.exceptions import ClientException

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(created_at: datetime, id_: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{id_}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, _, id_ = raw.partition("|")
        return datetime.fromisoformat(ts), uuid.UUID(id_)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ClientException("cursor: not a cursor returned by this API") from exc


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ClientException(f"limit: must be between 1 and {MAX_LIMIT}")
    return limit
