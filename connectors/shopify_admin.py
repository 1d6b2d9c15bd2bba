"""The Shopify Admin GraphQL API, through ``shopifyapp``'s helper.

Every call goes through ``shopify_app.graphql.admin_graphql.admin_graphql_request_async`` (the
library Shopify publishes) with our own ``httpx.AsyncClient``: the helper hard-codes
``https://<shop>.myshopify.com/admin/api/<version>/graphql.json``, so :class:`AdminUrlTransport`
rewrites that URL to the configured template (a proxy, a simulator, the demo).

What the helper leaves to us, and this module does:

- Shopify's throttle is an HTTP 200 whose ``errors[].extensions.code`` is ``THROTTLED``; the
  helper reports it as plain ``graphql_errors``. We read the cost from the body and raise
  :class:`~connectors.base.RetryableConnectorError` with the wait the leaky bucket implies.
- Cost-based rate limit per shop: the ``throttleStatus`` of every answer is kept in a
  :class:`CostStore` (Redis, so every worker sees it), and a call whose expected cost the bucket
  cannot pay yet is refused before it is sent (retry later) instead of being throttled.
- ``userErrors`` come back as a success: :meth:`ShopifyAdmin.mutate` raises :class:`UserErrors`.
- A token Shopify refuses (401; 402/404/423 for a frozen, gone or locked shop) is
  :class:`ShopifyAuthError`: retrying cannot help until the merchant gives a new token.

Connectors know nothing of the app: this module gets a token, a shop domain and an HTTP client.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import redis
from shopify_app.graphql.admin_graphql import admin_graphql_request_async

from connectors.base import PermanentConnectorError, RetryableConnectorError
from connectors.metrics import SHOPIFY_BUDGET_WAITS, SHOPIFY_CALLS, SHOPIFY_COST_STORE_ERRORS

DEFAULT_ADMIN_URL = "https://{shop}/admin/api/{version}"
SHOP_SUFFIX = ".myshopify.com"
#: The helper retries 429 and 5xx itself, sleeping 1 s (429) or 1-2 s (5xx) between tries: one
#: retry at most, so a worker never waits long; our own backoff takes over after that.
HELPER_RETRIES = 1
#: A bucket we have not heard of yet: Shopify's standard plan (1000 points, 100 restored a second
#: for the 2025 API; older figures are 1000/50, which the first answer corrects).
DEFAULT_MAXIMUM = 1000.0
DEFAULT_RESTORE_RATE = 50.0
#: A remembered bucket is forgotten after this long (it is full again by then anyway).
COST_TTL_S = 60

# --- The documents (each validated against Shopify's 2025-01 schema in the tests) -------------

ORDER_FULFILLMENT_ORDERS = """
query OrderFulfillmentOrders($id: ID!, $after: String) {
  order(id: $id) {
    id
    fulfillmentOrders(first: 5, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes {
        id
        status
        requestStatus
        assignedLocation { location { id } }
        supportedActions { action }
        lineItems(first: 50) {
          pageInfo { hasNextPage endCursor }
          nodes { id remainingQuantity totalQuantity lineItem { id sku } }
        }
      }
    }
  }
}
"""
#: Roughly what it requests: 5 FOs x (about 4 + a connection of 50 lines at 2 each).
ORDER_FULFILLMENT_ORDERS_COST = 530

FULFILLMENT_ORDER_LINE_ITEMS = """
query FulfillmentOrderLineItems($id: ID!, $after: String) {
  fulfillmentOrder(id: $id) {
    id
    status
    lineItems(first: 100, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { id remainingQuantity totalQuantity lineItem { id sku } }
    }
  }
}
"""
FULFILLMENT_ORDER_LINE_ITEMS_COST = 210

FULFILLMENT_CREATE = """
mutation FulfillmentCreate($fulfillment: FulfillmentInput!, $message: String) {
  fulfillmentCreate(fulfillment: $fulfillment, message: $message) {
    fulfillment { id status displayStatus trackingInfo(first: 10) { company number url } }
    userErrors { field message }
  }
}
"""

FULFILLMENT_TRACKING_INFO_UPDATE = """
mutation FulfillmentTrackingInfoUpdate(
  $fulfillmentId: ID!, $trackingInfoInput: FulfillmentTrackingInput!, $notifyCustomer: Boolean
) {
  fulfillmentTrackingInfoUpdate(
    fulfillmentId: $fulfillmentId, trackingInfoInput: $trackingInfoInput,
    notifyCustomer: $notifyCustomer
  ) {
    fulfillment { id trackingInfo(first: 10) { company number url } }
    userErrors { field message }
  }
}
"""

FULFILLMENT_EVENT_CREATE = """
mutation FulfillmentEventCreate($fulfillmentEvent: FulfillmentEventInput!) {
  fulfillmentEventCreate(fulfillmentEvent: $fulfillmentEvent) {
    fulfillmentEvent { id status happenedAt message }
    userErrors { field message }
  }
}
"""
MUTATION_COST = 10

#: Look before creating again (fulfillmentCreate takes no idempotency key).
ORDER_FULFILLMENTS = """
query OrderFulfillments($id: ID!) {
  order(id: $id) {
    id
    fulfillments(first: 50) {
      id
      status
      displayStatus
      createdAt
      trackingInfo(first: 5) { company number url }
      fulfillmentLineItems(first: 50) { nodes { id quantity lineItem { id sku } } }
    }
  }
}
"""
ORDER_FULFILLMENTS_COST = 160

#: A refund we made elsewhere (Stripe), told to the store: the order's refunds (to recognise our
#: own after an interrupted call, by the note) and its transactions (to record the money only
#: against a manual gateway, where recording moves nothing).
ORDER_REFUNDS = """
query OrderRefunds($id: ID!) {
  order(id: $id) {
    id
    refunds(first: 50) { id note createdAt }
    transactions(first: 50) {
      id
      kind
      status
      gateway
      manualPaymentGateway
      amountSet { presentmentMoney { amount currencyCode } }
    }
  }
}
"""
ORDER_REFUNDS_COST = 110

REFUND_CREATE = """
mutation RefundCreate($input: RefundInput!) {
  refundCreate(input: $input) {
    refund { id note totalRefundedSet { presentmentMoney { amount currencyCode } } }
    userErrors { field message }
  }
}
"""

DOCUMENTS = {
    "OrderRefunds": ORDER_REFUNDS,
    "RefundCreate": REFUND_CREATE,
    "OrderFulfillmentOrders": ORDER_FULFILLMENT_ORDERS,
    "FulfillmentOrderLineItems": FULFILLMENT_ORDER_LINE_ITEMS,
    "FulfillmentCreate": FULFILLMENT_CREATE,
    "FulfillmentTrackingInfoUpdate": FULFILLMENT_TRACKING_INFO_UPDATE,
    "FulfillmentEventCreate": FULFILLMENT_EVENT_CREATE,
    "OrderFulfillments": ORDER_FULFILLMENTS,
}

# --- Errors -----------------------------------------------------------------------------------


class ShopifyAuthError(PermanentConnectorError):
    """Shopify refuses the token or the shop (401, an uninstalled, frozen or locked shop)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class BudgetExceeded(RetryableConnectorError):
    """Not sent: the shop's cost bucket cannot pay for the call yet (``retry_after``)."""


