"""Request-scoped dependencies: the transaction and the authenticated merchant."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from sqlalchemy.ext.asyncio import AsyncSession

from app.merchants.models import Merchant
from app.merchants.service import authenticate
from app.services import Services


async def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_session(state: State) -> AsyncGenerator[AsyncSession, None]:
    """One request, one transaction: committed before the response is sent, rolled back on error."""
    services: Services = state.services
    async with services.db.sessionmaker() as session:
        try:
            yield session
        except Exception:
            await session.rollback()
            raise
        else:
            await session.commit()


def bearer_token(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("missing bearer token: send 'Authorization: Bearer <token>'")
    return token.strip()


async def provide_merchant(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
) -> Merchant:
    merchant = await authenticate(db_session, bearer_token(request))
    if merchant is None:
        raise NotAuthorizedException("invalid or revoked merchant token")
    return merchant
