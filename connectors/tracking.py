"""Tracking as connectors report it: our status vocabulary and the DTOs of a parcel's history.

Shared by every source of tracking (a supplier's own API through its connector, a tracking
aggregator). Times are UTC; statuses are ours (a connector maps its source's words)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class TrackingStatus(StrEnum):
    INFO_RECEIVED = "info_received"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    EXCEPTION = "exception"
    RETURNED = "returned"


@dataclass(frozen=True)
class TrackingEventDTO:
    status: TrackingStatus
    occurred_at: datetime  # UTC
    description: str | None = None
    location: str | None = None


@dataclass(frozen=True)
class TrackingUpdateDTO:
    tracking_number: str
    carrier_slug: str | None = None
    status: TrackingStatus | None = None
    events: tuple[TrackingEventDTO, ...] = ()
    estimated_delivery_at: datetime | None = None
    provider_ref: str | None = None
