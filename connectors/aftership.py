"""AfterShip Tracking API (versioned ``YYYY-MM``; built against 2025-07).

- Auth: the ``as-api-key`` header.
- ``POST /trackings`` registers one number (``slug`` optional: AfterShip detects the carrier);
  a number already tracked answers 400 with ``meta.code`` 4003, and we look it up with
  ``GET /trackings?tracking_numbers=`` instead (so registering is idempotent).
- ``GET /trackings/:id`` polls one tracking.
- Rate limits are per endpoint (POST /trackings 20/s, GET /trackings 6/s, GET /trackings/:id
  5/s); a 429 carries ``X-RateLimit-Reset`` (a Unix time).
- Pushes (webhooks) are signed: ``aftership-hmac-sha256`` = base64(HMAC-SHA256(webhook secret,
  raw body)). The body is ``{"event": "tracking_update", "event_id": ..., "msg": <tracking>,
  "ts": ...}``; no timestamp is signed, so redeliveries are told apart by ``event_id``.

Statuses: a tracking and each of its checkpoints carry a ``tag`` (Pending, InfoReceived,
InTransit, OutForDelivery, AttemptFail, Delivered, AvailableForPickup, Exception, Expired) and a
``subtag`` (``Exception_010`` returning to sender, ``Exception_011`` returned to sender...);
``normalise`` maps them onto ``TrackingStatus``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, ClassVar

import httpx

from connectors.base import (
    ConnectorError,
    PermanentConnectorError,
    RetryableConnectorError,
    parse_retry_after,
)
from connectors.tracking import (
    TrackingEventDTO,
    TrackingProvider,
    TrackingStatus,
    TrackingUpdateDTO,
)

DEFAULT_API_URL = "https://api.aftership.com/tracking/2025-07"
SIGNATURE_HEADER = "aftership-hmac-sha256"
#: ``meta.code`` of "Tracking already exists." (HTTP 400).
TRACKING_ALREADY_EXISTS = 4003

_TAGS: dict[str, str | None] = {
    "Pending": None,  # nothing from the carrier yet: the shipment stays "shipped"
    "InfoReceived": TrackingStatus.INFO_RECEIVED,
    "InTransit": TrackingStatus.IN_TRANSIT,
    "OutForDelivery": TrackingStatus.OUT_FOR_DELIVERY,
    # At a pickup point: the last step before the customer has it, like a courier's round.
    "AvailableForPickup": TrackingStatus.OUT_FOR_DELIVERY,
    "Delivered": TrackingStatus.DELIVERED,
    "AttemptFail": TrackingStatus.EXCEPTION,
    "Exception": TrackingStatus.EXCEPTION,
    # No news 30 days after registration: someone should look at it.
    "Expired": TrackingStatus.EXCEPTION,
}
#: Exception subtags that mean the parcel goes, or went, back to the sender.
_RETURN_SUBTAGS = frozenset({"Exception_010", "Exception_011"})


def normalise(tag: str | None, subtag: str | None = None) -> str | None:
    """AfterShip's tag and subtag in our vocabulary; None for Pending or an unknown tag."""
    if tag == "Exception" and subtag in _RETURN_SUBTAGS:
        return TrackingStatus.RETURNED
    return _TAGS.get(tag or "")


