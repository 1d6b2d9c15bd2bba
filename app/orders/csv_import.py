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

The file is read by :mod:`app.csvfile` (at most 10,000 data rows, 10,000 characters a field);
a big file is parsed and validated on a worker thread, and its orders are created in short
transactions (see :func:`import_orders`), so an import never stalls other merchants.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app import limits
from app.codes import is_currency
from app.csvfile import MAX_ROWS, OFF_LOOP_CHARS, Row, read_csv
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
MAX_QUANTITY = limits.MAX_LINE_QUANTITY
#: A transaction of the import is committed after this many orders or seconds, whichever first.
BATCH_ORDERS = 100
BATCH_SECONDS = 0.1
_DIGITS = re.compile(r"^[0-9]+$")
_MSGSPEC_ERROR = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_LINE_PATH = re.compile(r"^lines\[(?P<index>\d+)\]\.?(?P<rest>.*)$")
_MISSING_FIELD = re.compile(r"^Object missing required field `([^`]+)`$")
_FIELD_PREFIX = re.compile(r"^([a-z_]+): ")


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _value(row: dict[str, str], column: str) -> str | None:
    value = _blank(row.get(column))
    return value.upper() if value is not None and column in _UPPER else value


def parse_rows(text: str) -> tuple[list[Row], list[tuple[int, str]]]:
    """The data rows with their spreadsheet row numbers, and rows unreadable on their own."""
    table = read_csv(text, required=REQUIRED_COLUMNS, optional=OPTIONAL_COLUMNS, max_rows=MAX_ROWS)
    return table.rows, table.broken


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


@dataclass
class ImportPlan:
    """What a file asks for, decided before anything is stored."""

    #: Verdicts already known: rows rejected on their own or with their order.
    report: list[ImportRow] = field(default_factory=list)
    rejected_orders: int = 0
    #: Orders to create: (reference, row numbers, validated order).
    orders: list[tuple[str, list[int], OrderIn]] = field(default_factory=list)


def plan_import(text: str) -> ImportPlan:
    """Parse and validate the whole file (pure: runs off the event loop for big files)."""
    rows, broken = parse_rows(text)
    plan = ImportPlan(
        report=[
            ImportRow(row=number, status="rejected", reason=reason) for number, reason in broken
        ],
        rejected_orders=len(broken),
    )
    groups: dict[str, list[Row]] = {}
    for number, row in rows:
        reference = _blank(row.get("reference"))
        if reference is None:
            plan.report.append(
                ImportRow(row=number, status="rejected", reason="reference: required")
            )
            plan.rejected_orders += 1
            continue
        groups.setdefault(reference, []).append((number, row))

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
            plan.rejected_orders += 1
            bad_rows = ", ".join(str(n) for n in sorted(problems))
            sibling = f"another row of this order was rejected (row {bad_rows})"
            for n, _ in group:
                plan.report.append(
                    ImportRow(
                        row=n,
                        status="rejected",
                        reference=reference,
                        reason=problems.get(n, sibling),
                    )
                )
            continue
        plan.orders.append((reference, [n for n, _ in group], order_in))
    return plan


async def import_orders(session: AsyncSession, merchant_id: uuid.UUID, text: str) -> ImportReport:
    """Create the file's orders, committing ``session`` every ``BATCH_SECONDS`` or
    ``BATCH_ORDERS``.

    One transaction for the whole file would hold SQLite's write lock (the whole database) for
    the length of the import; short transactions let every other writer in between (the writer
    lock is first come, first served). A failure part-way keeps the batches already committed:
    importing the file again is harmless (those orders come back as ``duplicate``).
    """
    if len(text) > OFF_LOOP_CHARS:
        plan = await asyncio.to_thread(plan_import, text)
    else:
        plan = plan_import(text)
    report = plan.report
    created: set[str] = set()
    duplicate: set[str] = set()
    batch_started, in_batch = time.monotonic(), 0
    for reference, numbers, order_in in plan.orders:
        intake = await create_order(session, merchant_id, order_in.to_draft(OrderSource.CSV))
        status = "created" if intake.created else "duplicate"
        (created if intake.created else duplicate).add(reference)
        order_id = intake.order.id
        report.extend(
            ImportRow(row=n, status=status, reference=reference, order_id=order_id) for n in numbers
        )
        in_batch += 1
        if in_batch >= BATCH_ORDERS or time.monotonic() - batch_started >= BATCH_SECONDS:
            await session.commit()
            session.expunge_all()  # the report keeps ids only; let the objects go
            batch_started, in_batch = time.monotonic(), 0
    report.sort(key=lambda r: r.row)
    return ImportReport(
        created=len(created), duplicate=len(duplicate), rejected=plan.rejected_orders, rows=report
    )
