"""The connector interface: how a purchase order reaches a supplier, and how we hear back.

Connectors know nothing of the database. They receive frozen DTOs and an ``httpx.AsyncClient``
and return DTOs. Failures are one of two kinds, and the difference decides what happens next:

- ``RetryableConnectorError``: timeouts, 429, 5xx. The placement is retried with backoff
  (honouring ``retry_after`` when the supplier says when).
- ``PermanentConnectorError``: the supplier refused the order (4xx, validation). Retrying would
  not help; the purchase order fails with the supplier's message and its lines are rerouted.

Placement must be idempotent at the supplier: ``PurchaseOrderDTO.idempotency_key`` is the same
on every attempt for the same purchase order, and connectors must send it in whatever form the
supplier understands, so a retry after a crash never creates a second order.
"""

from __future__ import annotations

import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx

from connectors.metrics import PLACEMENT_SECONDS, PLACEMENTS
from connectors.tracking import TrackingUpdateDTO


class ConnectorError(Exception):
    """Base of connector failures; ``message`` is safe to show the merchant."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RetryableConnectorError(ConnectorError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentConnectorError(ConnectorError):
    pass


class CancelUnsupported(PermanentConnectorError):
    """The channel has no way to cancel: a person must ask the supplier."""


class ConnectorConfigError(ValueError):
    """The connector settings are unusable; ``field`` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class AddressDTO:
    name: str | None
    company: str | None
    address1: str | None
    address2: str | None
    city: str | None
    province_code: str | None
    zip: str | None
    country_code: str | None
    phone: str | None


@dataclass(frozen=True)
class PurchaseOrderLineDTO:
    sku: str
    supplier_sku: str
    quantity: int
    unit_cost: Decimal


@dataclass(frozen=True)
class PurchaseOrderDTO:
    """What a supplier needs to ship, and nothing more (no customer email, no retail prices)."""

    id: str
    number: str
    idempotency_key: str
    currency: str
    ship_to: AddressDTO
    shipping_method: str | None
    lines: tuple[PurchaseOrderLineDTO, ...]
    supplier_reference: str | None = None


@dataclass(frozen=True)
class PlacementResult:
    #: ``placed``: handed over, waiting for the supplier; ``accepted``: the supplier confirmed.
    status: str
    supplier_reference: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: Ask for a notice email to the supplier's contact address (channels with no push of
    #: their own, like the portal).
    notify_supplier: bool = False


@dataclass(frozen=True)
class CancelResult:
    """The supplier's answer to a cancellation."""

    #: ``cancelled``: it will not ship what was asked; ``already_shipped``: too late, it is on
    #: its way (the lines become a return); ``pending``: the supplier confirms later (portal).
    outcome: str
    detail: str | None = None

    OUTCOMES: ClassVar[tuple[str, ...]] = ("cancelled", "already_shipped", "pending")


@dataclass(frozen=True)
class ShipmentDTO:
    carrier: str | None
    tracking_number: str | None
    tracking_url: str | None
    lines: tuple[tuple[str, int], ...] = ()  # (supplier sku or sku, quantity)
    shipped_at: datetime | None = None


@dataclass(frozen=True)
class StatusResult:
    #: One of ``placed``, ``accepted``, ``rejected``, ``cancelled``, ``shipped``, ``delivered``.
    status: str
    shipments: tuple[ShipmentDTO, ...] = ()
    message: str | None = None


@dataclass(frozen=True)
class StockLevel:
    sku: str
    quantity: int
    unit_cost: Decimal | None = None


@dataclass(frozen=True)
class ReturnLineDTO:
    """One returned line: our SKU, the supplier's, how many."""

    sku: str
    supplier_sku: str
    quantity: int


@dataclass(frozen=True)
class ReturnAuthorization:
    """What a supplier answers to a return: where the customer sends it (an address and/or a
    prepaid label) and its own reference; ``None`` fields: it offers nothing of that kind."""

    return_address: Mapping[str, str] | None = None
    label_url: str | None = None
    supplier_reference: str | None = None
    instructions: str | None = None


@dataclass(frozen=True)
class TrackingRefDTO:
    """The purchase order a tracking number belongs to, for per-order tracking endpoints."""

    po_number: str
    supplier_reference: str | None = None