class UserErrors(PermanentConnectorError):
    """A mutation answered with ``userErrors``: Shopify refused what we asked."""

    def __init__(self, operation: str, errors: list[dict[str, Any]]) -> None:
        parts = []
        for e in errors:
            where = ".".join(str(f) for f in e.get("field") or ())
            parts.append(f"{where}: {e.get('message')}" if where else str(e.get("message")))
        super().__init__(f"Shopify refused {operation}: " + "; ".join(parts))
        self.errors = errors


# --- The URL rewrite --------------------------------------------------------------------------


class AdminUrlTransport(httpx.AsyncBaseTransport):
    """Sends the helper's fixed ``https://<shop>.myshopify.com/admin/api/<v>/graphql.json`` to
    ``template`` (``{shop}`` is the full shop domain, ``{version}`` the API version)."""

    def __init__(self, template: str, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.template = template.rstrip("/")
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.template != DEFAULT_ADMIN_URL:
            parts = request.url.path.split("/")  # ["", "admin", "api", version, "graphql.json"]
            version = parts[3] if len(parts) > 4 else ""
            url = httpx.URL(
                self.template.format(shop=request.url.host, version=version) + "/graphql.json"
            )
            request.url = url
            request.headers["Host"] = url.netloc.decode()  # httpx set it from the old URL
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def admin_http_client(
    template: str = DEFAULT_ADMIN_URL, timeout: float = 30.0
) -> httpx.AsyncClient:
    """The pooled client every Admin call of a process goes through."""
    return httpx.AsyncClient(
        transport=AdminUrlTransport(template),
        timeout=httpx.Timeout(timeout, connect=5.0),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
    )


def shop_name(shop_domain: str) -> str:
    """``my-store.myshopify.com`` -> ``my-store`` (the helper appends the suffix itself)."""
    return shop_domain[: -len(SHOP_SUFFIX)] if shop_domain.endswith(SHOP_SUFFIX) else shop_domain


# --- The cost budget --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """A shop's leaky bucket as Shopify last described it (``throttleStatus``), at ``at``."""

    maximum: float
    available: float
    restore_rate: float
    at: float

    def available_now(self, now: float) -> float:
        return min(self.maximum, self.available + self.restore_rate * max(0.0, now - self.at))

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until the bucket can pay ``cost`` (0: now)."""
        missing = min(cost, self.maximum) - self.available_now(now)
        return 0.0 if missing <= 0 else missing / max(self.restore_rate, 1.0)

    def spend(self, cost: float, now: float) -> Bucket:
        return Bucket(self.maximum, self.available_now(now) - cost, self.restore_rate, now)

    @classmethod
    def from_status(cls, status: dict[str, Any], now: float) -> Bucket | None:
        try:
            return cls(
                float(status["maximumAvailable"]),
                float(status["currentlyAvailable"]),
                float(status["restoreRate"]),
                now,
            )
        except (KeyError, TypeError, ValueError):
            return None


class CostStore(Protocol):
    """Where every worker finds each shop's bucket."""

    def get(self, shop: str) -> Bucket | None: ...

    def put(self, shop: str, bucket: Bucket) -> None: ...


class MemoryCostStore:
    """One process's buckets (the embedded deployment has one worker process)."""

    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}

    def get(self, shop: str) -> Bucket | None:
        bucket = self._buckets.get(shop)
        if bucket is not None and time.time() - bucket.at > COST_TTL_S:
            return None
        return bucket

    def put(self, shop: str, bucket: Bucket) -> None:
        self._buckets[shop] = bucket