def _utc(value: Any) -> datetime | None:
    """An AfterShip time in UTC. Checkpoint times are in the checkpoint's zone, with an offset
    when the carrier gives one; one without (or a bare date) is taken as UTC, which keeps it
    stable across pushes and polls (the events' deduplication key)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            day = date.fromisoformat(value[:10])
        except ValueError:
            return None
        moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # "0001-01-01T00:00:00+05:00" is before year 1 in UTC
        return None


def _text(value: Any, limit: int = 1000) -> str | None:
    return value.strip()[:limit] or None if isinstance(value, str) else None


def _location(checkpoint: Mapping[str, Any]) -> str | None:
    city = _text(checkpoint.get("city"), 120)
    country = _text(checkpoint.get("country_region") or checkpoint.get("country_iso3"), 60)
    if city or country:
        return ", ".join(p for p in (city, country) if p)
    return _text(checkpoint.get("location"), 250)


def _estimated_delivery(tracking: Mapping[str, Any]) -> datetime | None:
    """The latest EDD AfterShip has (carrier, its AI or the account's rules), else the AI's or
    the carrier's own, else the legacy ``expected_delivery``."""
    latest = tracking.get("latest_estimated_delivery")
    if isinstance(latest, Mapping):
        found = _utc(latest.get("datetime")) or _utc(latest.get("datetime_max"))
        if found:
            return found
    for key in ("aftership_estimated_delivery_date", "courier_estimated_delivery_date"):
        edd = tracking.get(key)
        if isinstance(edd, Mapping):
            found = _utc(edd.get("estimated_delivery_date"))
            if found:
                return found
    return _utc(tracking.get("expected_delivery"))


def parse_tracking(tracking: Mapping[str, Any]) -> TrackingUpdateDTO:
    """An AfterShip Tracking object as our DTO; raises ``ValueError`` without a number."""
    number = tracking.get("tracking_number")
    if not isinstance(number, str) or not number:
        raise ValueError("tracking without tracking_number")
    events = []
    for checkpoint in tracking.get("checkpoints") or ():
        if not isinstance(checkpoint, Mapping):
            continue
        status = normalise(checkpoint.get("tag"), checkpoint.get("subtag"))
        occurred_at = _utc(checkpoint.get("checkpoint_time"))
        if status is None or occurred_at is None:
            continue
        events.append(
            TrackingEventDTO(
                status=status,
                occurred_at=occurred_at,
                description=_text(checkpoint.get("message"))
                or _text(checkpoint.get("subtag_message")),
                location=_location(checkpoint),
            )
        )
    events.sort(key=lambda e: e.occurred_at)
    ref = tracking.get("id")
    slug = tracking.get("slug")
    return TrackingUpdateDTO(
        tracking_number=number,
        carrier_slug=slug if isinstance(slug, str) and slug else None,
        status=normalise(tracking.get("tag"), tracking.get("subtag")),
        events=tuple(events),
        estimated_delivery_at=_estimated_delivery(tracking),
        provider_ref=ref if isinstance(ref, str) and ref else None,
    )


def _tracking_of(data: Any) -> Mapping[str, Any] | None:
    """The Tracking in a ``data`` envelope: the object itself since 2024-10, ``data.tracking``
    before."""
    if not isinstance(data, Mapping):
        return None
    inner = data.get("tracking")
    if isinstance(inner, Mapping):
        return inner
    return data if "tracking_number" in data or "id" in data else None


def _retry_after(response: httpx.Response) -> float | None:
    after = parse_retry_after(response)
    if after is not None:
        return after
    reset = response.headers.get("x-ratelimit-reset")
    try:
        return max(0.0, float(reset) - time.time()) if reset else None
    except ValueError:
        return None


def _meta(response: httpx.Response) -> tuple[int | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:300].strip()
    meta = body.get("meta") if isinstance(body, Mapping) else None
    if not isinstance(meta, Mapping):
        return None, str(body)[:300]
    code = meta.get("code")
    return (code if isinstance(code, int) else None), str(meta.get("message") or "")[:300]


class AfterShipRefusal(PermanentConnectorError):
    """A 4xx; ``meta_code`` is AfterShip's own code (4003: the tracking already exists)."""

    def __init__(self, message: str, meta_code: int | None) -> None:
        super().__init__(message)
        self.meta_code = meta_code


class AfterShipProvider(TrackingProvider):
    name: ClassVar[str] = "aftership"

    def __init__(
        self,
        http: httpx.AsyncClient | None,
        *,
        api_key: str | None,
        webhook_secret: str | None,
        api_url: str = DEFAULT_API_URL,
    ) -> None:
        self.http = http
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.api_url = api_url.rstrip("/")

    # -- calls ------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, what: str, **kwargs: Any
    ) -> tuple[httpx.Response, Any]:
        if not self.api_key or self.http is None:
            raise PermanentConnectorError("AfterShip is not configured: no API key")
        try:
            response = await self.http.request(
                method,
                f"{self.api_url}{path}",
                headers={"as-api-key": self.api_key, "Accept": "application/json"},
                **kwargs,
            )
        except httpx.TimeoutException as exc:
            raise RetryableConnectorError(f"{what}: AfterShip timed out ({exc!r})") from exc
        except httpx.TransportError as exc:
            raise RetryableConnectorError(f"{what}: AfterShip unreachable ({exc!r})") from exc
        if response.is_success:
            try:
                return response, response.json().get("data")
            except (ValueError, AttributeError) as exc:
                raise RetryableConnectorError(f"{what}: AfterShip answered no JSON") from exc
        code, message = _meta(response)
        text = f"{what}: AfterShip answered {response.status_code}" + (
            f" ({code}: {message})" if code is not None else f": {message}" if message else ""
        )
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise RetryableConnectorError(text, retry_after=_retry_after(response))
        raise AfterShipRefusal(text, code)

    async def register(self, number: str, slug: str | None, order_ref: str | None) -> str:
        body: dict[str, Any] = {"tracking_number": number}
        if slug:
            body["slug"] = slug
        if order_ref:
            body["order_number"] = order_ref
        try:
            _, data = await self._call("POST", "/trackings", "register", json=body)
        except AfterShipRefusal as exc:
            if exc.meta_code != TRACKING_ALREADY_EXISTS:
                raise
            return await self._find(number, slug)
        tracking = _tracking_of(data)
        ref = tracking.get("id") if tracking else None
        if not isinstance(ref, str) or not ref:
            raise RetryableConnectorError("register: AfterShip answered without a tracking id")
        return ref

    async def _find(self, number: str, slug: str | None) -> str:
        """The id of a tracking that already exists (a retry after a lost answer, or a number
        registered by hand in AfterShip)."""
        params = {"tracking_numbers": number}
        if slug:
            params["slug"] = slug
        _, data = await self._call("GET", "/trackings", "look up", params=params)
        trackings = data.get("trackings") if isinstance(data, Mapping) else None
        for tracking in trackings or ():
            if isinstance(tracking, Mapping) and tracking.get("tracking_number") == number:
                ref = tracking.get("id")
                if isinstance(ref, str) and ref:
                    return ref
        # It exists but the list does not show it (yet): try again later.
        raise RetryableConnectorError(f"register: {number} exists in AfterShip but was not found")

    async def fetch(self, ref: str) -> TrackingUpdateDTO:
        _, data = await self._call("GET", f"/trackings/{ref}", "poll")
        tracking = _tracking_of(data)
        if tracking is None:
            raise RetryableConnectorError("poll: AfterShip answered without a tracking")
        try:
            return parse_tracking(tracking)
        except ValueError as exc:
            raise ConnectorError(f"poll: {exc}") from exc

    # -- pushes -----------------------------------------------------------------------------

    def verify_push(self, headers: Mapping[str, str], body: bytes) -> bool:
        given = headers.get(SIGNATURE_HEADER)
        if not self.webhook_secret or not given:
            return False
        return hmac.compare_digest(sign(body, self.webhook_secret).encode(), given.strip().encode())

    @staticmethod
    def _envelope(body: bytes) -> Mapping[str, Any]:
        payload = json.loads(body)
        if not isinstance(payload, Mapping):
            raise ValueError("an AfterShip push is a JSON object")
        return payload

    def push_id(self, body: bytes) -> str | None:
        try:
            value = self._envelope(body).get("event_id")
        except (ValueError, RecursionError):
            return None
        return value[:128] if isinstance(value, str) and value else None

    def parse_push(self, body: bytes) -> list[TrackingUpdateDTO]:
        payload = self._envelope(body)
        msg = payload.get("msg")
        # tracking_update and edd_revise carry the tracking; other events nothing we use.
        if payload.get("event") not in ("tracking_update", "edd_revise"):
            return []
        if not isinstance(msg, Mapping):
            raise ValueError("msg: expected the tracking object")
        return [parse_tracking(msg)]


def sign(body: bytes, secret: str) -> str:
    """The ``aftership-hmac-sha256`` value of ``body`` (for tests and the simulator)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
