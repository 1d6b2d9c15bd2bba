"""CSV import of orders: one row per order line, rows grouped into orders by ``reference``.

The header (case-insensitive, any column order; blank column names are ignored)::

    reference,currency,name,address1,city,country_code,sku,quantity,price        (required)
    email,financial_status,address2,company,province_code,zip,phone,
    shipping_method,shipping_price,tax,title,note                                 (optional)

``sku``, ``quantity``, ``price`` and ``title`` belong to the row's line; every other column
belongs to the order and may be repeated on each of its rows or given once (a different value on
another row of the same order is an error, never silently dropped).

Every row gets a verdict in the report, numbered as a spreadsheet numbers it (the header is row
1, blank rows count). An order is all or nothing: if one of its rows is bad, none of its rows is
imported; the bad row says why and its sibling rows say which row was rejected. Re-importing a
file is harmless: orders whose reference already exists are reported as ``duplicate``. The
report's ``created``, ``duplicate`` and ``rejected`` count orders (a row without a reference
counts as one rejected order).
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app import limits
from app.codes import is_currency
from app.inputs import check_amount
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
LINE_COLUMNS = ("sku", "quantity", "price", "title")
ORDER_COLUMNS = tuple(c for c in HEADER if c not in LINE_COLUMNS)
#: Columns compared case-insensitively (and stored upper-case).
_UPPER = ("currency", "country_code")
MAX_ROWS = limits.MAX_ROWS
MAX_QUANTITY = limits.MAX_LINE_QUANTITY
_DIGITS = re.compile(r"^[0-9]+$")
_MSGSPEC_ERROR = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_LINE_PATH = re.compile(r"^lines\[(?P<index>\d+)\]\.?(?P<rest>.*)$")
_MISSING_FIELD = re.compile(r"^Object missing required field `([^`]+)`$")
_FIELD_PREFIX = re.compile(r"^([a-z_]+): ")

Row = tuple[int, dict[str, str]]


class CsvFormatError(ValueError):
    """The file as a whole cannot be read (HTTP 400); ``field`` names the culprit."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__(message)
        self.field = field


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _value(row: dict[str, str], column: str) -> str | None:
    value = _blank(row.get(column))
    return value.upper() if value is not None and column in _UPPER else value


def parse_rows(text: str) -> tuple[list[Row], list[tuple[int, str]]]:
    """The data rows with their spreadsheet row numbers, and rows unreadable on their own."""
    if "\x00" in text:
        raise CsvFormatError("file: contains NUL characters; is it really a CSV text file?")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise CsvFormatError(f"empty file: expected a header row: {','.join(HEADER)}")
        fields = [h.strip().lower() for h in header]
        named = [f for f in fields if f]
        duplicated = sorted({f for f in named if named.count(f) > 1})
        if duplicated:
            raise CsvFormatError(
                f"duplicate column(s): {', '.join(duplicated)}", field=duplicated[0]
            )
        missing = [c for c in REQUIRED_COLUMNS if c not in fields]
        if missing:
            raise CsvFormatError(
                f"{', '.join(missing)}: missing column(s); expected header: {','.join(HEADER)}",
                field=missing[0],
            )
        unknown = [f for f in named if f not in HEADER]
        if unknown:
            raise CsvFormatError(
                f"{', '.join(unknown)}: unknown column(s); expected header: {','.join(HEADER)}",
                field=unknown[0],
            )
        rows: list[Row] = []
        broken: list[tuple[int, str]] = []
        for number, values in enumerate(reader, start=2):  # row 1 is the header
            if not any(v.strip() for v in values):
                continue
            if len(rows) + len(broken) >= MAX_ROWS:
                raise CsvFormatError(f"too many rows: at most {MAX_ROWS} per file")
            extra = values[len(fields) :]
            if any(v.strip() for v in extra):
                broken.append(
                    (number, f"row has {len(values)} values but the header has {len(fields)}")
                )
                continue
            row = {f: v for f, v in zip(fields, values, strict=False) if f}
            rows.append((number, {f: row.get(f, "") for f in HEADER}))
    except csv.Error as exc:
        raise CsvFormatError(f"row {reader.line_num}: not valid CSV ({exc})") from exc
    return rows, broken


def _int(value: str | None) -> int | None:
    text = _blank(value)
    # Digits only, and not a megabyte of them (out of range anyway, and slow to convert).
    if text is None or len(text) > 18 or not _DIGITS.match(text):
        return None
    return int(text)


def _row_problem(row: dict[str, str]) -> str | None:
    """Check one line row on its own so the report can point at the exact row."""
    if not _blank(row.get("reference")):
        return "reference: required"
    sku = _blank(row.get("sku"))
    if not sku:
        return "sku: required"
    if len(sku) > limits.MAX_SHORT_TEXT:
        return f"sku: at most {limits.MAX_SHORT_TEXT} characters"
    qty = _int(row.get("quantity"))
    if qty is None or not 0 < qty <= MAX_QUANTITY:
        return (
            f"quantity: must be a whole number from 1 to {MAX_QUANTITY}, "
            f"got {row.get('quantity', '')!r}"
        )
    currency = _value(row, "currency")
    try:
        check_amount(
            "price",
            Decimal(_blank(row.get("price")) or "NaN"),
            # Its minor units when the currency is right (a wrong one is reported by OrderIn).
            currency if is_currency(currency) else None,
        )
    except (InvalidOperation, ValueError) as exc:
        message = str(exc) if isinstance(exc, ValueError) and str(exc) else ""
        return message or f"price: must be a non-negative amount, got {row.get('price', '')!r}"
    if len(_blank(row.get("title")) or "") > limits.MAX_TITLE:
        return f"title: at most {limits.MAX_TITLE} characters"
    return None


