from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app import limits
from app.codes import check_country, wire_amount
from app.inputs import Amount, CountryCode, Currency, Input, OptionalText, ShortText
from app.mail.address import EmailAddress, check_email

Name = Annotated[str, Meta(min_length=1, max_length=200)]
#: A country code or ``*`` (every country), checked in ``check_rates``.
RateKey = Annotated[str, Meta(min_length=1, max_length=2)]
#: ``{"first_item": "4.50", "additional_item": "1.00"}``, amounts checked in ``check_rates``.
Rate = Annotated[dict[Annotated[str, Meta(max_length=32)], Any], Meta(max_length=4)]
Rates = Annotated[dict[RateKey, Rate], Meta(max_length=limits.MAX_KEYS)]
#: Connector settings, checked by the connector (``validate_config``).
Config = Annotated[dict[Annotated[str, Meta(max_length=64)], Any], Meta(max_length=limits.MAX_KEYS)]
RatePerSecond = Annotated[float, Meta(ge=limits.MIN_RATE_PER_SECOND, le=limits.MAX_RATE_PER_SECOND)]
Concurrency = Annotated[int, Meta(ge=1, le=limits.MAX_CONCURRENCY)]


class SupplierIn(Input):
    name: Name
    connector: Annotated[str, Meta(max_length=32, description="portal or rest_json")]
    config: Config = {}
    contact_email: EmailAddress | None = None
    ship_from_country: CountryCode | None = None
    shipping_rates: Rates = {}
    rate_limit_per_second: RatePerSecond | None = None
    max_concurrency: Concurrency | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_email("contact_email", self.contact_email)
        check_country("ship_from_country", self.ship_from_country)


class SupplierPatch(Input):
    status: Annotated[str, Meta(pattern="^(active|inactive)$")] | None = None
    config: Config | None = None
    contact_email: EmailAddress | None = None
    ship_from_country: CountryCode | None = None
    shipping_rates: Rates | None = None
    rate_limit_per_second: RatePerSecond | None = None
    max_concurrency: Concurrency | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_email("contact_email", self.contact_email)
        check_country("ship_from_country", self.ship_from_country)


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


class ProductIn(Input):
    """One offer. Amounts, codes and ranges are checked by ``product_input``, shared with the
    catalog CSV import, so both refuse the same values with the same words."""

    supplier_id: uuid.UUID
    sku: ShortText
    unit_cost: Amount
    currency: Currency
    supplier_sku: OptionalText = None
    stock: Annotated[int, Meta(ge=0, le=limits.MAX_STOCK)] = 0
    lead_time_days: Annotated[int, Meta(ge=0, le=limits.MAX_LEAD_TIME_DAYS)] = 0
    ships_to: Annotated[
        list[Annotated[str, Meta(max_length=2)]],
        Meta(min_length=1, max_length=limits.MAX_LIST, description='country codes, or ["*"]'),
    ] = msgspec.field(default_factory=lambda: ["*"])
    priority: Annotated[int, Meta(ge=1, le=limits.MAX_PRIORITY)] = 1


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

    def __post_init__(self) -> None:
        self.unit_cost = wire_amount(self.unit_cost, self.currency)


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
