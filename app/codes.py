"""Codes checked against their standard: ISO 3166-1 alpha-2 countries, ISO 4217 currencies and
their minor units (the digits an amount in that currency shows).

A code that merely looks right (``UK``, ``EUR0``, ``XYZ``) is refused at the door: an order to
``UK`` would never match a supplier shipping to ``GB``, and would wait forever unrouted.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pycountry
from babel.numbers import get_currency_precision

#: ISO 3166-1 alpha-2, plus ``XK`` (Kosovo): not assigned by ISO, but the user-assigned code
#: Shopify, carriers and the EU use for Kosovo addresses, so Shopify orders carry it.
COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries) | {"XK"}
#: ISO 4217 codes that are not money anyone pays in: precious metals, IMF/bond units, the test
#: code and "no currency".
_NOT_MONEY = frozenset(
    "XAG XAU XPD XPT XBA XBB XBC XBD XDR XSU XUA XTS XXX".split()  # noqa: SIM905
)
CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies) - _NOT_MONEY
#: ``ships_to``, shipping-rate keys: every country.
EVERYWHERE = "*"


def is_country(value: Any) -> bool:
    return isinstance(value, str) and value in COUNTRIES


def is_currency(value: Any) -> bool:
    return isinstance(value, str) and value in CURRENCIES


def country_error(value: Any) -> str:
    return f"{value!r} is not an ISO 3166-1 alpha-2 country code (like US, GB, DE)"


def currency_error(value: Any) -> str:
    return f"{value!r} is not an ISO 4217 currency code (like USD, EUR, JPY)"


def check_country(field: str, value: str | None) -> None:
    """Raise ``ValueError("<field>: ...")`` unless ``value`` is None or a country code."""
    if value is not None and not is_country(value):
        raise ValueError(f"{field}: {country_error(value)}")


def check_currency(field: str, value: str | None) -> None:
    if value is not None and not is_currency(value):
        raise ValueError(f"{field}: {currency_error(value)}")


def minor_units(currency: str | None) -> int:
    """Digits after the decimal point of an amount in ``currency`` (JPY 0, USD 2, BHD 3).
    Unknown (or none): 2, the common case."""
    if not currency:
        return 2
    return int(get_currency_precision(currency))


def check_minor_units(field: str, value: Decimal, currency: str) -> None:
    """An amount a customer pays must be payable: no half yen."""
    places = minor_units(currency)
    if value != value.quantize(Decimal(1).scaleb(-places)):
        raise ValueError(
            f"{field}: {currency} amounts have {places} decimal place(s) at most, got {value}"
        )


def wire_amount(value: Decimal, currency: str | None = None) -> Decimal:
    """An amount as shown: the currency's minor units (``2000`` yen, ``19.90`` dollars), more
    digits only when the amount has them (a supplier's unit cost of ``0.1235``).

    Without a currency (the database layer, which does not know it): two places.
    """
    places = minor_units(currency)
    exponent = value.normalize().as_tuple().exponent
    digits = max(places, -exponent) if isinstance(exponent, int) else places
    return value.quantize(Decimal(1).scaleb(-digits))
