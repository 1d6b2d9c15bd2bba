"""Merchant API: the exceptions queue under ``/api/v1/exceptions``."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery

from app.api.deps import provide_merchant
from app.api.openapi import MERCHANT_SECURITY, operation
from app.api.pagination import DEFAULT_LIMIT, Page
from app.db import DbSession
from app.exceptions import service
from app.exceptions.schemas import ExceptionOut
from app.merchants.models import Merchant


class ExceptionController(Controller):
    path = "/api/v1/exceptions"
    tags = ["exceptions"]
    security = MERCHANT_SECURITY
    dependencies = {"merchant": Provide(provide_merchant)}

    @get(
        "/",
        summary="The exceptions queue: everything that needs a person, with the reason",
        **operation(
            "listExceptions",
            "Everything that needs a person (an invalid address, an unknown SKU, a supplier that "
            "keeps failing...), with the reason; resolved ones with `include_resolved=true`.",
            api="merchant",
        ),
    )
    async def list_exceptions(
        self,
        db_session: NamedDependency[DbSession],
        merchant: NamedDependency[Merchant],
        include_resolved: FromQuery[bool] = False,
        cursor: FromQuery[str | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
    ) -> Page[ExceptionOut]:
        page = await service.list_exceptions(
            db_session, merchant.id, include_resolved=include_resolved, cursor=cursor, limit=limit
        )
        return page.map(ExceptionOut.of)
