"""What every request body shares: one base struct whose ``__post_init__`` refuses NUL characters
and oversized strings or collections anywhere in the body (nested settings included), and the
checks msgspec cannot express itself (money, datetimes in range).

A check raises ``ValueError("<field>: <message>")``; msgspec turns it into a validation error and
the API answers 400 naming the field (see ``app.api.deps.validation_error``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app import limits
from app.codes import check_minor_units

ShortText = Annotated[str, Meta(min_length=1, max_length=limits.MAX_SHORT_TEXT)]
OptionalText = Annotated[str, Meta(max_length=limits.MAX_SHORT_TEXT)] | None
Title = Annotated[str, Meta(max_length=limits.MAX_TITLE)]
LongText = Annotated[str, Meta(max_length=limits.MAX_LONG_TEXT)]
Url = Annotated[str, Meta(max_length=limits.MAX_URL, description="http(s) URL")]
#: Checked against ISO 3166-1 in ``__post_init__`` (``app.codes.check_country``).
CountryCode = Annotated[str, Meta(max_length=8, description="ISO 3166-1 alpha-2, like US or GB")]
#: Checked against ISO 4217 in ``__post_init__`` (``app.codes.check_currency``).
Currency = Annotated[str, Meta(max_length=8, description="ISO 4217 code, like USD or JPY")]
#: A decimal amount (a string like "19.99", or a JSON number). msgspec cannot put bounds on a
#: ``Decimal``: they are checked in ``__post_init__`` (see ``check_amount``).
Amount = Annotated[
    Decimal,
    Meta(
        description=f"non-negative, at most {limits.MONEY_PLACES} decimal places, "
        f"at most {limits.MAX_AMOUNT}"
    ),
]
#: With a UTC offset; checked to lie in a sane range by ``check_datetime``.
Timestamp = Annotated[
    datetime,
    Meta(
        tz=True,
        description=f"ISO 8601 with a UTC offset, between {limits.MIN_DATETIME.year} "
        f"and {limits.MAX_DATETIME.year}",
    ),
]


class Input(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every request body. Subclasses with their own ``__post_init__`` call
    ``super().__post_init__()`` first."""

    def __post_init__(self) -> None:
        check_values(self)


def check_values(struct: msgspec.Struct) -> None:
    """PostgreSQL cannot store NUL in text or JSON; megabyte strings and huge collections have no
    business in a request: refuse both, at any depth, naming where."""
    budget = [limits.MAX_NESTED_ITEMS]
    for name in struct.__struct_fields__:
        _walk(name, getattr(struct, name), budget)


def _walk(where: str, value: Any, budget: list[int]) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where}: must not contain NUL characters")
        if len(value) > limits.MAX_ANY_TEXT:
            raise ValueError(f"{where}: at most {limits.MAX_ANY_TEXT} characters")
    elif isinstance(value, Mapping | list | tuple):
        budget[0] -= len(value)
        if budget[0] < 0:
            raise ValueError(f"{where}: too many items (at most {limits.MAX_NESTED_ITEMS} in all)")
        if isinstance(value, Mapping):
            for key, item in value.items():
                _walk(where, key, budget)
                _walk(f"{where}.{key}", item, budget)
        else:
            for item in value:
                _walk(where, item, budget)
    # Nested structs were checked when they were built.


def check_amount(name: str, value: Decimal, currency: str | None = None) -> None:
    """Refuse what cannot be stored exactly: NaN, infinities, negatives, more than
    ``MONEY_PLACES`` decimals, more than ``MAX_AMOUNT``; with a ``currency``, more decimals than
    it has minor units (what a customer pays must be payable)."""
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name}: must be a non-negative amount, got {value}")
    if value > limits.MAX_AMOUNT:
        raise ValueError(f"{name}: must be at most {limits.MAX_AMOUNT}, got {value}")
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -limits.MONEY_PLACES:
        raise ValueError(f"{name}: at most {limits.MONEY_PLACES} decimal places, got {value}")
    if currency is not None:
        check_minor_units(name, value, currency)


def check_datetime(name: str, value: datetime | None) -> None:
    if value is None:
        return
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: include a UTC offset, e.g. 2026-01-31T00:00:00Z")
    if not limits.MIN_DATETIME <= value < limits.MAX_DATETIME:
        raise ValueError(
            f"{name}: must be between {limits.MIN_DATETIME.year} and {limits.MAX_DATETIME.year}"
        )
