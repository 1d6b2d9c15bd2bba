"""Carrier tracking from an aggregator: the small interface every tracking provider implements.

A provider (AfterShip today, 17TRACK could follow) follows parcels by tracking number for
suppliers that hand over nothing else. It registers a number once, pushes updates to us (signed)
and answers polls. Whatever its own vocabulary, it speaks ours (``TrackingStatus``) in the DTOs
below: the application never sees a provider's tags.

Like every connector, a provider knows nothing of the database: it gets an ``httpx.AsyncClient``
and settings, returns DTOs, and fails with ``connectors.base.RetryableConnectorError`` (429, 5xx,
timeouts: try again later, ``retry_after`` when the provider says when) or
``PermanentConnectorError`` (the provider refused: retrying would not help).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar


class TrackingStatus:
    """The one tracking vocabulary, whatever the source (supplier API or aggregator)."""

    INFO_RECEIVED = "info_received"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    EXCEPTION = "exception"
    RETURNED = "returned"

    ALL: ClassVar[tuple[str, ...]] = (
        INFO_RECEIVED,
        IN_TRANSIT,
        OUT_FOR_DELIVERY,
        DELIVERED,
        EXCEPTION,
        RETURNED,
    )
    #: After these the parcel does not move again: no more polling.
    FINAL: ClassVar[frozenset[str]] = frozenset({DELIVERED, RETURNED})


@dataclass(frozen=True)
class TrackingEventDTO:
    """One carrier scan. ``occurred_at`` is timezone-aware UTC."""

    status: str
    occurred_at: datetime
    description: str | None = None
    #: "City, Country" as far as the carrier says.
    location: str | None = None


@dataclass(frozen=True)
class TrackingUpdateDTO:
    """What a provider knows of one parcel: its current status (None while the provider has
    nothing yet, e.g. AfterShip's ``Pending``) and its scans, oldest first."""

    tracking_number: str
    carrier_slug: str | None = None
    status: str | None = None
    events: tuple[TrackingEventDTO, ...] = ()
    estimated_delivery_at: datetime | None = None
    #: The provider's id of the tracking (what ``fetch`` takes).
    provider_ref: str | None = None


class TrackingProvider(ABC):
    """A tracking aggregator. ``name`` is its stable key (stored on registrations, used as the
    ``source`` of its pushes in ``webhook_deliveries`` and in the push URL)."""

    name: ClassVar[str]

    @abstractmethod
    async def register(self, number: str, slug: str | None, order_ref: str | None) -> str:
        """Start tracking ``number`` (carrier ``slug`` if known, else detected) and return the
        provider's reference. Idempotent: a number already registered returns its reference."""

    @abstractmethod
    async def fetch(self, ref: str) -> TrackingUpdateDTO:
        """The parcel's current state (a poll, when pushes did not come)."""

    @abstractmethod
    def verify_push(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Whether a push really comes from the provider (``headers`` lower-case)."""

    @abstractmethod
    def push_id(self, body: bytes) -> str | None:
        """The push's unique id (a redelivery repeats it), or None if the body has none."""

    @abstractmethod
    def parse_push(self, body: bytes) -> list[TrackingUpdateDTO]:
        """The updates a verified push carries (empty for events that carry none); raises
        ``ValueError`` for a body that is not the provider's format."""
