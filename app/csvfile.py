"""The one CSV reader of the API (orders import, catalog import).

A file is read whole and checked before anything is stored: the header (case-insensitive, any
column order, blank column names ignored) must hold every required column, no unknown one and
none twice; NUL is refused (PostgreSQL cannot store it); blank rows are skipped but still
counted, so row numbers are those a spreadsheet shows (the header is row 1); at most
``max_rows`` data rows and ``MAX_FIELD`` characters per field. Anything else wrong with the file
as a whole is a :class:`CsvFormatError` (HTTP 400 naming the column or the row), never a
``csv.Error``. Rows with more values than the header are returned apart, for the caller to
report on their own.

The text is expected decoded already (``utf-8-sig``, so a spreadsheet's BOM is dropped); a BOM
left in the text is dropped here too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from app import limits
from app.errors import InvalidInput

#: Longest field accepted, in characters (the longest free text we store, an order's note).
MAX_FIELD = limits.MAX_LONG_TEXT
#: Most data rows one file may hold (both imports).
MAX_ROWS = limits.MAX_ROWS
#: Files longer than this (characters) are parsed and validated on a worker thread.
OFF_LOOP_CHARS = 64_000

# The csv module's own limit (131,072 characters by default) raises a csv.Error that cannot
# tell which column was too long; lift it (process-wide: this is the only CSV reader) and check
# each field against MAX_FIELD instead, so the error names the row and the column. A field can
# never be longer than the request body, which the server bounds.
csv.field_size_limit(2**31 - 1)

Row = tuple[int, dict[str, str]]


class CsvFormatError(InvalidInput):
    """The file as a whole cannot be read (HTTP 400); ``field`` names the culprit, and the
    message starts with it already."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__(message)
        self.field = field


@dataclass
class CsvTable:
    #: Data rows with their spreadsheet row numbers, every known column present ("" if absent).
    rows: list[Row] = field(default_factory=list)
    #: Rows that cannot be read on their own (more values than the header), with the reason.
    broken: list[tuple[int, str]] = field(default_factory=list)


def read_csv(
    text: str,
    *,
    required: Sequence[str],
    optional: Sequence[str] = (),
    max_rows: int = MAX_ROWS,
    max_field: int = MAX_FIELD,
) -> CsvTable:
    """Read ``text`` as a CSV file with this header; see the module docstring for the rules."""
    header_names = (*required, *optional)
    expected = ",".join(header_names)
    if "\x00" in text:
        raise CsvFormatError("file: contains NUL characters; is it really a CSV text file?")
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    table = CsvTable()
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise CsvFormatError(f"empty file: expected a header row: {expected}")
        fields = [h.strip().lower() for h in header]
        for index, name in enumerate(fields):
            _check_length(header[index], 1, name or f"column {index + 1}", max_field)
        named = [f for f in fields if f]
        duplicated = sorted({f for f in named if named.count(f) > 1})
        if duplicated:
            raise CsvFormatError(
                f"duplicate column(s): {', '.join(duplicated)}", field=duplicated[0]
            )
        missing = [c for c in required if c not in fields]
        if missing:
            raise CsvFormatError(
                f"{', '.join(missing)}: missing column(s); expected header: {expected}",
                field=missing[0],
            )
        unknown = [f for f in named if f not in header_names]
        if unknown:
            raise CsvFormatError(
                f"{', '.join(unknown)}: unknown column(s); expected header: {expected}",
                field=unknown[0],
            )
        for number, values in enumerate(reader, start=2):  # row 1 is the header
            if not any(v.strip() for v in values):
                continue
            if len(table.rows) + len(table.broken) >= max_rows:
                raise CsvFormatError(f"file: too many rows: at most {max_rows} data rows per file")
            if max(map(len, values)) > max_field:
                for index, value in enumerate(values):
                    name = fields[index] if index < len(fields) else ""
                    _check_length(value, number, name or f"column {index + 1}", max_field)
            extra = values[len(fields) :]
            if any(v.strip() for v in extra):
                table.broken.append(
                    (number, f"row has {len(values)} values but the header has {len(fields)}")
                )
                continue
            row = {f: v for f, v in zip(fields, values, strict=False) if f}
            table.rows.append((number, {f: row.get(f, "") for f in header_names}))
    except csv.Error as exc:
        raise CsvFormatError(f"row {reader.line_num}: not valid CSV ({exc})") from exc
    return table


def _check_length(value: str, number: int, column: str, max_field: int) -> None:
    if len(value) > max_field:
        raise CsvFormatError(
            f"row {number}, {column}: longer than {max_field} characters ({len(value)})",
            field=column,
        )
