"""A supplier's REST API, simulated behind respx: it keeps its orders by idempotency key (as a
real supplier API must for retries to be safe) and can be scripted to fail."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

BASE_URL = "http://supplier.test/api"


@dataclass
class SupplierSim:
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    #: Responses to give before behaving normally, e.g. [503, 503]; a callable may raise.
    script: list[int | Callable[[], None]] = field(default_factory=list)
    status: str = "accepted"
    _ids: Any = field(default_factory=lambda: itertools.count(1000))

    def place(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        if self.script:
            step = self.script.pop(0)
            if callable(step):
                step()
            else:
                return httpx.Response(
                    step, json={"error": f"scripted {step}"}, headers={"Retry-After": "0"}
                )
        key = request.headers.get("idempotency-key")
        if not key:
            return httpx.Response(400, json={"error": "Idempotency-Key required"})
        if key in self.orders:  # a retry: the same order, not a new one
            return httpx.Response(200, json=self.orders[key])
        body = json.loads(request.content)
        order = {"id": f"SUP-{next(self._ids)}", "status": self.status, "request": body}
        self.orders[key] = order
        return httpx.Response(201, json=order)

    def get(self, request: httpx.Request) -> httpx.Response:
        ref = request.url.path.rsplit("/", 1)[-1]
        for order in self.orders.values():
            if order["id"] == ref:
                return httpx.Response(200, json=order)
        return httpx.Response(404, json={"error": "no such order"})


def rest_config(**extra: Any) -> dict[str, Any]:
    return {"base_url": BASE_URL, "auth_value": "Bearer sup-secret", **extra}
