"""A simulated Shopify Admin GraphQL API on loopback, for ``dropship demo``.

It keeps one store's orders with their fulfillment orders, and answers the operations the
service sends (by the operation's name) the way Shopify documents them: fulfillment orders
with their line items, ``fulfillmentCreate`` (which uses up the lines' remaining quantities),
``fulfillmentTrackingInfoUpdate``, ``fulfillmentEventCreate`` and an order's fulfillments.
Every call is logged for the demo to print. Anything else is answered with a GraphQL error,
as Shopify would for a field it does not know.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_OPERATION = re.compile(r"\b(query|mutation)\s+(\w+)")
_COST = {
    "requestedQueryCost": 10,
    "actualQueryCost": 10,
    "throttleStatus": {
        "maximumAvailable": 2000.0,
        "currentlyAvailable": 1990,
        "restoreRate": 100.0,
    },
}


@dataclass
class Call:
    operation: str
    variables: dict[str, Any]
    answer: dict[str, Any]


@dataclass
class _Line:
    id: str
    line_item_id: str
    sku: str | None
    total: int
    remaining: int


@dataclass
class _Order:
    gid: str
    fulfillment_order: str
    location: str
    lines: list[_Line]
    fulfillments: list[dict[str, Any]] = field(default_factory=list)


class ShopifyAdminSim:
    """``with ShopifyAdminSim() as shopify:``; ``shopify.admin_url`` is the value of
    ``DROPSHIP_SHOPIFY_ADMIN_URL``; ``shopify.calls`` what the service sent."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.orders: dict[str, _Order] = {}
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.headers.get("X-Shopify-Access-Token"):
                    self._send(401, {"errors": "[API] Invalid API key or access token"})
                    return
                self._send(200, sim.answer(body.get("query", ""), body.get("variables") or {}))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return  # the demo prints the calls itself

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def admin_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/admin/api/{{version}}"

    def __enter__(self) -> ShopifyAdminSim:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_order(self, order_id: int, lines: list[tuple[int, str | None, int]]) -> None:
        """An order of the store: ``(line item id, sku, quantity)`` per line, all in one
        fulfillment order at one location."""
        self.orders[f"gid://shopify/Order/{order_id}"] = _Order(
            gid=f"gid://shopify/Order/{order_id}",
            fulfillment_order=f"gid://shopify/FulfillmentOrder/{next(self._ids)}",
            location="gid://shopify/Location/1",
            lines=[
                _Line(
                    id=f"gid://shopify/FulfillmentOrderLineItem/{next(self._ids)}",
                    line_item_id=f"gid://shopify/LineItem/{line_id}",
                    sku=sku,
                    total=quantity,
                    remaining=quantity,
                )
                for line_id, sku, quantity in lines
            ],
        )

    # ----------------------------------------------------------------------------- answers

    def answer(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        match = _OPERATION.search(query)
        operation = match.group(2) if match else "anonymous"
        with self._lock:
            data = self._data(query, variables)
        answer: dict[str, Any] = (
            {"data": data, "extensions": {"cost": _COST}}
            if data is not None
            else {"errors": [{"message": f"operation {operation} is not simulated"}]}
        )
        self.calls.append(Call(operation, variables, answer))
        return answer

    def _data(self, query: str, variables: dict[str, Any]) -> dict[str, Any] | None:
        if "fulfillmentCreate" in query:
            return {"fulfillmentCreate": self._create(variables["fulfillment"])}
        if "fulfillmentTrackingInfoUpdate" in query:
            return {"fulfillmentTrackingInfoUpdate": self._update_tracking(variables)}
        if "fulfillmentEventCreate" in query:
            return {"fulfillmentEventCreate": self._event(variables["fulfillmentEvent"])}
        if "fulfillmentOrders" in query:
            return {"order": self._fulfillment_orders(variables.get("id"))}
        if "fulfillments" in query:
            order = self.orders.get(str(variables.get("id")))
            return {
                "order": {"id": order.gid, "fulfillments": order.fulfillments} if order else None
            }
        return None

    def _fulfillment_orders(self, gid: Any) -> dict[str, Any] | None:
        order = self.orders.get(str(gid))
        if order is None:
            return None
        done = all(line.remaining == 0 for line in order.lines)
        page = {"hasNextPage": False, "endCursor": None}
        return {
            "id": order.gid,
            "fulfillmentOrders": {
                "pageInfo": page,
                "nodes": [
                    {
                        "id": order.fulfillment_order,
                        "status": "CLOSED" if done else "OPEN",
                        "requestStatus": "UNSUBMITTED",
                        "assignedLocation": {"location": {"id": order.location}},
                        "supportedActions": [] if done else [{"action": "CREATE_FULFILLMENT"}],
                        "lineItems": {
                            "pageInfo": page,
                            "nodes": [
                                {
                                    "id": line.id,
                                    "remainingQuantity": line.remaining,
                                    "totalQuantity": line.total,
                                    "lineItem": {"id": line.line_item_id, "sku": line.sku},
                                }
                                for line in order.lines
                            ],
                        },
                    }
                ],
            },
        }

    def _create(self, fulfillment: dict[str, Any]) -> dict[str, Any]:
        wanted = {
            item["id"]: int(item["quantity"])
            for group in fulfillment.get("lineItemsByFulfillmentOrder", [])
            for item in group.get("fulfillmentOrderLineItems") or []
        }
        order = next(
            (o for o in self.orders.values() if {ln.id for ln in o.lines} & set(wanted)), None
        )
        if order is None:
            return _user_error(["fulfillment"], "Fulfillment order does not exist.")
        by_id = {line.id: line for line in order.lines}
        for line_id, quantity in wanted.items():
            if by_id[line_id].remaining < quantity:
                return _user_error(
                    ["fulfillment"], "Invalid fulfillment order line item quantity requested."
                )
        for line_id, quantity in wanted.items():
            by_id[line_id].remaining -= quantity
        tracking = fulfillment.get("trackingInfo") or {}
        created = {
            "id": f"gid://shopify/Fulfillment/{next(self._ids)}",
            "status": "SUCCESS",
            "displayStatus": "FULFILLED",
            "createdAt": "2026-12-01T00:00:00Z",
            "trackingInfo": [{k: tracking.get(k) for k in ("company", "number", "url")}],
            "fulfillmentLineItems": {
                "nodes": [
                    {
                        "id": f"gid://shopify/FulfillmentLineItem/{next(self._ids)}",
                        "quantity": q,
                        "lineItem": {"id": by_id[i].line_item_id, "sku": by_id[i].sku},
                    }
                    for i, q in wanted.items()
                ]
            },
        }
        order.fulfillments.append(created)
        return {"fulfillment": created, "userErrors": []}

    def _find(self, fulfillment_id: str) -> dict[str, Any] | None:
        return next(
            (f for o in self.orders.values() for f in o.fulfillments if f["id"] == fulfillment_id),
            None,
        )

    def _update_tracking(self, variables: dict[str, Any]) -> dict[str, Any]:
        found = self._find(str(variables.get("fulfillmentId")))
        if found is None:
            return _user_error(["fulfillmentId"], "Fulfillment does not exist.")
        tracking = variables.get("trackingInfoInput") or {}
        found["trackingInfo"] = [{k: tracking.get(k) for k in ("company", "number", "url")}]
        return {"fulfillment": found, "userErrors": []}

    def _event(self, event: dict[str, Any]) -> dict[str, Any]:
        found = self._find(str(event.get("fulfillmentId")))
        if found is None:
            return _user_error(["fulfillmentEvent", "fulfillmentId"], "Fulfillment does not exist.")
        found["displayStatus"] = event.get("status")
        return {
            "fulfillmentEvent": {
                "id": f"gid://shopify/FulfillmentEvent/{next(self._ids)}",
                "status": event.get("status"),
                "happenedAt": event.get("happenedAt"),
                "message": event.get("message"),
            },
            "userErrors": [],
        }


def _user_error(path: list[str], message: str) -> dict[str, Any]:
    return {"fulfillment": None, "userErrors": [{"field": path, "message": message}]}
