"""Which carrier a tracking number belongs to, and its tracking link."""

from __future__ import annotations

import re
from functools import cache

import msgspec

from app.carriers import names
from app.carriers.formats import Format, LookupEntry, couriers, formats
from app.limits import MAX_SHORT_TEXT, MAX_TRACKING_NUMBER

# Labels print numbers spaced ("1Z 999 AA1 01 2345 6784"); the formats are matched without
# whitespace, in upper case, as the reference implementation does.
_WHITESPACE = re.compile(r"\s+")


class CarrierMatch(msgspec.Struct, frozen=True):
    """A format of the courier data that a tracking number is valid for."""

    #: The data's courier code: ``ups``, ``usps``, ``fedex``, ``dhl``, ``s10`` (UPU postal)...
    courier_code: str
    #: The courier's name; for an S10 number, its postal service ("China Post").
    courier_name: str
    #: The format: its id (``fedex_ground_96``) and name ("FedEx Ground 96 (22)").
    format_id: str
    format_name: str
    #: The number as matched: no whitespace (nor dashes, unless the format has one), upper case.
    number: str
    #: The courier's tracking page for this number, or None when the data has none.
    tracking_url: str | None
    #: The name to send Shopify as ``trackingInfo.company``, or None when Shopify does not
    #: list this carrier (send :attr:`courier_name` and the URL then).
    shopify_company: str | None
    #: The checksum verified (``mod10``, ``s10``...), or None for a format without one: such a
    #: match is only a shape that fits.
    checksum: str | None
    #: The service the data decodes from the number ("UPS United States Ground"), if any.
    service_type: str | None = None
    #: An S10 number's issuing country (ISO 3166 alpha-2), else None.
    country_code: str | None = None


def normalise(tracking_number: str) -> str | None:
    """The number as the formats match it (no whitespace, upper case), or None when it cannot
    be a tracking number.

    Bounded (``MAX_TRACKING_NUMBER``), and ASCII letters, digits and dashes only: anything else
    is refused before any regex runs. Dashes stay: one format (LaserShip 1LS7 18) has one; the
    others are tried without them.
    """
    if len(tracking_number) > MAX_TRACKING_NUMBER or not tracking_number.isascii():
        return None
    number = _WHITESPACE.sub("", tracking_number).upper()
    return number if number.replace("-", "").isalnum() else None


@cache
def _aliases() -> dict[str, str]:
    return names.alias_table(set(couriers()))


def carrier_code(name: str | None) -> str | None:
    """Our code for a carrier's name as suppliers spell it ("UPS", "Fed Ex", "Royal Mail"...).

    ``royal_mail`` is the one code outside the courier data (its numbers are S10 ones).
    """
    if not name or len(name) > MAX_SHORT_TEXT:
        return None
    return _aliases().get(names.name_key(name))


def _match(fmt: Format, number: str) -> CarrierMatch | None:
    m = fmt.pattern.fullmatch(number)
    if m is None:
        return None
    # No whitespace is left in ``number``, so groups need no stripping.
    groups = m.groupdict()
    if fmt.checksum is not None and fmt.checksum_check is not None:
        serial = groups.get("SerialNumber") or ""
        if fmt.prepend is not None and fmt.prepend[0].search(serial):
            serial = fmt.prepend[1] + serial
        if not fmt.checksum_check(serial, groups.get("CheckDigit") or "", fmt.checksum):
            return None
    found: dict[str, LookupEntry] = {}
    for lookup in fmt.lookups:
        value = groups.get(lookup.group)
        entry = lookup.find(value) if value is not None else None
        if entry is not None:
            found[lookup.name] = entry
    if any(name not in found for name in fmt.required):
        return None
    courier_name = fmt.courier_name
    tracking_url = fmt.tracking_url
    country: str | None = None
    if fmt.courier_code == "s10":
        country = groups.get("CountryCode")
        postal = found.get("Courier")
        if postal is not None and postal.courier:
            courier_name = postal.courier
        company = names.SHOPIFY_POSTAL.get(country or "")
        tracking_url = _template(names.POSTAL_CARRIER.get(country or ""))
    elif fmt.courier_code == "dhl" and fmt.id.startswith("dhl_ecommerce"):
        company = names.SHOPIFY_DHL_ECOMMERCE
    else:
        company = names.SHOPIFY_COMPANY.get(fmt.courier_code)
    service = found.get("Service Type")
    return CarrierMatch(
        courier_code=fmt.courier_code,
        courier_name=courier_name,
        format_id=fmt.id,
        format_name=fmt.name,
        number=number,
        tracking_url=tracking_url.replace("%s", number) if tracking_url else None,
        shopify_company=company,
        checksum=fmt.checksum.name if fmt.checksum is not None else None,
        service_type=service.name if service is not None else None,
        country_code=country,
    )


