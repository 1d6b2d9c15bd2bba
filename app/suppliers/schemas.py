from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app.mail.address import EmailAddress, check_email

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Country = Annotated[str, Meta(pattern="^[A-Z]{2}$")]


class SupplierIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    connector: Annotated[str, Meta(description="portal or rest_json")]
    config: dict[str, Any] = {}
    contact_email: EmailAddress | None = None
    ship_from_country: Country | None = None
    shipping_rates: dict[str, dict[str, str]] = {}
    rate_limit_per_second: Annotated[float, Meta(gt=0, le=1000)] | None = None
    max_concurrency: Annotated[int, Meta(ge=1, le=1000)] | None = None

    def __post_init__(self) -> None:
        check_email("contact_email", self.contact_email)


class SupplierPatch(msgspec.Struct, forbid_unknown_fields=True):
    status: Annotated[str, Meta(pattern="^(active|inactive)$")] | None = None
    config: dict[str, Any] | None = None
    contact_email: EmailAddress | None = None
    ship_from_country: Country | None = None
    shipping_rates: dict[str, dict[str, str]] | None = None
    rate_limit_per_second: Annotated[float, Meta(gt=0, le=1000)] | None = None
    max_concurrency: Annotated[int, Meta(ge=1, le=1000)] | None = None

    def __post_init__(self) -> None:
        check_email("contact_email", self.contact_email)


class SupplierOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    connector: str
    status: str
    config: dict[str, Any]
    contact_email: str | None
    ship_from_country: str | None
    shipping_rates: dict[str, Any]
    rate_limit_per_second: float | None
    max_concurrency: int | None
    created_at: datetime


class SupplierCreated(msgspec.Struct):
    supplier: SupplierOut
    #: Shown once: null in an ``Idempotency-Key`` replay, with the reason in ``redacted``.
    api_key: str | None
    redacted: dict[str, str] | None = None


class ProductIn(msgspec.Struct, forbid_unknown_fields=True):
    supplier_id: uuid.UUID
    sku: Annotated[str, Meta(min_length=1, max_length=255)]
    unit_cost: Decimal
    currency: Annotated[str, Meta(pattern="^[A-Z]{3}$")]
    supplier_sku: str | None = None
    stock: Annotated[int, Meta(ge=0)] = 0
    lead_time_days: Annotated[int, Meta(ge=0)] = 0
    ships_to: list[str] = msgspec.field(default_factory=lambda: ["*"])
    priority: Annotated[int, Meta(ge=1)] = 1


class ProductOut(msgspec.Struct):
    id: uuid.UUID
    supplier_id: uuid.UUID
    sku: str
    supplier_sku: str
    unit_cost: Decimal
    currency: str
    stock: int
    lead_time_days: int
    ships_to: list[str]
    priority: int
    updated_at: datetime


class CatalogRow(msgspec.Struct):
    row: int
    status: str
    sku: str | None
    supplier: str | None
    reason: str | None


class CatalogReport(msgspec.Struct):
    created: int
    updated: int
    rejected: int
    rows: list[CatalogRow]
