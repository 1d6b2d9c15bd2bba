"""AfterShip's Tracking API, simulated behind respx as documented (2025-07): trackings by id,
``POST /trackings`` answering 4003 for a number it has, ``GET /trackings?tracking_numbers=``,
``GET /trackings/:id``, the ``as-api-key`` check, scripted failures; and signed pushes."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import respx

from connectors.aftership import sign

API_URL = "http://aftership.test/tracking/2025-07"
API_KEY = "as-test-key"
WEBHOOK_SECRET = "as-webhook-secret"


def checkpoint(
    tag: str, at: str, message: str, *, subtag: str | None = None, city: str | None = None
) -> dict[str, Any]:
    return {
        "checkpoint_time": at,
        "tag": tag,
        "subtag": subtag or f"{tag}_001",
        "message": message,
        "city": city,
        "country_region": "USA" if city else None,
    }


@dataclass
class AfterShipSim:
    trackings: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    #: Statuses to answer before behaving normally, e.g. [503, 429].
    script: list[int] = field(default_factory=list)
    #: ``X-RateLimit-Reset`` (a Unix time) of a scripted 429.
    reset_at: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def creates(self) -> int:
        return sum(1 for r in self.requests if r.method == "POST")

    def _meta(self, code: int, message: str, status: int, **headers: str) -> httpx.Response:
        return httpx.Response(
            status, json={"meta": {"code": code, "message": message}, "data": {}}, headers=headers
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("as-api-key") != API_KEY:
            return self._meta(401, "Invalid API key.", 401)
        if self.script:
            status = self.script.pop(0)
            if status == 429:
                return self._meta(
                    429, "Too many requests.", 429, **{"X-RateLimit-Reset": str(self.reset_at)}
                )
            return self._meta(status, "scripted", status)
        path = request.url.path.removeprefix("/tracking/2025-07")
        if request.method == "POST" and path == "/trackings":
            body = json.loads(request.content)
            number = body["tracking_number"]
            if any(t["tracking_number"] == number for t in self.trackings.values()):
                return self._meta(4003, "Tracking already exists.", 400)
            return httpx.Response(
                201, json={"meta": {"code": 201}, "data": self.add(number, body.get("slug"))}
            )
        if request.method == "GET" and path == "/trackings":
            numbers = request.url.params.get("tracking_numbers", "").split(",")
            found = [t for t in self.trackings.values() if t["tracking_number"] in numbers]
            return httpx.Response(200, json={"meta": {"code": 200}, "data": {"trackings": found}})
        if request.method == "GET" and path.startswith("/trackings/"):
            tracking = self.trackings.get(path.rsplit("/", 1)[-1])
            if tracking is None:
                return self._meta(4004, "Tracking does not exist.", 404)
            return httpx.Response(200, json={"meta": {"code": 200}, "data": tracking})
        return self._meta(404, "no such endpoint", 404)

    def add(self, number: str, slug: str | None = None) -> dict[str, Any]:
        """A tracking AfterShip holds (also one registered before, outside our knowledge)."""
        tracking_id = f"{next(self._ids):032x}"
        self.trackings[tracking_id] = {
            "id": tracking_id,
            "tracking_number": number,
            "slug": slug or "ups",
            "tag": "Pending",
            "subtag": "Pending_001",
            "checkpoints": [],
        }
        return self.trackings[tracking_id]

    def by_number(self, number: str) -> dict[str, Any]:
        return next(t for t in self.trackings.values() if t["tracking_number"] == number)

    def scan(self, number: str, *checkpoints: dict[str, Any]) -> dict[str, Any]:
        """New checkpoints at the carrier; the tracking's tag follows the latest."""
        tracking = self.by_number(number)
        tracking["checkpoints"].extend(checkpoints)
        tracking["tag"] = tracking["checkpoints"][-1]["tag"]
        tracking["subtag"] = tracking["checkpoints"][-1]["subtag"]
        return tracking


def push(tracking: dict[str, Any], event_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A ``tracking_update`` push of ``tracking`` and its signed headers."""
    body = json.dumps(
        {
            "event": "tracking_update",
            "event_id": event_id or str(uuid.uuid4()),
            "is_tracking_first_tag": False,
            "msg": tracking,
            "ts": 1764590000,
        }
    ).encode()
    return body, {
        "aftership-hmac-sha256": sign(body, WEBHOOK_SECRET),
        "as-webhook-version": "2025-07",
        "content-type": "application/json",
    }


def mount(router: respx.MockRouter) -> AfterShipSim:
    sim = AfterShipSim()
    router.route(url__startswith=API_URL).mock(side_effect=sim.handle)
    return sim


def serve() -> Iterator[AfterShipSim]:
    """As a fixture body: the simulator behind respx (other hosts pass through untouched)."""
    with respx.mock(assert_all_called=False) as router:
        yield mount(router)
