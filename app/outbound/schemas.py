"""Requests and answers of the webhook-endpoint API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app.events.models import EventType
from app.inputs import Input, OptionalText, Url

#: Every event an endpoint can ask for; ``*`` is all of them, the ones added later included.
EVENT_NAMES = (*EventType.ALL, "*")
Events = Annotated[
    list[Annotated[str, Meta(max_length=64)]],
    Meta(
        min_length=1,
        max_length=len(EVENT_NAMES),
        description="event names (" + ", ".join(f"`{e}`" for e in EVENT_NAMES) + ")",
    ),
]


def check_events(events: list[str] | None) -> None:
    if events is None:
        return
    for i, name in enumerate(events):
        if name not in EVENT_NAMES:
            raise ValueError(
                f"events[{i}]: unknown event {name!r}; one of {', '.join(EVENT_NAMES)}"
            )
        if name in events[:i]:
            raise ValueError(f"events[{i}]: {name!r} is listed twice")


class EndpointIn(Input):
    url: Url
    events: Events
    description: OptionalText = None
    enabled: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_events(self.events)


class EndpointPatch(Input):
    url: Url | None = None
    events: Events | None = None
    description: OptionalText = None
    #: ``true`` turns a disabled endpoint back on (its failure count starts again).
    enabled: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_events(self.events)


class EndpointOut(msgspec.Struct):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    #: Why and when it was turned off after repeated failure (null if the merchant did it).
    disabled_at: datetime | None
    disabled_reason: str | None
    consecutive_failures: int
    failing_since: datetime | None
    last_success_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointCreated(msgspec.Struct):
    endpoint: EndpointOut
    #: ``whsec_…``, shown once: null in an ``Idempotency-Key`` replay (see ``redacted``).
    secret: str | None
    redacted: dict[str, str] | None = None


class AttemptOut(msgspec.Struct):
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    response_excerpt: str | None
    error: str | None


class DeliveryOut(msgspec.Struct):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    #: The ``webhook-id`` header and the payload's ``id``: the same on every attempt.
    message_id: str
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]
    #: Every attempt, newest first.
    attempt_log: list[AttemptOut]