class RedisCostStore:
    """Buckets shared by every worker through Redis (a sync client, like Dramatiq's rate
    limiters: one GET or SET on a local server). Read-then-write, not atomic: two workers
    may both spend the last points, and Shopify's THROTTLED answer (which costs nothing and is
    retried later) is the backstop for that rare overlap.

    The bucket is advice, never a reason to fail a call: with Redis unreachable a read finds
    no bucket (the call goes out, Shopify's THROTTLED still holds it back) and a write is
    dropped. Above all, the write after a mutation must not turn a fulfillment Shopify made
    into an error, which would leave it unrecorded until its claim runs out.
    """

    def __init__(self, client: Any, prefix: str = "dropship:shopify:cost:") -> None:
        self.client = client
        self.prefix = prefix

    def get(self, shop: str) -> Bucket | None:
        try:
            raw = self.client.get(self.prefix + shop)
        except (redis.RedisError, OSError):
            SHOPIFY_COST_STORE_ERRORS.labels("get").inc()
            return None
        if raw is None:
            return None
        try:
            return Bucket(**json.loads(raw))
        except (TypeError, ValueError):
            return None

    def put(self, shop: str, bucket: Bucket) -> None:
        try:
            self.client.set(self.prefix + shop, json.dumps(bucket.__dict__), ex=COST_TTL_S)
        except (redis.RedisError, OSError):
            SHOPIFY_COST_STORE_ERRORS.labels("put").inc()


