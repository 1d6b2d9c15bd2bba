"""What we accept as an email address: one plain mailbox (``name@example.com``), nothing a mail
header could be bent with (no display name, no list, no whitespace or line breaks)."""

from __future__ import annotations

import re
from typing import Annotated

from msgspec import Meta

_PART = r"[^@\s<>,;:\"()\[\]\\\x00-\x1f\x7f]+"
_RE = re.compile(rf"{_PART}@{_PART}\.{_PART}")

#: Checked in the request schemas' ``__post_init__`` (see :func:`check_email`), so the error
#: names the field in plain words rather than showing a regular expression.
EmailAddress = Annotated[str, Meta(max_length=320, description="one address: name@example.com")]


def is_email(value: str) -> bool:
    return len(value) <= 320 and _RE.fullmatch(value) is not None


def check_email(field: str, value: str | None) -> None:
    """Raise ``ValueError("<field>: ...")`` unless ``value`` is None or one plain address."""
    if value is not None and not is_email(value):
        raise ValueError(f"{field}: expected one email address, like orders@example.com")
