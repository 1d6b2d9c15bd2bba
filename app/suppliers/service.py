"""Suppliers and their catalog: creation with a one-time API key, encrypted connector settings,
catalog upserts and the catalog CSV import."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import limits
from app.api.pagination import Page, rows_page
from app.codes import EVERYWHERE, country_error, currency_error, is_country, is_currency
from app.csvfile import MAX_ROWS, OFF_LOOP_CHARS, read_csv
from app.db import insert_for, utcnow, uuid7
from app.errors import InvalidInput
from app.inputs import check_amount
from app.mail.address import is_email
from app.security import SecretBox, hash_token, new_token
from app.suppliers.models import Supplier, SupplierProduct
from connectors.base import ConnectorConfigError
from connectors.registry import CONNECTORS, connector_class

SUPPLIER_KEY_PREFIX = "dss"


class SupplierError(InvalidInput):
    """Refused for a reason the caller can act on; ``field`` (named first, as the checks
    read) is the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


def check_connector(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    if kind not in CONNECTORS:
        raise SupplierError(
            "connector", f"unknown kind {kind!r}; one of {', '.join(sorted(CONNECTORS))}"
        )
    if len(config) > limits.MAX_KEYS:
        raise SupplierError("config", f"at most {limits.MAX_KEYS} settings")
    try:
        return connector_class(kind).validate_config(config)
    except ConnectorConfigError as exc:
        raise SupplierError(f"config.{exc.field}", str(exc).split(": ", 1)[-1]) from exc


def encrypt_config(box: SecretBox, config: Mapping[str, Any]) -> bytes:
    return box.encrypt(json.dumps(config, sort_keys=True))


def decrypt_config(box: SecretBox, supplier: Supplier) -> dict[str, Any]:
    if not supplier.config_encrypted:
        return {}
    data = json.loads(box.decrypt(supplier.config_encrypted))
    return data if isinstance(data, dict) else {}


#: A secret as shown back to the merchant; sent back unchanged, it keeps its stored value.
MASKED = "********"


def public_config(box: SecretBox, supplier: Supplier) -> dict[str, Any]:
    """Settings as shown back to the merchant: secrets masked."""
    config = decrypt_config(box, supplier)
    secrets = (
        connector_class(supplier.connector).secret_fields()
        if supplier.connector in CONNECTORS
        else frozenset()
    )
    return {k: (MASKED if k in secrets and v else v) for k, v in config.items()}


async def get_supplier(
    session: AsyncSession, merchant_id: uuid.UUID, supplier_id: uuid.UUID
) -> Supplier | None:
    """The merchant's supplier; None for an unknown id or another merchant's supplier."""
    supplier: Supplier | None = await session.scalar(
        select(Supplier).where(Supplier.id == supplier_id, Supplier.merchant_id == merchant_id)
    )
    return supplier


async def list_suppliers(
    session: AsyncSession, merchant_id: uuid.UUID, *, cursor: str | None, limit: int
) -> Page[Supplier]:
    """The merchant's suppliers, oldest first."""
    return await rows_page(
        session,
        select(Supplier).where(Supplier.merchant_id == merchant_id),
        Supplier.created_at,
        Supplier.id,
        cursor=cursor,
        limit=limit,
        oldest_first=True,
    )


async def create_supplier(
    session: AsyncSession,
    box: SecretBox,
    merchant_id: uuid.UUID,
    *,
    name: str,
    connector: str,
    config: Mapping[str, Any] | None = None,
    contact_email: str | None = None,
    ship_from_country: str | None = None,
    shipping_rates: Mapping[str, Any] | None = None,
    rate_limit_per_second: float | None = None,
    max_concurrency: int | None = None,
) -> tuple[Supplier, str]:
    """Create a supplier and its API key (returned in clear, once; stored hashed)."""
    name = name.strip()
    if not name:
        raise SupplierError("name", "required")
    # The API checked these already; the CLI comes here directly.
    if len(name) > 200 or "\x00" in name:
        raise SupplierError("name", "at most 200 characters, no NUL")
    if contact_email is not None and not is_email(contact_email):
        raise SupplierError("contact_email", "expected one email address, like orders@example.com")
    if ship_from_country is not None:
        ship_from_country = ship_from_country.upper()
        if not is_country(ship_from_country):
            raise SupplierError("ship_from_country", country_error(ship_from_country))
    if rate_limit_per_second is not None and not (
        limits.MIN_RATE_PER_SECOND <= rate_limit_per_second <= limits.MAX_RATE_PER_SECOND
    ):
        raise SupplierError(
            "rate_limit_per_second",
            f"from {limits.MIN_RATE_PER_SECOND} to {limits.MAX_RATE_PER_SECOND} per second",
        )
    if max_concurrency is not None and not 1 <= max_concurrency <= limits.MAX_CONCURRENCY:
        raise SupplierError("max_concurrency", f"from 1 to {limits.MAX_CONCURRENCY}")
    checked = check_connector(connector, config or {})
    exists = await session.scalar(
        select(Supplier.id).where(Supplier.merchant_id == merchant_id, Supplier.name == name)
    )
    if exists is not None:
        raise SupplierError("name", f"a supplier named {name!r} already exists")
    key = new_token(SUPPLIER_KEY_PREFIX)
    supplier = Supplier(
        merchant_id=merchant_id,
        name=name,
        connector=connector,
        config_encrypted=encrypt_config(box, checked),
        contact_email=contact_email,
        ship_from_country=ship_from_country,
        status="active",
        api_key_hash=hash_token(key),
        shipping_rates=check_rates(shipping_rates or {}),
        rate_limit_per_second=rate_limit_per_second,
        max_concurrency=max_concurrency,
    )
    session.add(supplier)
    await session.flush()
    return supplier, key


def check_rates(rates: Mapping[str, Any]) -> dict[str, Any]:
    """``{country or *: {first_item, additional_item}}``, amounts as stored (strings)."""
    if len(rates) > limits.MAX_KEYS:
        raise SupplierError("shipping_rates", f"at most {limits.MAX_KEYS} countries")
    out: dict[str, Any] = {}
    for country, rate in rates.items():
        code = str(country).upper()
        if code != EVERYWHERE and not is_country(code):
            raise SupplierError("shipping_rates", f"{country_error(country)}, or *")
        if not isinstance(rate, Mapping):
            raise SupplierError(f"shipping_rates.{code}", "must be {first_item, additional_item}")
        unknown = sorted(str(k) for k in rate if k not in ("first_item", "additional_item"))
        if unknown:
            raise SupplierError(f"shipping_rates.{code}.{unknown[0]}", "unknown field")
        entry = {}
        for key in ("first_item", "additional_item"):
            where = f"shipping_rates.{code}.{key}"
            raw = rate.get(key, "0")
            if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
                raise SupplierError(where, f"not an amount: {raw!r}")
            amount = _amount(where, str(raw))
            entry[key] = str(amount)
        out[code] = entry
    return out


def _amount(field: str, raw: str) -> Decimal:
    """A money amount the database stores exactly, or a SupplierError naming ``field``."""
    try:
        amount = Decimal(raw.strip())
    except InvalidOperation as exc:
        raise SupplierError(field, f"not an amount: {raw!r}") from exc
    try:
        check_amount(field, amount)
    except ValueError as exc:
        raise SupplierError(field, str(exc).split(": ", 1)[-1]) from exc
    return amount


async def authenticate_supplier(session: AsyncSession, key: str) -> Supplier | None:
    supplier: Supplier | None = await session.scalar(
        select(Supplier).where(
            Supplier.api_key_hash == hash_token(key), Supplier.status == "active"
        )
    )
    return supplier


async def update_supplier(
    session: AsyncSession,
    box: SecretBox,
    merchant_id: uuid.UUID,
    supplier_id: uuid.UUID,
    *,
    status: str | None = None,
    config: Mapping[str, Any] | None = None,
    contact_email: str | None = None,
    ship_from_country: str | None = None,
    shipping_rates: Mapping[str, Any] | None = None,
    rate_limit_per_second: float | None = None,
    max_concurrency: int | None = None,
) -> Supplier | None:
    """Change what is given (None: unchanged). Masked secrets (``MASKED``) sent back keep their
    stored value. None if ``supplier_id`` is not the merchant's supplier."""
    supplier = await get_supplier(session, merchant_id, supplier_id)
    if supplier is None:
        return None
    if config is not None:
        stored = decrypt_config(box, supplier)
        merged = {k: (stored.get(k) if v == MASKED else v) for k, v in config.items()}
        checked = check_connector(supplier.connector, merged)
        supplier.config_encrypted = encrypt_config(box, checked)
    if shipping_rates is not None:
        supplier.shipping_rates = check_rates(shipping_rates)
    for attr, value in (
        ("status", status),
        ("contact_email", contact_email),
        ("ship_from_country", ship_from_country),
        ("rate_limit_per_second", rate_limit_per_second),
        ("max_concurrency", max_concurrency),
    ):
        if value is not None:
            setattr(supplier, attr, value)
    await session.flush()
    return supplier


async def rotate_key(
    session: AsyncSession, merchant_id: uuid.UUID, supplier_id: uuid.UUID
) -> tuple[Supplier, str] | None:
    """A new API key for the merchant's supplier (returned in clear, once; the old one stops
    working). None if ``supplier_id`` is not the merchant's supplier."""
    supplier = await get_supplier(session, merchant_id, supplier_id)
    if supplier is None:
        return None
    key = new_token(SUPPLIER_KEY_PREFIX)
    supplier.api_key_hash = hash_token(key)
    await session.flush()
    return supplier, key


# --------------------------------------------------------------------------- catalog

CATALOG_HEADER = (
    "sku",
    "supplier",
    "supplier_sku",
    "unit_cost",
    "currency",
    "stock",
    "lead_time_days",
    "ships_to",
    "priority",
)


@dataclass
class ProductInput:
    sku: str
    supplier_sku: str
    unit_cost: Decimal
    currency: str
    stock: int
    lead_time_days: int
    ships_to: list[str]
    priority: int


def parse_ships_to(value: str | Sequence[str]) -> list[str]:
    """Country codes (a list, or one string separated by spaces), or ``*`` for everywhere.
    Nothing at all is refused: an offer shipping nowhere is a mistake, not "everywhere"."""
    if isinstance(value, str) and len(value) > limits.MAX_LIST * 3:
        raise SupplierError("ships_to", f"at most {limits.MAX_LIST} countries")
    parts = value.split() if isinstance(value, str) else [str(v) for v in value]
    codes = [p.strip().upper() for p in parts if p.strip()]
    if not codes:
        raise SupplierError("ships_to", "ISO country codes separated by spaces, or *")
    if len(codes) > limits.MAX_LIST:
        raise SupplierError("ships_to", f"at most {limits.MAX_LIST} countries")
    for code in codes:
        if code != EVERYWHERE and not is_country(code):
            raise SupplierError("ships_to", country_error(code))
    return [EVERYWHERE] if EVERYWHERE in codes else sorted(set(codes))


def product_input(row: Mapping[str, Any]) -> ProductInput:
    """Validate one catalog row (CSV or JSON), naming the field at fault."""

    def text(key: str, limit: int = limits.MAX_SHORT_TEXT) -> str:
        value = str(row.get(key) or "").strip()
        if not value:
            raise SupplierError(key, "required")
        if len(value) > limit:
            raise SupplierError(key, f"at most {limit} characters")
        if "\x00" in value:
            raise SupplierError(key, "must not contain NUL characters")
        return value

    def integer(key: str, default: int, minimum: int, maximum: int) -> int:
        raw = str(row.get(key) if row.get(key) is not None else "").strip()
        if raw == "":
            return default
        if len(raw) > 20:  # int() of a megabyte of digits is slow, and out of range anyway
            raise SupplierError(key, f"must be from {minimum} to {maximum}")
        try:
            value = int(raw)
        except ValueError as exc:
            raise SupplierError(key, f"must be an integer, got {raw!r}") from exc
        if not minimum <= value <= maximum:
            raise SupplierError(key, f"must be from {minimum} to {maximum}, got {value}")
        return value

    cost = _amount("unit_cost", text("unit_cost", 64))
    currency = text("currency").upper()
    if not is_currency(currency):
        raise SupplierError("currency", currency_error(currency))
    ships_to = row.get("ships_to")
    return ProductInput(
        sku=text("sku"),
        supplier_sku=text("supplier_sku")
        if str(row.get("supplier_sku") or "").strip()
        else text("sku"),
        unit_cost=cost,
        currency=currency,
        stock=integer("stock", 0, 0, limits.MAX_STOCK),
        lead_time_days=integer("lead_time_days", 0, 0, limits.MAX_LEAD_TIME_DAYS),
        # Absent: everywhere (the default); given but empty: refused by parse_ships_to.
        ships_to=parse_ships_to(EVERYWHERE if ships_to is None else ships_to),
        priority=integer("priority", 1, 1, limits.MAX_PRIORITY),
    )


async def upsert_product(
    session: AsyncSession, merchant_id: uuid.UUID, supplier_id: uuid.UUID, data: ProductInput
) -> tuple[SupplierProduct, bool]:
    """Insert or update on (supplier, sku); returns (row, created)."""
    product = await session.scalar(
        select(SupplierProduct).where(
            SupplierProduct.supplier_id == supplier_id, SupplierProduct.sku == data.sku
        )
    )
    created = product is None
    if product is None:
        product = SupplierProduct(merchant_id=merchant_id, supplier_id=supplier_id, sku=data.sku)
        session.add(product)
    product.supplier_sku = data.supplier_sku
    product.unit_cost = data.unit_cost
    product.currency = data.currency
    product.stock = data.stock
    product.lead_time_days = data.lead_time_days
    product.ships_to = data.ships_to
    product.priority = data.priority
    await session.flush()
    return product, created


async def put_product(
    session: AsyncSession, merchant_id: uuid.UUID, supplier_id: uuid.UUID, row: Mapping[str, Any]
) -> SupplierProduct | None:
    """Add or update one offer (``row`` checked by ``product_input``). None if ``supplier_id`` is
    not the merchant's supplier."""
    if await get_supplier(session, merchant_id, supplier_id) is None:
        return None
    product, _ = await upsert_product(session, merchant_id, supplier_id, product_input(row))
    return product


async def list_products(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    *,
    supplier_id: uuid.UUID | None,
    sku: str | None,
    cursor: str | None,
    limit: int,
) -> Page[SupplierProduct]:
    """The merchant's catalog, oldest first: of one supplier, of one SKU, or all of it."""
    query = select(SupplierProduct).where(SupplierProduct.merchant_id == merchant_id)
    if supplier_id is not None:
        query = query.where(SupplierProduct.supplier_id == supplier_id)
    if sku:
        query = query.where(SupplierProduct.sku == sku)
    return await rows_page(
        session,
        query,
        SupplierProduct.created_at,
        SupplierProduct.id,
        cursor=cursor,
        limit=limit,
        oldest_first=True,
    )


async def delete_product(
    session: AsyncSession, merchant_id: uuid.UUID, product_id: uuid.UUID
) -> bool:
    """Remove one of the merchant's offers; False if it has none with this id."""
    product = await session.scalar(
        select(SupplierProduct).where(
            SupplierProduct.id == product_id, SupplierProduct.merchant_id == merchant_id
        )
    )
    if product is None:
        return False
    await session.delete(product)
    return True


@dataclass
class CatalogRowResult:
    row: int
    status: str  # created | updated | rejected
    sku: str | None = None
    supplier: str | None = None
    reason: str | None = None


#: Most data rows of one catalog file.
MAX_CATALOG_ROWS = MAX_ROWS
#: Rows written per statement and per transaction: two statements each (find the existing
#: keys, upsert), so the write lock is held for a few milliseconds at a time.
CATALOG_CHUNK = 250
#: What a re-imported row changes: every column of the file but the key (sku, supplier).
_UPDATED_COLUMNS = (*(c for c in CATALOG_HEADER if c not in ("sku", "supplier")), "updated_at")

#: A valid row: its report entry (status set when stored), the supplier's id and the values.
ValidRow = tuple[CatalogRowResult, uuid.UUID, ProductInput]


def check_catalog(
    text: str, suppliers: Mapping[str, tuple[uuid.UUID, str]]
) -> tuple[list[CatalogRowResult], list[ValidRow]]:
    """Parse and validate a catalog file (pure: runs off the event loop for big files).

    ``suppliers`` maps the merchant's supplier names, lower-case, to (id, name). Returns every
    row's report entry, in row order, and the valid rows to store.
    """
    table = read_csv(text, required=CATALOG_HEADER, max_rows=MAX_CATALOG_ROWS)
    results = [CatalogRowResult(n, "rejected", reason=reason) for n, reason in table.broken]
    valid: list[ValidRow] = []
    for number, row in table.rows:
        name = row["supplier"].strip()
        sku = row["sku"].strip() or None
        supplier = suppliers.get(name.lower())
        if supplier is None:
            results.append(
                CatalogRowResult(
                    number, "rejected", sku, name, f"supplier: no supplier named {name!r}"
                )
            )
            continue
        try:
            data = product_input(row)
        except SupplierError as exc:
            results.append(CatalogRowResult(number, "rejected", sku, name, str(exc)))
            continue
        result = CatalogRowResult(number, "created", data.sku, supplier[1])
        results.append(result)
        valid.append((result, supplier[0], data))
    results.sort(key=lambda r: r.row)
    return results, valid


async def import_catalog(
    session: AsyncSession, merchant_id: uuid.UUID, text: str
) -> list[CatalogRowResult]:
    """Upsert a catalog file on (supplier, sku); a report entry per row.

    Rows are stored ``CATALOG_CHUNK`` at a time, each chunk committed on ``session`` (one
    transaction for the file would hold SQLite's write lock for all of it). A failure part-way
    keeps the chunks already stored; importing the file again is harmless (an upsert).
    """
    suppliers = {
        name.lower(): (supplier_id, name)
        for supplier_id, name in (
            await session.execute(
                select(Supplier.id, Supplier.name).where(Supplier.merchant_id == merchant_id)
            )
        ).all()
    }
    # End that read before the file is checked: on SQLite every transaction holds the write lock.
    await session.commit()
    if len(text) > OFF_LOOP_CHARS:
        results, valid = await asyncio.to_thread(check_catalog, text, suppliers)
    else:
        results, valid = check_catalog(text, suppliers)
    for start in range(0, len(valid), CATALOG_CHUNK):
        await _upsert_chunk(session, merchant_id, valid[start : start + CATALOG_CHUNK])
        await session.commit()
    return results


async def _upsert_chunk(
    session: AsyncSession, merchant_id: uuid.UUID, chunk: list[ValidRow]
) -> None:
    """Two statements: the keys that exist already, then one INSERT ... ON CONFLICT DO UPDATE
    for all the rows."""
    supplier_ids = {supplier_id for _, supplier_id, _ in chunk}
    skus = {data.sku for _, _, data in chunk}
    existing = {
        (supplier_id, sku)
        for supplier_id, sku in (
            await session.execute(
                select(SupplierProduct.supplier_id, SupplierProduct.sku).where(
                    SupplierProduct.merchant_id == merchant_id,
                    SupplierProduct.supplier_id.in_(supplier_ids),
                    SupplierProduct.sku.in_(skus),
                )
            )
        ).all()
    }
    now = utcnow()
    rows: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
    for result, supplier_id, data in chunk:
        key = (supplier_id, data.sku)
        # A key given twice in the file: the first row creates it, the later ones update it
        # (as row by row would); one statement cannot touch a row twice, so the last one wins.
        result.status = "updated" if key in existing or key in rows else "created"
        rows[key] = {
            "id": uuid7(),
            "merchant_id": merchant_id,
            "supplier_id": supplier_id,
            "sku": data.sku,
            "supplier_sku": data.supplier_sku,
            "unit_cost": data.unit_cost,
            "currency": data.currency,
            "stock": data.stock,
            "lead_time_days": data.lead_time_days,
            "ships_to": data.ships_to,
            "priority": data.priority,
            "created_at": now,
            "updated_at": now,
        }
    insert = insert_for(session)
    statement = insert(cast(Table, SupplierProduct.__table__))
    statement = statement.on_conflict_do_update(
        index_elements=["supplier_id", "sku"],
        set_={column: statement.excluded[column] for column in _UPDATED_COLUMNS},
    )
    # One statement executed for all the rows (the driver's executemany), compiled once and
    # cached: a multi-VALUES statement of thousands of parameters took longer to compile than
    # to run.
    await session.execute(statement, list(rows.values()))


async def report_inventory(
    session: AsyncSession,
    supplier_id: uuid.UUID,
    rows: Sequence[tuple[str, int, Decimal | None]],
) -> tuple[int, list[str]]:
    """A supplier's stock (and optionally unit cost) by SKU, its own or the merchant's.

    Two statements at most whatever the number of rows (one executemany with the cost, one
    without). Returns how many products changed and the SKUs that match none.
    """
    products = {
        key: pid
        for pid, sku, supplier_sku in (
            await session.execute(
                select(SupplierProduct.id, SupplierProduct.sku, SupplierProduct.supplier_sku).where(
                    SupplierProduct.supplier_id == supplier_id
                )
            )
        ).all()
        for key in (supplier_sku, sku)
    }
    unknown: list[str] = []
    # Several rows for one product (by either SKU): the last stock and the last cost given
    # win, whatever the order of the two statements below.
    merged: dict[uuid.UUID, dict[str, Any]] = {}
    for sku, quantity, unit_cost in rows:
        pid = products.get(sku)
        if pid is None:
            unknown.append(sku)
            continue
        values: dict[str, Any] = {"b_id": pid, "stock": quantity}
        if unit_cost is not None:
            values["unit_cost"] = unit_cost
        merged.setdefault(pid, {}).update(values)
    updates = list(merged.values())
    with_cost = [u for u in updates if "unit_cost" in u]
    stock_only = [u for u in updates if "unit_cost" not in u]
    table = cast(Table, SupplierProduct.__table__)
    now = utcnow()
    if with_cost:
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(stock=bindparam("stock"), unit_cost=bindparam("unit_cost"), updated_at=now),
            with_cost,
        )
    if stock_only:
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(stock=bindparam("stock"), updated_at=now),
            stock_only,
        )
    return len(updates), unknown
