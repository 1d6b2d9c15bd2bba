"""A simulated Shopify Admin GraphQL API on loopback, for ``dropship demo``.

It keeps one store's orders with their fulfillment orders, and answers the operations the
service sends (by the operation's name) the way Shopify documents them: fulfillment orders
with their line items, ``fulfillmentCreate`` (which uses up the lines' remaining quantities),
``fulfillmentTrackingInfoUpdate``, ``fulfillmentEventCreate`` and an order's fulfillments.
Every call is logged for the demo to print. Anything else is answered with a GraphQL error,
as Shopify would for a field it does not know.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx

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
        #: While not empty, every request is refused with these HTTP statuses in turn (429
        #: with ``Retry-After: 1``, 503...): an outage. ``refused`` counts those answers.
        self.outage: tuple[int, ...] = ()
        self.refused = 0
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.headers.get("X-Shopify-Access-Token"):
                    self._send(401, {"errors": "[API] Invalid API key or access token"})
                    return
                refusal = sim._refusal()
                if refusal:
                    self._send(refusal, {"errors": "Service temporarily unavailable"})
                    return
                self._send(200, sim.answer(body.get("query", ""), body.get("variables") or {}))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
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

    def _refusal(self) -> int:
        with self._lock:
            if not self.outage:
                return 0
            status = self.outage[self.refused % len(self.outage)]
            self.refused += 1
            return status

    def fulfillment_ids(self) -> list[str]:
        """Every fulfillment the store holds (a repeat would show twice)."""
        with self._lock:
            return [f["id"] for o in self.orders.values() for f in o.fulfillments]

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


# ============================================================================ Stripe

#: Stripe's example refund (``openapi_fixtures3.json``, resource ``refund``): every refund the
#: simulator answers has these fields, its own values put in.
_REFUND_TEMPLATE: dict[str, Any] = {
    "amount": 100,
    "balance_transaction": None,
    "charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
    "created": 1234567890,
    "currency": "usd",
    "destination_details": {"card": {"type": "reversal"}, "type": "card"},
    "id": "re_1Pgc72B7WZ01zgkWqPvrRrPE",
    "metadata": {},
    "object": "refund",
    "payment_intent": None,
    "reason": None,
    "receipt_number": None,
    "source_transfer_reversal": None,
    "status": "succeeded",
    "transfer_reversal": None,
    "customer": None,
    "customer_account": None,
    "payment_method": None,
}
_BALANCE: dict[str, Any] = {
    "available": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
    "connect_reserved": [{"amount": 0, "currency": "usd"}],
    "livemode": False,
    "object": "balance",
    "pending": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
}
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _stripe_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(24))


def stripe_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header for ``payload`` as Stripe computes it
    (``t=<unix time>,v1=<HMAC-SHA256 of "t.payload">``)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


@dataclass
class StripeRequest:
    """One request the simulator received, as it received it."""

    method: str
    path: str
    headers: dict[str, str]
    form: list[tuple[str, str]]
    status: int = 0

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class _Payment:
    """A PaymentIntent (``pi_``) with its charge, or a lone charge (``ch_``/``py_``)."""

    reference: str
    charge: str
    amount: int
    currency: str
    scope: str
    refunds: list[dict[str, Any]] = field(default_factory=list)

    def refunded(self) -> int:
        return sum(r["amount"] for r in self.refunds if r["status"] not in ("failed", "canceled"))


class StripeSim:
    """Enough of Stripe's API for refunds, checked like Stripe checks it.

    ``POST /v1/refunds`` (form-encoded, ``payment_intent`` or ``charge``, ``amount``,
    ``metadata[...]``, ``reason``), ``GET /v1/refunds/{id}``, ``GET /v1/balance``,
    ``GET /v1/accounts/{id}``, ``GET /v1/payment_intents/{id}``, ``GET /v1/charges/{id}``.

    - ``Authorization: Bearer <key>``: a key of ``keys`` (key -> the account it belongs to) or
      the platform key with a ``Stripe-Account`` among ``connected``; else 401 / 403.
    - ``Idempotency-Key`` as Stripe: the same key and parameters replay the stored answer
      (``Idempotent-Replayed: true``); the same key with other parameters is a 400
      ``idempotency_error``.
    - Never refunds more than the payment's remaining amount (400 ``charge_already_refunded``
      or ``amount_too_large``).
    - Faults: ``fail_next("timeout")`` (the refund is made, the answer lost),
      ``fail_next("timeout_before")`` (nothing reaches Stripe), ``fail_next("500")``.

    Use it behind respx (``router.route(url__startswith=sim.api_base).mock(side_effect=
    sim.handle)``) or as a real server on loopback (``with StripeSim().serving() as sim``).
    """

    api_base = "http://stripe.test"

    def __init__(self, platform_key: str | None = None) -> None:
        self.platform_key = platform_key
        self.keys: dict[str, str] = {}
        self.connected: set[str] = set()
        self.payments: dict[str, _Payment] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.requests: list[StripeRequest] = []
        #: Status of the refunds to make next (first first); then ``refund_status``.
        self.next_statuses: list[str] = []
        self.refund_status = "succeeded"
        self._faults: list[str] = []
        self._idempotent: dict[tuple[str, str], tuple[list[tuple[str, str]], int, bytes]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -------------------------------------------------------------------- set-up

    def add_key(self, key: str, account: str | None = None) -> str:
        """A merchant's own (restricted) key, on its own account."""
        self.keys[key] = account or _stripe_id("acct_")[:21]
        return self.keys[key]

    def add_connected(self, account: str) -> None:
        self.connected.add(account)

    def add_payment(
        self, reference: str, amount: int, currency: str = "usd", *, scope: str
    ) -> None:
        """A captured payment of ``amount`` minor units on the account ``scope`` (a key's
        account, or a connected account id)."""
        charge = reference if not reference.startswith("pi_") else _stripe_id("ch_")
        self.payments[reference] = _Payment(reference, charge, amount, currency.lower(), scope)
        if charge != reference:
            self.payments[charge] = self.payments[reference]

    def fail_next(self, kind: str) -> None:
        if kind not in ("timeout", "timeout_before", "500"):
            raise ValueError(kind)
        self._faults.append(kind)

    def refund_requests(self) -> list[StripeRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/refunds"]

    def set_refund_status(
        self, refund_id: str, status: str, failure_reason: str | None = None
    ) -> dict[str, Any]:
        """Stripe moves a refund on (a pending one succeeds or fails later); returns it."""
        with self._lock:
            refund = self.refunds[refund_id]
            refund["status"] = status
            if failure_reason is not None:
                refund["failure_reason"] = failure_reason
            return dict(json.loads(json.dumps(refund)))

    def event(
        self, type_: str, obj: dict[str, Any], *, account: str | None = None
    ) -> dict[str, Any]:
        """A webhook event as Stripe sends it (``account`` for a connected account's)."""
        event: dict[str, Any] = {
            "id": _stripe_id("evt_"),
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        if account is not None:
            event["account"] = account
        return event

    # -------------------------------------------------------------------- transports

    def handle(self, request: Any) -> Any:
        """respx side effect: an ``httpx.Request`` in, an ``httpx.Response`` out."""
        fault = self._take_fault()
        if fault == "timeout_before":
            raise httpx.ReadTimeout("simulated timeout before Stripe", request=request)
        if fault == "500":
            return httpx.Response(500, json=_error("api_error", "An unknown error occurred"))
        status, headers, body = self.answer(
            request.method,
            request.url.path,
            {k.lower(): v for k, v in request.headers.items()},
            request.content,
            query=request.url.query.decode(),
        )
        if fault == "timeout":
            raise httpx.ReadTimeout("simulated timeout after Stripe", request=request)
        return httpx.Response(status, headers=headers, content=body)

    def serving(self) -> StripeSim:
        """Serve on loopback (``api_base`` becomes its address); ``with sim.serving():``."""
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                fault = sim._take_fault()
                if fault == "timeout_before":
                    self.close_connection = True
                    return
                if fault == "500":
                    self._send(500, {}, json.dumps(_error("api_error", "unknown")).encode())
                    return
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                status, headers, body = sim.answer(
                    self.command,
                    path,
                    {k.lower(): v for k, v in self.headers.items()},
                    raw,
                    query=query,
                )
                if fault == "timeout":
                    self.close_connection = True  # done, but the answer never leaves
                    return
                self._send(status, headers, body)

            do_GET = do_POST = do_DELETE = _any

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self._server.server_address[:2]
        self.api_base = f"http://{host!s}:{port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __enter__(self) -> StripeSim:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _take_fault(self) -> str | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    # -------------------------------------------------------------------- answers

    def answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, *, query: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        form = parse_qsl(raw.decode() if method == "POST" else query, keep_blank_values=True)
        logged = StripeRequest(method, path, dict(headers), form)
        with self._lock:
            self.requests.append(logged)
            scope, refusal = self._authenticate(headers)
            if refusal is not None:
                status, payload = refusal
                logged.status = status
                return status, {}, json.dumps(payload).encode()
            assert scope is not None
            key = headers.get("idempotency-key")
            replay_headers: dict[str, str] = {}
            if method == "POST" and key:
                stored = self._idempotent.get((scope, key))
                if stored is not None:
                    if sorted(stored[0]) != sorted(form):
                        logged.status = 400
                        return 400, {}, json.dumps(_idempotency_error(key)).encode()
                    logged.status = stored[1]
                    return stored[1], {"Idempotent-Replayed": "true"}, stored[2]
                replay_headers = {"Idempotency-Key": key}
            status, payload = self._route(method, path, dict(form), scope)
            body = json.dumps(payload).encode()
            if method == "POST" and key and status < 500:
                self._idempotent[(scope, key)] = (form, status, body)
            logged.status = status
            return status, replay_headers, body

    def _authenticate(
        self, headers: dict[str, str]
    ) -> tuple[str | None, tuple[int, dict[str, Any]] | None]:
        scheme, _, key = headers.get("authorization", "").partition(" ")
        account = headers.get("stripe-account")
        if scheme.lower() != "bearer" or not key:
            return None, (401, _error("invalid_request_error", "You did not provide an API key."))
        if key == self.platform_key and self.platform_key:
            if account is None:
                return "platform", None
            if account in self.connected:
                return account, None
            return None, (
                403,
                _error(
                    "invalid_request_error",
                    f"The provided key does not have access to account '{account}' "
                    "(or that account does not exist).",
                ),
            )
        if key in self.keys and account in (None, self.keys[key]):
            return self.keys[key], None
        return None, (
            401,
            _error("invalid_request_error", f"Invalid API Key provided: {key[:8]}****{key[-4:]}"),
        )

    def _route(
        self, method: str, path: str, form: dict[str, str], scope: str
    ) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["v1", "refunds"]:
            return self._create_refund(form, scope)
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "refunds"]:
            refund = self.refunds.get(parts[2])
            if refund is None or refund["_scope"] != scope:
                return _missing("refund", parts[2])
            return 200, _public(refund)
        if method == "GET" and parts == ["v1", "balance"]:
            return 200, dict(_BALANCE)
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "accounts"]:
            if scope != "platform" and parts[2] != scope:
                return _missing("account", parts[2])
            if scope == "platform" and parts[2] not in self.connected:
                return _missing("account", parts[2])
            return 200, {"id": parts[2], "object": "account", "charges_enabled": True}
        if (
            method == "GET"
            and len(parts) == 3
            and parts[:2]
            in (
                ["v1", "payment_intents"],
                ["v1", "charges"],
            )
        ):
            payment = self.payments.get(parts[2])
            if payment is None or payment.scope != scope:
                return _missing(parts[1][:-1], parts[2])
            return 200, _payment_object(payment, parts[2])
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _create_refund(self, form: dict[str, str], scope: str) -> tuple[int, dict[str, Any]]:
        reference = form.get("payment_intent") or form.get("charge")
        if not reference:
            return 400, _error(
                "invalid_request_error",
                "One of the following params should be provided for this request: "
                "payment_intent or charge.",
            )
        payment = self.payments.get(reference)
        if payment is None or payment.scope != scope:
            param = "payment_intent" if "payment_intent" in form else "charge"
            return _missing(param, reference)
        remaining = payment.amount - payment.refunded()
        raw_amount = form.get("amount")
        try:
            amount = int(raw_amount) if raw_amount is not None else remaining
        except ValueError:
            return 400, _error("invalid_request_error", "Invalid integer", param="amount")
        if remaining <= 0:
            return 400, _error(
                "invalid_request_error",
                f"Charge {payment.charge} has already been refunded.",
                code="charge_already_refunded",
            )
        if amount <= 0 or amount > remaining:
            return 400, _error(
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining})",
                code="amount_too_large",
                param="amount",
            )
        status = self.next_statuses.pop(0) if self.next_statuses else self.refund_status
        refund = {
            **json.loads(json.dumps(_REFUND_TEMPLATE)),
            "id": _stripe_id("re_"),
            "amount": amount,
            "balance_transaction": _stripe_id("txn_"),
            "charge": payment.charge,
            "created": int(time.time()),
            "currency": payment.currency,
            "metadata": {
                k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")
            },
            "payment_intent": payment.reference if payment.reference.startswith("pi_") else None,
            "reason": form.get("reason"),
            "status": status,
            "_scope": scope,
        }
        if status == "failed":
            refund["failure_reason"] = "lost_or_stolen_card"
        self.refunds[refund["id"]] = refund
        payment.refunds.append(refund)
        return 200, _public(refund)


def _public(refund: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in refund.items() if not k.startswith("_")}


def _payment_object(payment: _Payment, ref: str) -> dict[str, Any]:
    refunded = payment.refunded()
    if ref.startswith("pi_"):
        return {
            "id": ref,
            "object": "payment_intent",
            "amount": payment.amount,
            "amount_received": payment.amount,
            "currency": payment.currency,
            "latest_charge": payment.charge,
            "status": "succeeded",
        }
    return {
        "id": ref,
        "object": "charge",
        "amount": payment.amount,
        "amount_captured": payment.amount,
        "amount_refunded": refunded,
        "captured": True,
        "currency": payment.currency,
        "refunded": refunded >= payment.amount,
        "payment_intent": payment.reference if payment.reference != ref else None,
    }


def _error(
    type_: str, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "message": message}
    if code is not None:
        error["code"] = code
    if param is not None:
        error["param"] = param
    return {"error": error}


def _missing(param: str, value: str) -> tuple[int, dict[str, Any]]:
    return 404, _error(
        "invalid_request_error",
        f"No such {param}: '{value}'",
        code="resource_missing",
        param=param,
    )


def _idempotency_error(key: str) -> dict[str, Any]:
    return _error(
        "idempotency_error",
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request.",
    )
