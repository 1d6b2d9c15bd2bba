"""CSV import of orders: one row per order line, rows grouped into orders by ``reference``.

Every row gets a verdict in the report. An order is all or nothing: if one of its rows is bad,
none of its rows is imported, and each bad row says why. Re-importing a file is harmless:
orders whose reference already exists are reported as ``duplicate``.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections import OrderedDict
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.orders.models import OrderSource
from app.orders.schemas import ImportReport, ImportRow, OrderIn
from app.orders.service import create_order

REQUIRED_COLUMNS = (
    "reference",
    "currency",
    "name",
    "address1",
    "city",
    "country_code",
    "sku",
    "quantity",
    "price",
)
OPTIONAL_COLUMNS = (
    "email",
    "financial_status",
    "address2",
    "company",
    "province_code",
    "zip",
    "phone",
    "shipping_method",
    "shipping_price",
    "tax",
    "title",
    "note",
)
HEADER = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
MAX_ROWS = 10_000


class CsvFormatError(ValueError):
    pass


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def parse_rows(text: str) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise CsvFormatError("empty file: expected a header row")
    fields = [f.strip().lower() for f in reader.fieldnames]
    missing = [c for c in REQUIRED_COLUMNS if c not in fields]
    if missing:
        raise CsvFormatError(
            f"missing column(s): {', '.join(missing)}; expected header: {','.join(HEADER)}"
        )
    unknown = [f for f in fields if f not in HEADER]
    if unknown:
        raise CsvFormatError(f"unknown column(s): {', '.join(unknown)}")
    reader.fieldnames = fields
    rows = []
    for number, row in enumerate(reader, start=2):  # row 1 is the header
        if number - 1 > MAX_ROWS:
            raise CsvFormatError(f"too many rows: at most {MAX_ROWS} per file")
        if None in row:
            raise CsvFormatError(f"row {number}: more values than columns")
        if not any((v or "").strip() for v in row.values()):
            continue
        rows.append((number, {k: (v or "") for k, v in row.items()}))
    return rows


def _order_in(rows: list[tuple[int, dict[str, str]]]) -> OrderIn:
    first = rows[0][1]
    payload: dict[str, Any] = {
        "reference": _blank(first.get("reference")),
        "currency": (_blank(first.get("currency")) or "").upper(),
        "email": _blank(first.get("email")),
        "financial_status": _blank(first.get("financial_status")) or "paid",
        "shipping_method": _blank(first.get("shipping_method")),
        "note": _blank(first.get("note")),
        "shipping_price": _blank(first.get("shipping_price")) or "0",
        "tax": _blank(first.get("tax")) or "0",
        "shipping_address": {
            k: v
            for k, v in {
                "name": _blank(first.get("name")),
                "address1": _blank(first.get("address1")),
                "address2": _blank(first.get("address2")),
                "company": _blank(first.get("company")),
                "city": _blank(first.get("city")),
                "province_code": _blank(first.get("province_code")),
                "zip": _blank(first.get("zip")),
                "country_code": (_blank(first.get("country_code")) or "").upper() or None,
                "phone": _blank(first.get("phone")),
            }.items()
            if v is not None
        },
        "lines": [
            {
                "sku": _blank(r.get("sku")),
                "quantity": _int(r.get("quantity")),
                "price": _blank(r.get("price")),
                "title": _blank(r.get("title")),
            }
            for _, r in rows
        ],
    }
    return msgspec.convert(payload, OrderIn, strict=False)


def _int(value: str | None) -> int | str | None:
    text = _blank(value)
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def _row_problem(row: dict[str, str]) -> str | None:
    """Check one line row on its own so the report can point at the exact row."""
    if not _blank(row.get("reference")):
        return "reference: required"
    if not _blank(row.get("sku")):
        return "sku: required"
    qty = _int(row.get("quantity"))
    if not isinstance(qty, int) or qty <= 0:
        return f"quantity: must be a positive integer, got {row.get('quantity')!r}"
    try:
        price = Decimal(_blank(row.get("price")) or "x")
    except InvalidOperation:
        price = Decimal("NaN")
    if not price.is_finite() or price < 0:
        return f"price: must be a non-negative amount, got {row.get('price')!r}"
    return None


async def import_orders(session: AsyncSession, merchant_id: uuid.UUID, text: str) -> ImportReport:
    rows = parse_rows(text)
    groups: OrderedDict[str, list[tuple[int, dict[str, str]]]] = OrderedDict()
    report: list[ImportRow] = []
    for number, row in rows:
        problem = _row_problem(row)
        if problem and not _blank(row.get("reference")):
            report.append(ImportRow(row=number, status="rejected", reason=problem))
            continue
        groups.setdefault(row["reference"].strip(), []).append((number, row))

    for reference, group in groups.items():
        problems = {n: p for n, r in group if (p := _row_problem(r))}
        if not problems:
            try:
                order_in = _order_in(group)
            except msgspec.ValidationError as exc:
                problems = {group[0][0]: str(exc).replace("$.", "")}
        if problems:
            for n, _ in group:
                reason = problems.get(n) or "another row of this order was rejected"
                report.append(
                    ImportRow(row=n, status="rejected", reference=reference, reason=reason)
                )
            continue
        intake = await create_order(session, merchant_id, order_in.to_draft(OrderSource.CSV))
        status = "created" if intake.created else "duplicate"
        for n, _ in group:
            report.append(
                ImportRow(row=n, status=status, reference=reference, order_id=intake.order.id)
            )
    report.sort(key=lambda r: r.row)
    return ImportReport(
        created=len({r.reference for r in report if r.status == "created"}),
        duplicate=len({r.reference for r in report if r.status == "duplicate"}),
        rejected=sum(1 for r in report if r.status == "rejected"),
        rows=report,
    )
