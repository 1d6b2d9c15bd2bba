"""The courier data (``data/couriers/*.json``, jkeen/tracking_number_data), loaded once.

The JSON is decoded into typed structs (a change of shape upstream fails the load, not a
detection later), the PCRE named groups ``(?<Name>…)`` become Python's ``(?P<Name>…)``, and every
regex is compiled once, anchored at both ends like the reference implementation's
``^…$``.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import msgspec

from app.carriers.checksums import ALGORITHMS, Checksum

# A named group opens with ``(?<`` then a letter; ``(?<=`` and ``(?<!`` (lookbehinds) do not.
_PCRE_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z])")


class _PrependIf(msgspec.Struct, frozen=True):
    matches_regex: str
    content: str


class _SerialNumberFormat(msgspec.Struct, frozen=True):
    prepend_if: _PrependIf | None = None


class _AdditionalCheck(msgspec.Struct, frozen=True):
    exists: tuple[str, ...] = ()


class _Validation(msgspec.Struct, frozen=True):
    checksum: Checksum | None = None
    serial_number_format: _SerialNumberFormat | None = None
    additional: _AdditionalCheck | None = None


class LookupEntry(msgspec.Struct, frozen=True):
    matches: str | None = None
    matches_regex: str | None = None
    name: str | None = None
    # The S10 "Courier" table: the postal service of a country code.
    courier: str | None = None
    country: str | None = None


class _Additional(msgspec.Struct, frozen=True):
    name: str
    regex_group_name: str
    lookup: tuple[LookupEntry, ...]


class _Format(msgspec.Struct, frozen=True):
    name: str
    regex: str | list[str]
    validation: _Validation
    id: str | None = None
    tracking_url: str | None = None
    additional: tuple[_Additional, ...] | None = None


class _Courier(msgspec.Struct, frozen=True):
    name: str
    courier_code: str
    tracking_numbers: tuple[_Format, ...]


class Lookup:
    """An ``additional`` table on a named group: the first entry the group's value matches."""

    __slots__ = ("exact", "group", "name", "patterns")

    def __init__(self, spec: _Additional) -> None:
        self.name = spec.name
        self.group = spec.regex_group_name
        self.exact: dict[str, LookupEntry] = {}
        self.patterns: list[tuple[re.Pattern[str], LookupEntry]] = []
        for entry in spec.lookup:
            if entry.matches is not None:
                self.exact.setdefault(entry.matches, entry)
            elif entry.matches_regex is not None:
                # Searched, not anchored, as the reference does (``value =~ regex``).
                self.patterns.append((re.compile(entry.matches_regex), entry))

    def find(self, value: str) -> LookupEntry | None:
        # In this data a table is all exact values or all patterns, so looking the exact ones up
        # first keeps the data's "first entry that matches" order.
        hit = self.exact.get(value)
        if hit is not None:
            return hit
        for pattern, entry in self.patterns:
            if pattern.search(value):
                return entry
        return None


class Format:
    """One tracking-number format of a courier, ready to match."""

    __slots__ = (
        "checksum",
        "checksum_check",
        "courier_code",
        "courier_name",
        "id",
        "lookups",
        "name",
        "pattern",
        "prepend",
        "required",
        "tracking_url",
    )

    def __init__(self, courier: _Courier, spec: _Format) -> None:
        self.courier_code = courier.courier_code
        self.courier_name = courier.name
        self.name = spec.name
        # Four formats have no id; one derived from the name keeps every format addressable.
        self.id = spec.id or re.sub(r"[^0-9a-z]+", "_", spec.name.lower()).strip("_")
        regex = spec.regex if isinstance(spec.regex, str) else "".join(spec.regex)
        self.pattern = re.compile(_PCRE_NAMED_GROUP.sub("(?P<", regex))
        self.checksum = spec.validation.checksum
        self.checksum_check = None
        if self.checksum is not None:
            if self.checksum.name not in ALGORITHMS:
                raise ValueError(f"{spec.name}: unknown checksum {self.checksum.name!r}")
            self.checksum_check = ALGORITHMS[self.checksum.name]
        prepend = spec.validation.serial_number_format
        self.prepend = (
            (re.compile(prepend.prepend_if.matches_regex), prepend.prepend_if.content)
            if prepend is not None and prepend.prepend_if is not None
            else None
        )
        self.lookups = tuple(Lookup(a) for a in spec.additional or ())
        additional = spec.validation.additional
        self.required = additional.exists if additional is not None else ()
        missing = set(self.required) - {lookup.name for lookup in self.lookups}
        if missing:
            raise ValueError(f"{spec.name}: validation needs unknown lookups {sorted(missing)}")
        # Couriers' sites all answer on HTTPS; a customer's link should not start on plain HTTP.
        url = spec.tracking_url
        if url is not None and url.startswith("http://"):
            url = "https://" + url.removeprefix("http://")
        self.tracking_url = url


def _read_couriers() -> list[_Courier]:
    folder = resources.files("app.carriers").joinpath("data", "couriers")
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".json")),
        key=lambda entry: entry.name,
    )
    return [msgspec.json.decode(entry.read_bytes(), type=_Courier) for entry in files]


@cache
def formats() -> tuple[Format, ...]:
    """Every format of every courier, in the data's order (files sorted by name)."""
    return tuple(Format(c, f) for c in _read_couriers() for f in c.tracking_numbers)


@cache
def couriers() -> dict[str, str]:
    """Courier code → the data's courier name (``{"ups": "UPS", "s10": "S10", ...}``)."""
    return {f.courier_code: f.courier_name for f in formats()}