@cache
def _templates() -> dict[str, str]:
    """Carrier code → a tracking URL template: its first format that has one."""
    table = dict(names.EXTRA_TRACKING_URLS)
    for fmt in formats():
        if fmt.tracking_url is not None:
            table.setdefault(fmt.courier_code, fmt.tracking_url)
    return table


def _template(code: str | None) -> str | None:
    return _templates().get(code) if code is not None else None


def _carrier_of(match: CarrierMatch) -> str:
    """The carrier a match belongs to: an S10 number's national carrier when we know it."""
    if match.courier_code == "s10":
        return names.POSTAL_CARRIER.get(match.country_code or "", "s10")
    return match.courier_code


def detect(tracking_number: str, carrier: str | None = None) -> list[CarrierMatch]:
    """Every format ``tracking_number`` is valid for (shape, checksum, lookups), best first.

    Best first means: the carrier the supplier stated (``carrier``, any usual spelling), if it
    is among them — a stated carrier is only overruled when the number cannot be its; then the
    formats whose checksum held over those without one (a bare shape); then the data's order.
    An empty list: no known format, or no tracking number at all (see :func:`normalise`).
    """
    number = normalise(tracking_number)
    if not number:
        return []
    # A dashed number ("1Z999-AA1-0123456784") is tried as printed, then without its dashes.
    bare = number.replace("-", "") if "-" in number else None
    found: list[CarrierMatch] = []
    for fmt in formats():
        m = _match(fmt, number)
        if m is None and bare is not None:
            m = _match(fmt, bare)
        if m is not None:
            found.append(m)
    if len(found) > 1:
        stated = carrier_code(carrier)
        found.sort(key=lambda m: (stated is not None and _carrier_of(m) != stated, not m.checksum))
    return found


def best_match(tracking_number: str, carrier: str | None = None) -> CarrierMatch | None:
    """The first of :func:`detect`, or None."""
    found = detect(tracking_number, carrier)
    return found[0] if found else None


def shopify_company(match: CarrierMatch) -> str | None:
    """The name Shopify recognises for the match's carrier (``trackingInfo.company``), or None."""
    return match.shopify_company


def tracking_url_for(carrier: str | None, tracking_number: str) -> str | None:
    """A tracking link for a number whose supplier named the carrier but sent no URL.

    ``carrier`` in any usual spelling ("UPS", "ups", "FedEx", "DHL", "USPS", "Royal Mail"...).
    The link of the stated carrier's format the number fits; else that carrier's usual tracking
    page (the number may be of a format the data does not know). A carrier we do not know:
    None — never another carrier's page. No carrier given: the best detection's link.
    """
    number = normalise(tracking_number)
    if not number:
        return None
    if carrier is None or not carrier.strip():
        best = best_match(number)
        return best.tracking_url if best is not None else None
    code = carrier_code(carrier)
    if code is None:
        return None
    for match in detect(number, carrier):
        if _carrier_of(match) == code and match.tracking_url is not None:
            return match.tracking_url
    template = _template(code)
    return template.replace("%s", number.replace("-", "")) if template is not None else None
