"""The check-digit algorithms the courier data names (``validation.checksum.name``).

Each takes the serial number and the check digit as the data's regex captured them (whitespace
removed, upper case) and the checksum's parameters, and says whether the check digit is right.
They follow the data's ``CHECKSUM_ALGORITHMS.md``; Luhn, which that page omits, is the standard
one (ISO/IEC 7812-1).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec


class Checksum(msgspec.Struct, frozen=True):
    """``validation.checksum`` of a format: the algorithm's name and its parameters."""

    name: str
    modulo: int | None = None
    evens_multiplier: int | None = None
    odds_multiplier: int | None = None
    reverse: bool = False
    weightings: tuple[int, ...] = ()
    modulo1: int | None = None
    modulo2: int | None = None
    alphabet: str | None = None


def _digit(check: str) -> int | None:
    return int(check) if len(check) == 1 and check.isdigit() else None


def mod10(serial: str, check: str, p: Checksum) -> bool:
    """Weighted sum modulo 10 (UPS, USPS, FedEx Ground, Canada Post, OnTrac).

    Characters at even positions (0-based, from the left, or from the right with ``reverse``)
    are multiplied by ``evens_multiplier``, odd ones by ``odds_multiplier``; a letter counts as
    ``(ord(c) - 3) % 10``, UPS's rule for the letters of its shipper ids.
    """
    expected = _digit(check)
    if expected is None:
        return False
    modulo = p.modulo or 10
    chars = serial[::-1] if p.reverse else serial
    total = 0
    for i, c in enumerate(chars):
        x = ord(c) - 48 if "0" <= c <= "9" else (ord(c) - 3) % 10
        factor = p.odds_multiplier if i % 2 else p.evens_multiplier
        total += x * (factor if factor is not None else 1)
    return (modulo - total % modulo) % modulo == expected


def luhn(serial: str, check: str, p: Checksum) -> bool:
    """Luhn: from the right, every other digit doubled (its digits summed), total modulo 10."""
    expected = _digit(check)
    if expected is None or not serial.isdigit():
        return False
    modulo = p.modulo or 10
    total = 0
    for i, c in enumerate(reversed(serial)):
        x = ord(c) - 48
        if i % 2 == 0:  # the digit next to the check digit is doubled
            x *= 2
            if x > 9:
                x -= 9
        total += x
    return (modulo - total % modulo) % modulo == expected


def sum_product_with_weightings_and_modulo(serial: str, check: str, p: Checksum) -> bool:
    """FedEx Express: digits times ``weightings``, summed, modulo ``modulo1`` then ``modulo2``."""
    expected = _digit(check)
    if expected is None or not serial.isdigit() or p.modulo1 is None or p.modulo2 is None:
        return False
    total = sum((ord(c) - 48) * w for c, w in zip(serial, p.weightings, strict=False))
    return total % p.modulo1 % p.modulo2 == expected


def mod7(serial: str, check: str, p: Checksum) -> bool:
    """DHL Express: the serial number modulo 7 is the check digit."""
    expected = _digit(check)
    return expected is not None and serial.isdigit() and int(serial) % (p.modulo or 7) == expected


def s10(serial: str, check: str, p: Checksum) -> bool:
    """UPU S10: the 8 digits times 8,6,4,2,3,5,9,7; 11 - sum mod 11, where 10 → 0 and 11 → 5."""
    expected = _digit(check)
    if expected is None or not serial.isdigit():
        return False
    weights = p.weightings or (8, 6, 4, 2, 3, 5, 9, 7)
    modulo = p.modulo or 11
    remainder = sum((ord(c) - 48) * w for c, w in zip(serial, weights, strict=False)) % modulo
    computed = 0 if remainder == 1 else 5 if remainder == 0 else modulo - remainder
    return computed == expected


def mod_37_36(serial: str, check: str, p: Checksum) -> bool:
    """DPD: ISO/IEC 7064 MOD 37,36 (hybrid system) over digits and capital letters."""
    alphabet = p.alphabet or "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    m = p.modulo or len(alphabet)
    product = m
    for c in serial:
        value = alphabet.find(c)
        if value < 0:
            return False
        total = product + value
        if total > m:
            total -= m
        product = total * 2
        if product > m:
            product -= m + 1
    cd = (m + 1 - product) % m
    return alphabet[cd] == check


#: Every algorithm the data may name. A format naming another one fails the load (and so the
#: tests), rather than passing every number unchecked.
ALGORITHMS: dict[str, Callable[[str, str, Checksum], bool]] = {
    "mod10": mod10,
    "luhn": luhn,
    "sum_product_with_weightings_and_modulo": sum_product_with_weightings_and_modulo,
    "mod7": mod7,
    "s10": s10,
    "mod_37_36": mod_37_36,
}
