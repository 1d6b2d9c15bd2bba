"""A small Shopify Admin GraphQL API for tests (served through respx): orders with fulfillment
orders, ``fulfillmentCreate`` that honours ``remainingQuantity`` the way Shopify does, the
order's fulfillments, events and tracking updates. Every request it receives is checked against
Shopify's published schema (document and variables), so a test also proves that what the
service really sends is valid."""

from __future__ import annotations

import gzip
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx
from graphql import GraphQLSchema, build_client_schema, get_operation_ast, parse, validate
from graphql.execution.values import get_variable_values

from tests.support.shopify import FIXTURES

LOCATION = "gid://shopify/Location/1001"
_OPERATION = re.compile(r"\b(?:query|mutation)\s+(\w+)")


@cache
def admin_schema() -> GraphQLSchema:
    with gzip.open(FIXTURES / "shopify" / "admin_schema_2025-01.json.gz") as f:
        introspection = json.load(f)
    introspection = introspection.get("data", introspection)  # the file keeps the whole answer
    # Shopify's schema trips graphql-core's interface checks (deprecations); it is Shopify's own.
    return build_client_schema(introspection, assume_valid=True)


def coerce(document: str, variables: dict[str, Any]) -> Any:
    """The coerced variables (``.coerced``), or a list of errors."""
    operation = get_operation_ast(parse(document))
    assert operation is not None
    return get_variable_values(admin_schema(), operation.variable_definitions or [], variables)


def throttled(requested: int = 530, available: int = 500, rate: int = 50) -> httpx.Response:
    """Shopify's throttle: HTTP 200 with a THROTTLED error and the bucket's state."""
    return httpx.Response(
        200,
        json={
            "errors": [
                {
                    "message": "Throttled",
                    "extensions": {
                        "code": "THROTTLED",
                        "documentation": "https://shopify.dev/api/usage/rate-limits",
                    },
                }
            ],
            "extensions": {
                "cost": {
                    "requestedQueryCost": requested,
                    "actualQueryCost": None,
                    "throttleStatus": {
                        "maximumAvailable": 1000,
                        "currentlyAvailable": available,
                        "restoreRate": rate,
                    },
                }
            },
        },
    )


def unauthorized() -> httpx.Response:
    return httpx.Response(401, json={"errors": "[API] Invalid API key or access token"})


@dataclass
class Call:
    operation: str
    variables: dict[str, Any]
    token: str | None
    url: str


@dataclass
class FoLine:
    id: str
    line_item_id: str
    total: int
    remaining: int


@dataclass
class Fo:
    id: str
    location: str
    lines: list[FoLine]
    status: str = "OPEN"
    actions: tuple[str, ...] = ("CREATE_FULFILLMENT", "MOVE", "HOLD")