def _measured(
    place: Callable[[Any, PurchaseOrderDTO], Awaitable[PlacementResult]],
) -> Callable[[Any, PurchaseOrderDTO], Awaitable[PlacementResult]]:
    """``place_order`` counted in ``dropship_placements_total`` and timed."""

    @functools.wraps(place)
    async def place_order(self: Any, po: PurchaseOrderDTO) -> PlacementResult:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await place(self, po)
            outcome = "placed"
            return result
        except RetryableConnectorError:
            outcome = "retryable"
            raise
        except PermanentConnectorError:
            outcome = "refused"
            raise
        finally:
            PLACEMENT_SECONDS.labels(self.kind).observe(time.perf_counter() - started)
            PLACEMENTS.labels(self.kind, outcome).inc()

    return place_order


class Connector(ABC):
    """One supplier channel. Subclasses set ``kind`` and implement what their channel supports."""

    kind: ClassVar[str]
    #: True when the supplier fetches its purchase orders itself (through the supplier API).
    pull_based: ClassVar[bool] = False
    #: True when the channel reports carrier events itself; otherwise shipments with a tracking
    #: number are followed through the tracking aggregator (when one is configured).
    reports_tracking: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any], http: httpx.AsyncClient) -> None:
        self.config = dict(config)
        self.http = http

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every channel's placements are counted and timed the same way, whoever calls them.
        own = cls.__dict__.get("place_order")
        if own is not None and not getattr(own, "__isabstractmethod__", False):
            cls.place_order = _measured(own)  # type: ignore[method-assign,assignment]

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalise settings before they are stored; raise ``ConnectorConfigError``."""
        return dict(config)

    @classmethod
    def secret_fields(cls) -> frozenset[str]:
        """Settings never shown back to the merchant."""
        return frozenset()

    @abstractmethod
    async def place_order(self, po: PurchaseOrderDTO) -> PlacementResult: ...

    async def cancel_order(self, po: PurchaseOrderDTO, idempotency_key: str) -> CancelResult:
        """Ask the supplier not to ship ``po.lines`` (what is still unshipped; the same
        ``idempotency_key`` on every attempt). Default: not supported
        (``CancelUnsupported``): the merchant asks the supplier by other means."""
        raise CancelUnsupported(f"{self.kind} suppliers cannot cancel through the connector")

    async def create_return(
        self,
        po: PurchaseOrderDTO,
        lines: Sequence[ReturnLineDTO],
        rma_number: str,
        reason: str,
    ) -> ReturnAuthorization | None:
        """Tell the supplier a return is coming (idempotent: the same RMA twice is one return
        at the supplier). None: the supplier offers no address or label, so the merchant's
        return address and instructions are used. Default: None."""
        return None

    async def fetch_status(self, po: PurchaseOrderDTO) -> StatusResult | None:
        """Current status and shipments, or None when the channel reports by itself (push)."""
        return None

    async def fetch_stock(self, skus: tuple[str, ...]) -> tuple[StockLevel, ...]:
        return ()

    @property
    def supports_tracking(self) -> bool:
        """True when ``fetch_tracking`` can ask the supplier (kind and settings allow it)."""
        return False

    @property
    def tracking_batch_size(self) -> int:
        """Tracking numbers one ``fetch_tracking`` call (one request) may carry; 0: no batch
        endpoint, one number (one request) per call."""
        return 0

    async def fetch_tracking(
        self, numbers: Sequence[str], refs: Mapping[str, TrackingRefDTO] | None = None
    ) -> Sequence[TrackingUpdateDTO]:
        """The current tracking of these numbers (at most ``tracking_batch_size``, or one),
        as far as the supplier knows them; a number it does not know is left out. ``refs``
        gives each number's purchase order (per-order endpoints need it)."""
        raise PermanentConnectorError(f"{self.kind} suppliers do not report tracking")

    def verify_push(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Authenticate an inbound push from the supplier's platform."""
        return False


def classify_http_error(response: httpx.Response, what: str) -> ConnectorError:
    """Map a supplier's HTTP answer to retryable (429, 5xx, 408) or permanent (other 4xx)."""
    detail = _error_detail(response)
    message = f"{what}: supplier answered {response.status_code}" + (
        f": {detail}" if detail else ""
    )
    if response.status_code in (408, 425, 429) or response.status_code >= 500:
        return RetryableConnectorError(message, retry_after=parse_retry_after(response))
    return PermanentConnectorError(message)


def parse_retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip()
    if isinstance(body, dict):
        for key in ("error", "message", "detail", "errors"):
            if key in body:
                return str(body[key])[:300]
    return str(body)[:300]