# --- Calls ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRecord:
    """One call, compactly (what ``dropship demo`` prints as "the Shopify calls made")."""

    shop: str
    operation: str
    status: int
    outcome: str
    requested_cost: float | None
    actual_cost: float | None
    variables: dict[str, Any] | None = None


#: The process's most recent calls, newest last.
RECENT_CALLS: deque[CallRecord] = deque(maxlen=500)


@dataclass(frozen=True)
class Answer:
    data: dict[str, Any]
    cost: dict[str, Any] | None


@dataclass(frozen=True)
class FulfillmentOrderLine:
    id: str
    line_item_id: str
    remaining: int


@dataclass(frozen=True)
class FulfillmentOrder:
    id: str
    status: str
    request_status: str | None
    location_id: str | None
    actions: frozenset[str]
    lines: tuple[FulfillmentOrderLine, ...]


def _lines(nodes: Iterable[dict[str, Any]]) -> list[FulfillmentOrderLine]:
    return [
        FulfillmentOrderLine(n["id"], n["lineItem"]["id"], int(n["remainingQuantity"]))
        for n in nodes
    ]


@dataclass
class ShopifyAdmin:
    """The Admin API of one shop."""

    http: httpx.AsyncClient
    shop_domain: str
    token: str
    version: str
    costs: CostStore = field(default_factory=MemoryCostStore)
    calls: list[CallRecord] = field(default_factory=list)

    async def execute(
        self,
        operation: str,
        variables: dict[str, Any] | None,
        *,
        expected_cost: float,
        retries: int = HELPER_RETRIES,
    ) -> Answer:
        """Run the document ``operation`` (a key of :data:`DOCUMENTS`); ``retries``: how often
        the helper itself repeats a 5xx (never for a mutation: Shopify may have done it)."""
        now = time.time()
        bucket = self.costs.get(self.shop_domain)
        if bucket is not None:
            wait = bucket.wait_for(expected_cost, now)
            if wait > 0:
                SHOPIFY_BUDGET_WAITS.labels(operation).inc()
                raise BudgetExceeded(
                    f"Shopify cost budget of {self.shop_domain} is spent "
                    f"({bucket.available_now(now):.0f} of {expected_cost:.0f} points)",
                    retry_after=max(1.0, math.ceil(wait)),
                )
            # Others in flight see our share gone at once, not after our answer.
            self.costs.put(self.shop_domain, bucket.spend(expected_cost, now))
        result = await admin_graphql_request_async(
            DOCUMENTS[operation],
            shop_name(self.shop_domain),
            self.token,
            self.version,
            invalid_token_response=None,
            variables=variables,
            max_retries=retries,
            http_client=self.http,
        )
        body = _json(result.response.body) if result.response is not None else {}
        extensions = result.extensions or body.get("extensions") or {}
        cost = extensions.get("cost") if isinstance(extensions, dict) else None
        status_code = result.response.status if result.response is not None else 0
        self._note(operation, status_code, result.log.code, cost, variables)
        if isinstance(cost, dict):
            fresh = Bucket.from_status(cost.get("throttleStatus") or {}, time.time())
            if fresh is not None:
                self.costs.put(self.shop_domain, fresh)
        if result.ok:
            SHOPIFY_CALLS.labels(operation, "ok").inc()
            return Answer(result.data or {}, cost)
        failure = self._failure(operation, result.log.code, status_code, body, cost)
        SHOPIFY_CALLS.labels(operation, _outcome(failure, result.log.code, status_code)).inc()
        raise failure

    def _note(
        self,
        operation: str,
        status: int,
        outcome: str,
        cost: Any,
        variables: dict[str, Any] | None,
    ) -> None:
        cost = cost if isinstance(cost, dict) else {}
        record = CallRecord(
            self.shop_domain,
            operation,
            status,
            outcome,
            cost.get("requestedQueryCost"),
            cost.get("actualQueryCost"),
            variables,
        )
        self.calls.append(record)
        RECENT_CALLS.append(record)

    def _failure(
        self, operation: str, code: str, status: int, body: dict[str, Any], cost: Any
    ) -> Exception:
        if code == "graphql_errors":
            errors = body.get("errors") or []
            codes = {(e.get("extensions") or {}).get("code") for e in errors if isinstance(e, dict)}
            if "THROTTLED" in codes:
                return RetryableConnectorError(
                    f"Shopify throttled {operation}", retry_after=throttle_wait(cost)
                )
            if "INTERNAL_SERVER_ERROR" in codes:
                return RetryableConnectorError(f"Shopify failed {operation} (internal error)")
            messages = (
                "; ".join(str(e.get("message")) for e in errors if isinstance(e, dict)) or "errors"
            )
            return PermanentConnectorError(f"Shopify refused {operation}: {messages}")
        if code == "unauthorized" or status in (402, 404, 423):
            reason = {
                401: "refused the access token",
                402: "says the shop is frozen (payment required)",
                404: "does not know the shop",
                423: "says the shop is locked",
            }.get(status, "refused the access token")
            return ShopifyAuthError(f"Shopify {reason} ({self.shop_domain})", status)
        if status == 403:
            return PermanentConnectorError(
                f"Shopify refused {operation} (HTTP 403): the access token lacks a scope "
                "(fulfillments need write_merchant_managed_fulfillment_orders, or "
                "write_assigned/third_party_fulfillment_orders)"
            )
        if code == "network_error":
            return RetryableConnectorError(f"network error calling Shopify ({operation})")
        if code.startswith("rate_limited") or status == 429 or status >= 500:
            return RetryableConnectorError(f"Shopify answered HTTP {status} to {operation}")
        return PermanentConnectorError(f"Shopify answered HTTP {status} to {operation}")

    async def mutate(self, operation: str, root: str, variables: dict[str, Any]) -> dict[str, Any]:
        """Run a mutation; its payload (``data[root]``), or :class:`UserErrors`."""
        # A 5xx after Shopify committed would create twice: the task's look-before-retry
        # decides instead of the helper's blind retry.
        answer = await self.execute(operation, variables, expected_cost=MUTATION_COST, retries=0)
        payload = answer.data.get(root) or {}
        errors = payload.get("userErrors") or []
        if errors:
            raise UserErrors(operation, errors)
        return dict(payload)

    # --- The fulfillment calls ----------------------------------------------------------------

    async def fulfillment_orders(self, order_gid: str) -> list[FulfillmentOrder]:
        """Every fulfillment order of the order with every line (both levels paginated)."""
        found: list[FulfillmentOrder] = []
        after: str | None = None
        while True:
            answer = await self.execute(
                "OrderFulfillmentOrders",
                {"id": order_gid, "after": after},
                expected_cost=ORDER_FULFILLMENT_ORDERS_COST,
            )
            order = answer.data.get("order")
            if order is None:
                raise PermanentConnectorError(f"Shopify has no order {order_gid}")
            connection = order["fulfillmentOrders"]
            for node in connection["nodes"]:
                lines = _lines(node["lineItems"]["nodes"])
                page = node["lineItems"]["pageInfo"]
                while page["hasNextPage"]:
                    more = await self.execute(
                        "FulfillmentOrderLineItems",
                        {"id": node["id"], "after": page["endCursor"]},
                        expected_cost=FULFILLMENT_ORDER_LINE_ITEMS_COST,
                    )
                    items = more.data["fulfillmentOrder"]["lineItems"]
                    lines.extend(_lines(items["nodes"]))
                    page = items["pageInfo"]
                location = (node.get("assignedLocation") or {}).get("location") or {}
                found.append(
                    FulfillmentOrder(
                        node["id"],
                        node["status"],
                        node.get("requestStatus"),
                        location.get("id"),
                        frozenset(a["action"] for a in node.get("supportedActions") or ()),
                        tuple(lines),
                    )
                )
            if not connection["pageInfo"]["hasNextPage"]:
                return found
            after = connection["pageInfo"]["endCursor"]

    async def order_fulfillments(self, order_gid: str) -> list[dict[str, Any]]:
        answer = await self.execute(
            "OrderFulfillments", {"id": order_gid}, expected_cost=ORDER_FULFILLMENTS_COST
        )
        order = answer.data.get("order")
        if order is None:
            raise PermanentConnectorError(f"Shopify has no order {order_gid}")
        return list(order.get("fulfillments") or [])

    async def create_fulfillment(self, fulfillment: dict[str, Any]) -> dict[str, Any]:
        payload = await self.mutate(
            "FulfillmentCreate", "fulfillmentCreate", {"fulfillment": fulfillment}
        )
        created = payload.get("fulfillment")
        if not created or not created.get("id"):
            raise PermanentConnectorError("Shopify created no fulfillment and gave no reason")
        return dict(created)

    async def update_tracking(
        self, fulfillment_id: str, tracking: dict[str, Any], *, notify_customer: bool
    ) -> dict[str, Any]:
        return await self.mutate(
            "FulfillmentTrackingInfoUpdate",
            "fulfillmentTrackingInfoUpdate",
            {
                "fulfillmentId": fulfillment_id,
                "trackingInfoInput": tracking,
                "notifyCustomer": notify_customer,
            },
        )

    async def create_event(self, event: dict[str, Any]) -> dict[str, Any]:
        payload = await self.mutate(
            "FulfillmentEventCreate", "fulfillmentEventCreate", {"fulfillmentEvent": event}
        )
        return dict(payload.get("fulfillmentEvent") or {})

    # --- Refunds recorded -----------------------------------------------------------------

    async def order_refunds(self, order_gid: str) -> dict[str, Any]:
        """The order's refunds and transactions (``OrderRefunds``)."""
        answer = await self.execute(
            "OrderRefunds", {"id": order_gid}, expected_cost=ORDER_REFUNDS_COST
        )
        order = answer.data.get("order")
        if order is None:
            raise PermanentConnectorError(f"Shopify has no order {order_gid}")
        return dict(order)

    async def create_refund(self, refund: dict[str, Any]) -> dict[str, Any]:
        payload = await self.mutate("RefundCreate", "refundCreate", {"input": refund})
        created = payload.get("refund")
        if not created or not created.get("id"):
            raise PermanentConnectorError("Shopify recorded no refund and gave no reason")
        return dict(created)


def _outcome(failure: Exception, code: str, status: int) -> str:
    """The metric's name for a failed call (a few values, whatever Shopify answered)."""
    if isinstance(failure, ShopifyAuthError):
        return "refused"
    if str(failure).startswith("Shopify throttled"):
        return "throttled"
    if code.startswith("rate_limited") or status == 429:
        return "rate_limited"
    if code == "network_error":
        return "network_error"
    if status >= 500:
        return "server_error"
    return "error"


def throttle_wait(cost: Any) -> float:
    """Seconds until a throttled query could run: what it asked for, minus what is left,
    over the restore rate (at least one second)."""
    if not isinstance(cost, dict):
        return 1.0
    status = cost.get("throttleStatus") or {}
    try:
        requested = float(cost.get("requestedQueryCost") or 0)
        available = float(status.get("currentlyAvailable") or 0)
        rate = float(status.get("restoreRate") or DEFAULT_RESTORE_RATE)
    except (TypeError, ValueError):
        return 1.0
    return max(1.0, math.ceil((requested - available) / max(rate, 1.0)))


def _json(body: str) -> dict[str, Any]:
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def gid(kind: str, numeric: int | str) -> str:
    return f"gid://shopify/{kind}/{numeric}"
