"""Wire shapes of the exceptions queue."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from app.exceptions.models import ExceptionCase


class ExceptionOut(msgspec.Struct):
    id: uuid.UUID
    kind: str
    reason: str
    order_id: uuid.UUID | None
    created_at: datetime
    resolved_at: datetime | None
    data: dict[str, Any]

    @classmethod
    def of(cls, c: ExceptionCase) -> ExceptionOut:
        return cls(
            id=c.id,
            kind=c.kind,
            reason=c.reason,
            order_id=c.order_id,
            created_at=c.created_at,
            resolved_at=c.resolved_at,
            data=c.data,
        )
