"""What we accept as an email address: one plain mailbox (``name@example.com``), nothing a mail
header could be bent with (no display name, no list, no whitespace or line breaks)."""

from __future__ import annotations

import re
from typing import Annotated

from msgspec import Meta

PATTERN = r"^[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\[\]\\]+\.[^@\s<>,;:\"()\[\]\\]+$"
_RE = re.compile(PATTERN)

EmailAddress = Annotated[
    str, Meta(pattern=PATTERN, max_length=320, description="one address: name@example.com")
]


def is_email(value: str) -> bool:
    return len(value) <= 320 and _RE.fullmatch(value) is not None