@dataclass
class ShopifyAdminSim:
    orders: dict[str, list[Fo]] = field(default_factory=dict)
    fulfillments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Per order: its transactions and the refunds recorded on it.
    transactions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refunds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    #: Answers to give instead of the normal one, per operation, in order.
    overrides: dict[str, list[Callable[[], httpx.Response]]] = field(default_factory=dict)
    #: Called after an operation took effect, before its answer leaves (fault injection).
    after: dict[str, Callable[[], None]] = field(default_factory=dict)
    available: float = 990
    _ids: Any = field(default_factory=lambda: itertools.count(100))

    def add_order(self, order_gid: str, lines: dict[str, int], *, split: int = 0) -> list[Fo]:
        """Fulfillment orders for ``lines`` (line item gid -> quantity): one at ``LOCATION``, or
        the first ``split`` lines at a second location."""
        items = list(lines.items())
        groups = [items[:split], items[split:]] if split else [items]
        fos = []
        for n, group in enumerate(g for g in groups if g):
            fos.append(
                Fo(
                    f"gid://shopify/FulfillmentOrder/{next(self._ids)}",
                    LOCATION if n == 0 else "gid://shopify/Location/2002",
                    [
                        FoLine(
                            f"gid://shopify/FulfillmentOrderLineItem/{next(self._ids)}", li, q, q
                        )
                        for li, q in group
                    ],
                )
            )
        self.orders[order_gid] = fos
        self.fulfillments[order_gid] = []
        self.transactions[order_gid] = []
        self.refunds[order_gid] = []
        return fos

    def pay(self, order_gid: str, amount: str, gateway: str, *, manual: bool) -> str:
        """The order's sale transaction; its gid."""
        tid = f"gid://shopify/OrderTransaction/{next(self._ids)}"
        self.transactions[order_gid].append(
            {
                "id": tid,
                "kind": "SALE",
                "status": "SUCCESS",
                "gateway": gateway,
                "manualPaymentGateway": manual,
                "amountSet": {"presentmentMoney": {"amount": amount, "currencyCode": "EUR"}},
            }
        )
        return tid

    def operations(self) -> list[str]:
        return [c.operation for c in self.calls]

    def of(self, operation: str) -> list[Call]:
        return [c for c in self.calls if c.operation == operation]

    # --- The endpoint -------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        query, variables = body["query"], body.get("variables") or {}
        match = _OPERATION.search(query)
        assert match, query
        operation = match.group(1)
        assert validate(admin_schema(), parse(query)) == [], operation
        coerced = coerce(query, variables)
        assert not isinstance(coerced, list), coerced
        self.calls.append(
            Call(
                operation,
                variables,
                request.headers.get("x-shopify-access-token"),
                str(request.url),
            )
        )
        queued = self.overrides.get(operation)
        if queued:
            return queued.pop(0)()
        data = getattr(self, f"_{operation}")(variables)
        hook = self.after.pop(operation, None)
        if hook is not None:
            hook()
        return httpx.Response(200, json={"data": data, "extensions": self._cost(10)})

    def _cost(self, cost: int) -> dict[str, Any]:
        return {
            "cost": {
                "requestedQueryCost": cost,
                "actualQueryCost": cost,
                "throttleStatus": {
                    "maximumAvailable": 1000.0,
                    "currentlyAvailable": self.available,
                    "restoreRate": 50.0,
                },
            }
        }

    def _fo(self, fo_id: str) -> Fo:
        return next(fo for fos in self.orders.values() for fo in fos if fo.id == fo_id)

    def _OrderFulfillmentOrders(self, v: dict[str, Any]) -> dict[str, Any]:
        fos = self.orders.get(v["id"])
        if fos is None:
            return {"order": None}
        return {
            "order": {
                "id": v["id"],
                "fulfillmentOrders": {
                    "pageInfo": {"hasNextPage": False, "endCursor": None},
                    "nodes": [
                        {
                            "id": fo.id,
                            "status": fo.status
                            if any(ln.remaining for ln in fo.lines)
                            else "CLOSED",
                            "requestStatus": "UNSUBMITTED",
                            "assignedLocation": {"location": {"id": fo.location}},
                            "supportedActions": [{"action": a} for a in fo.actions],
                            "lineItems": {
                                "pageInfo": {"hasNextPage": False, "endCursor": None},
                                "nodes": [
                                    {
                                        "id": ln.id,
                                        "remainingQuantity": ln.remaining,
                                        "totalQuantity": ln.total,
                                        "lineItem": {"id": ln.line_item_id, "sku": None},
                                    }
                                    for ln in fo.lines
                                ],
                            },
                        }
                        for fo in fos
                    ],
                },
            }
        }

    def _FulfillmentCreate(self, v: dict[str, Any]) -> dict[str, Any]:
        f = v["fulfillment"]
        wanted = []
        for group in f["lineItemsByFulfillmentOrder"]:
            fo = self._fo(group["fulfillmentOrderId"])
            for item in group["fulfillmentOrderLineItems"]:
                line = next(ln for ln in fo.lines if ln.id == item["id"])
                if item["quantity"] > line.remaining:
                    return {
                        "fulfillmentCreate": {
                            "fulfillment": None,
                            "userErrors": [
                                {
                                    "field": ["fulfillment"],
                                    "message": "Invalid fulfillment order line item "
                                    "quantity requested.",
                                }
                            ],
                        }
                    }
                wanted.append((line, item["quantity"]))
        for line, qty in wanted:
            line.remaining -= qty
        order_gid = next(
            o
            for o, fos in self.orders.items()
            if any(fo.id == f["lineItemsByFulfillmentOrder"][0]["fulfillmentOrderId"] for fo in fos)
        )
        tracking = f.get("trackingInfo") or {}
        created = {
            "id": f"gid://shopify/Fulfillment/{next(self._ids)}",
            "status": "SUCCESS",
            "displayStatus": "FULFILLED",
            "createdAt": "2026-12-01T10:00:00Z",
            "trackingInfo": [
                {
                    "company": tracking.get("company"),
                    "number": tracking.get("number"),
                    "url": tracking.get("url"),
                }
            ]
            if tracking
            else [],
            "fulfillmentLineItems": {
                "nodes": [
                    {
                        "id": f"gid://shopify/FulfillmentLineItem/{next(self._ids)}",
                        "quantity": q,
                        "lineItem": {"id": ln.line_item_id, "sku": None},
                    }
                    for ln, q in wanted
                ]
            },
            "notifyCustomer": f.get("notifyCustomer"),
        }
        self.fulfillments[order_gid].append(created)
        answer = {k: created[k] for k in ("id", "status", "displayStatus", "trackingInfo")}
        return {"fulfillmentCreate": {"fulfillment": answer, "userErrors": []}}

    def _OrderFulfillments(self, v: dict[str, Any]) -> dict[str, Any]:
        if v["id"] not in self.orders:
            return {"order": None}
        return {
            "order": {
                "id": v["id"],
                "fulfillments": [
                    {
                        k: f[k]
                        for k in (
                            "id",
                            "status",
                            "displayStatus",
                            "createdAt",
                            "trackingInfo",
                            "fulfillmentLineItems",
                        )
                    }
                    for f in self.fulfillments[v["id"]]
                ],
            }
        }

    def _FulfillmentEventCreate(self, v: dict[str, Any]) -> dict[str, Any]:
        event = {"id": f"gid://shopify/FulfillmentEvent/{next(self._ids)}", **v["fulfillmentEvent"]}
        self.events.append(event)
        return {
            "fulfillmentEventCreate": {
                "fulfillmentEvent": {
                    "id": event["id"],
                    "status": event["status"],
                    "happenedAt": event.get("happenedAt"),
                    "message": event.get("message"),
                },
                "userErrors": [],
            }
        }

    def _FulfillmentTrackingInfoUpdate(self, v: dict[str, Any]) -> dict[str, Any]:
        for fs in self.fulfillments.values():
            for f in fs:
                if f["id"] == v["fulfillmentId"]:
                    t = v["trackingInfoInput"]
                    f["trackingInfo"] = [
                        {
                            "company": t.get("company"),
                            "number": t.get("number"),
                            "url": t.get("url"),
                        }
                    ]
                    return {
                        "fulfillmentTrackingInfoUpdate": {
                            "fulfillment": {"id": f["id"], "trackingInfo": f["trackingInfo"]},
                            "userErrors": [],
                        }
                    }
        return {
            "fulfillmentTrackingInfoUpdate": {
                "fulfillment": None,
                "userErrors": [
                    {"field": ["fulfillmentId"], "message": "Fulfillment does not exist."}
                ],
            }
        }

    def _OrderRefunds(self, v: dict[str, Any]) -> dict[str, Any]:
        if v["id"] not in self.orders:
            return {"order": None}
        return {
            "order": {
                "id": v["id"],
                "refunds": [
                    {k: r[k] for k in ("id", "note", "createdAt")} for r in self.refunds[v["id"]]
                ],
                "transactions": self.transactions[v["id"]],
            }
        }

    def _RefundCreate(self, v: dict[str, Any]) -> dict[str, Any]:
        """Like Shopify: no more of a line than was bought; a refund transaction only against
        a payment of the same gateway, and never above what it paid."""
        refund = v["input"]
        order_gid = refund["orderId"]

        def refused(field: str, message: str) -> dict[str, Any]:
            return {
                "refundCreate": {
                    "refund": None,
                    "userErrors": [{"field": ["input", field], "message": message}],
                }
            }

        if order_gid not in self.orders:
            return refused("orderId", "Order does not exist")
        bought = {ln.line_item_id: ln.total for fo in self.orders[order_gid] for ln in fo.lines}
        for item in refund.get("refundLineItems") or ():
            done = sum(
                r["quantity"]
                for past in self.refunds[order_gid]
                for r in past.get("refundLineItems") or ()
                if r["lineItemId"] == item["lineItemId"]
            )
            if item["quantity"] + done > bought.get(item["lineItemId"], 0):
                return refused(
                    "refundLineItems", "Quantity cannot refund more items than were purchased"
                )
        parents = {t["id"]: t for t in self.transactions[order_gid]}
        for t in refund.get("transactions") or ():
            parent = parents.get(t.get("parentId"))
            if parent is None or parent["gateway"] != t["gateway"]:
                return refused("transactions", "Gateway does not match the parent transaction")
            if float(t["amount"]) > float(parent["amountSet"]["presentmentMoney"]["amount"]):
                return refused("transactions", "Amount exceeds the refundable amount")
        created = {
            "id": f"gid://shopify/Refund/{next(self._ids)}",
            "note": refund.get("note"),
            "createdAt": "2026-12-01T00:00:00Z",
            **{k: refund.get(k) for k in ("refundLineItems", "shipping", "transactions")},
        }
        self.refunds[order_gid].append(created)
        amount = sum(float(t["amount"]) for t in refund.get("transactions") or ())
        return {
            "refundCreate": {
                "refund": {
                    "id": created["id"],
                    "note": created["note"],
                    "totalRefundedSet": {
                        "presentmentMoney": {
                            "amount": f"{amount:.2f}",
                            "currencyCode": refund.get("currency") or "EUR",
                        }
                    },
                },
                "userErrors": [],
            }
        }
