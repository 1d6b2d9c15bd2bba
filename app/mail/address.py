"""What we accept as an email address, everywhere (merchants, supplier contacts, customers): one
plain mailbox (``name@example.com``), nothing a mail header could be bent with (no display name,
no list, no whitespace or line breaks). Syntax only: no DNS lookup."""

from __future__ import annotations

from typing import Annotated

import email_validator
from msgspec import Meta

from app.limits import MAX_EMAIL

#: Checked in the request schemas' ``__post_init__`` (see :func:`check_email`), so the error
#: names the field in plain words rather than showing a regular expression.
EmailAddress = Annotated[
    str, Meta(max_length=MAX_EMAIL, description="one address: name@example.com")
]


def email_problem(value: str) -> str | None:
    """Why ``value`` is not one plain address, or None when it is."""
    if len(value) > MAX_EMAIL:
        return f"at most {MAX_EMAIL} characters"
    try:
        email_validator.validate_email(
            value, check_deliverability=False, allow_display_name=False, allow_quoted_local=False
        )
    except email_validator.EmailNotValidError as exc:
        return str(exc)
    return None


def is_email(value: str) -> bool:
    return email_problem(value) is None


def check_email(field: str, value: str | None) -> None:
    """Raise ``ValueError("<field>: ...")`` unless ``value`` is None or one plain address."""
    if value is not None and email_problem(value) is not None:
        raise ValueError(f"{field}: expected one email address, like orders@example.com")
