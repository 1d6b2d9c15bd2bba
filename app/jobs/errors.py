"""Which failures are worth another try.

Retries are for transient trouble only (a dropped database connection, a timeout, a deadlock).
A business conflict is a decision recorded by the task, never a retry (see STYLE.md on Polar
#13272).
"""

from __future__ import annotations

import asyncio

import dramatiq
from sqlalchemy.exc import DBAPIError, OperationalError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    OSError,
)


#: PostgreSQL's "try again" errors: deadlock detected, serialization failure.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        if getattr(orig, "pgcode", None) in RETRYABLE_SQLSTATES or (
            getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES
        ):
            return True
    if isinstance(exc, (*TRANSIENT_ERRORS, dramatiq.Retry, dramatiq.RateLimitExceeded)):
        return True
    # Application code may mark its own exceptions retryable.
    return bool(getattr(exc, "retryable", False))