def _merge(group: list[Row]) -> tuple[dict[str, str | None], dict[int, str]]:
    """The order's columns (first value given on any row) and rows that contradict them."""
    merged: dict[str, str | None] = dict.fromkeys(ORDER_COLUMNS)
    seen_on: dict[str, int] = {}
    conflicts: dict[int, str] = {}
    for number, row in group:
        for column in ORDER_COLUMNS:
            value = _value(row, column)
            if value is None:
                continue
            if merged[column] is None:
                merged[column], seen_on[column] = value, number
            elif merged[column] != value and number not in conflicts:
                conflicts[number] = (
                    f"{column}: {value!r} differs from {merged[column]!r} "
                    f"on row {seen_on[column]} of the same order"
                )
    return merged, conflicts


def _order_in(merged: dict[str, str | None], group: list[Row]) -> OrderIn:
    address = {
        "name": merged["name"],
        "address1": merged["address1"],
        "address2": merged["address2"],
        "company": merged["company"],
        "city": merged["city"],
        "province_code": merged["province_code"],
        "zip": merged["zip"],
        "country_code": merged["country_code"],
        "phone": merged["phone"],
    }
    payload: dict[str, Any] = {
        "reference": merged["reference"],
        "currency": merged["currency"],
        "email": merged["email"],
        "financial_status": merged["financial_status"] or "paid",
        "shipping_method": merged["shipping_method"],
        "note": merged["note"],
        "shipping_price": merged["shipping_price"] or "0",
        "tax": merged["tax"] or "0",
        "shipping_address": {k: v for k, v in address.items() if v is not None},
        "lines": [
            {
                "sku": _blank(r.get("sku")),
                "quantity": _int(r.get("quantity")),
                "price": _blank(r.get("price")),
                "title": _blank(r.get("title")),
            }
            for _, r in group
        ],
    }
    return msgspec.convert(
        {k: v for k, v in payload.items() if v is not None}, OrderIn, strict=False
    )


def _order_problem(exc: msgspec.ValidationError, group: list[Row]) -> tuple[int, str]:
    """Which row an order-level validation error belongs to, and the reason naming the column."""
    match = _MSGSPEC_ERROR.match(str(exc))
    message = match.group("message") if match else str(exc)
    path = (match.group("path") if match else None) or ""
    number = group[0][0]
    if line := _LINE_PATH.match(path):
        index = int(line.group("index"))
        number = group[index][0] if index < len(group) else number
        path = line.group("rest")
    if missing := _MISSING_FIELD.match(message):
        return number, f"{missing.group(1)}: required"
    named = _FIELD_PREFIX.match(message)  # names its field already ("email: expected ...")
    if not named and not path:
        return number, message
    column = named.group(1) if named else path.removeprefix("shipping_address.")
    for n, row in group:  # point at the row that carries the offending value
        if _blank(row.get(column)):
            number = n
            break
    return number, message if named else f"{column}: {message}"


async def import_orders(session: AsyncSession, merchant_id: uuid.UUID, text: str) -> ImportReport:
    rows, broken = parse_rows(text)
    report: list[ImportRow] = [
        ImportRow(row=number, status="rejected", reason=reason) for number, reason in broken
    ]
    rejected_orders = len(broken)
    groups: dict[str, list[Row]] = {}
    for number, row in rows:
        reference = _blank(row.get("reference"))
        if reference is None:
            report.append(ImportRow(row=number, status="rejected", reason="reference: required"))
            rejected_orders += 1
            continue
        groups.setdefault(reference, []).append((number, row))

    created: set[str] = set()
    duplicate: set[str] = set()
    for reference, group in groups.items():
        problems = {n: p for n, r in group if (p := _row_problem(r))}
        merged, conflicts = _merge(group)
        for n, conflict in conflicts.items():
            problems.setdefault(n, conflict)
        order_in: OrderIn | None = None
        if not problems:
            try:
                order_in = _order_in(merged, group)
            except msgspec.ValidationError as exc:
                n, reason = _order_problem(exc, group)
                problems[n] = reason
        if order_in is None:
            rejected_orders += 1
            bad_rows = ", ".join(str(n) for n in sorted(problems))
            sibling = f"another row of this order was rejected (row {bad_rows})"
            for n, _ in group:
                report.append(
                    ImportRow(
                        row=n,
                        status="rejected",
                        reference=reference,
                        reason=problems.get(n, sibling),
                    )
                )
            continue
        intake = await create_order(session, merchant_id, order_in.to_draft(OrderSource.CSV))
        status = "created" if intake.created else "duplicate"
        (created if intake.created else duplicate).add(reference)
        for n, _ in group:
            report.append(
                ImportRow(row=n, status=status, reference=reference, order_id=intake.order.id)
            )
    report.sort(key=lambda r: r.row)
    return ImportReport(
        created=len(created), duplicate=len(duplicate), rejected=rejected_orders, rows=report
    )
