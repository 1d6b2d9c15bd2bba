"""Prometheus metrics of the calls to the outside: supplier placements, Shopify's Admin API.

Labels are the connector kind (a handful, this package's own) and the Admin API operation (the
documents this package sends), never a supplier, merchant or shop: those are tenant data, and
there are as many as the tenants create. Which supplier or shop is failing is in the
merchants' exceptions queue and the purchase orders' ``last_error``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PLACEMENTS = Counter(
    "dropship_placements",
    "Purchase orders handed to a supplier, by connector kind and outcome (placed; retryable: "
    "a timeout, a 5xx, a 429, tried again later; refused: a permanent refusal, rerouted; "
    "error: an unexpected failure).",
    ["connector", "outcome"],
)
PLACEMENT_SECONDS = Histogram(
    "dropship_placement_duration_seconds",
    "How long a supplier took to answer a placement, by connector kind.",
    ["connector"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SHOPIFY_CALLS = Counter(
    "dropship_shopify_calls",
    "Shopify Admin API calls, by operation and outcome (ok; throttled: Shopify's THROTTLED; "
    "rate_limited: HTTP 429; refused: the token or the shop refused (401, 402, 404, 423); "
    "server_error: 5xx; network_error; error: anything else).",
    ["operation", "outcome"],
)
SHOPIFY_BUDGET_WAITS = Counter(
    "dropship_shopify_budget_waits",
    "Shopify calls held back before sending: the shop's cost bucket could not pay for them "
    "yet (retried when it can).",
    ["operation"],
)
SHOPIFY_COST_STORE_ERRORS = Counter(
    "dropship_shopify_cost_store_errors",
    "Reads and writes of the shops' shared cost buckets (Redis) that failed; the call went on "
    "without the bucket's advice.",
    ["op"],
)
