"""Opening, resolving and listing exceptions-queue entries. Entries are added to the caller's
session: they commit (or vanish) with the decision that opened them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.pagination import Page, rows_page
from app.db import utcnow
from app.exceptions.models import ExceptionCase
from app.orders.models import Order


def open_case(
    session: AsyncSession, merchant_id: uuid.UUID, kind: str, reason: str, **data: Any
) -> ExceptionCase:
    """Put something that concerns no single order in the merchant's queue (a webhook that could
    not be used, a customer's data request)."""
    case = ExceptionCase(merchant_id=merchant_id, kind=kind, reason=reason, data=data)
    session.add(case)
    return case


def open_exception(
    session: AsyncSession, order: Order, kind: str, reason: str, **data: Any
) -> ExceptionCase:
    """Put the order in its merchant's queue for ``reason``."""
    case = open_case(session, order.merchant_id, kind, reason, **data)
    case.order_id = order.id
    return case


async def resolve_exceptions(
    session: AsyncSession, order: Order, kinds: tuple[str, ...] | None = None
) -> None:
    """Close the order's open exceptions-queue entries (of ``kinds``, or all): the problem they
    describe is gone (fixed by an update, or the order was cancelled)."""
    stmt = update(ExceptionCase).where(
        ExceptionCase.order_id == order.id, ExceptionCase.resolved_at.is_(None)
    )
    if kinds is not None:
        stmt = stmt.where(ExceptionCase.kind.in_(kinds))
    await session.execute(
        stmt.values(resolved_at=utcnow()), execution_options={"synchronize_session": False}
    )


async def list_exceptions(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    *,
    include_resolved: bool,
    cursor: str | None,
    limit: int,
) -> Page[ExceptionCase]:
    """The merchant's queue, newest first: the open entries, or all of them."""
    query = select(ExceptionCase).where(ExceptionCase.merchant_id == merchant_id)
    if not include_resolved:
        query = query.where(ExceptionCase.resolved_at.is_(None))
    return await rows_page(
        session, query, ExceptionCase.created_at, ExceptionCase.id, cursor=cursor, limit=limit
    )


async def cases_of_kind(
    session: AsyncSession, merchant_id: uuid.UUID, kind: str
) -> Sequence[ExceptionCase]:
    """The merchant's entries of one kind, open or resolved."""
    return (
        await session.scalars(
            select(ExceptionCase).where(
                ExceptionCase.merchant_id == merchant_id, ExceptionCase.kind == kind
            )
        )
    ).all()
