"""The one family of domain errors.

A service refuses by raising one of these, naming the offending ``field`` when there is one;
``app.api.errors`` maps every one of them to its HTTP answer (400, 404, 409...), so no domain
error reaches a client as a 500, and no controller translates errors by hand. A task that meets
a ``retryable`` one (stock moved under a routing decision) is retried; any other is a decision.
"""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """A refusal the caller can act on: ``status`` is its HTTP status."""

    status: ClassVar[int] = 400
    #: Running the same work again may succeed (the state it depended on moved).
    retryable: ClassVar[bool] = False

    def __init__(self, detail: str, *, field: str | None = None, **extra: str) -> None:
        super().__init__(f"{field}: {detail}" if field else detail)
        self.detail = detail
        self.field = field
        #: More for the client (``extra`` in the answer), like the id of what conflicts.
        self.extra = extra


class InvalidInput(DomainError, ValueError):
    """The input is wrong (HTTP 400); ``field`` names what to fix."""

    status = 400


class NotFound(DomainError):
    """No such thing for this tenant (HTTP 404)."""

    status = 404


class Conflict(DomainError):
    """The current state forbids the operation (HTTP 409)."""

    status = 409


class RetryableConflict(Conflict):
    """The state moved under the operation: trying again may succeed (HTTP 409)."""

    retryable = True
