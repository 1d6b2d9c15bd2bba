"""Prometheus metrics of the application (``GET /metrics``; ``prometheus_client``).

Counters and histograms are updated where the events happen (cheap: no I/O). Gauges that need
the database (outbox depth and age, tracking poll lag, open exceptions) or the broker (queue
depths) are read when Prometheus scrapes, one bounded, indexed query each
(``app.metrics.service``), never per event.

Labels never carry tenant data (no merchant, shop or supplier ids): only names this code
defines, so their number is bounded whatever the tenants do.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOKS = Counter(
    "dropship_webhooks",
    "Shopify webhook deliveries answered, by topic (a handled topic, else `other`) and outcome "
    "(accepted, duplicate, ignored, invalid, unauthorized, unknown_shop, too_large, unavailable).",
    ["topic", "outcome"],
)
WEBHOOK_SECONDS = Histogram(
    "dropship_webhook_duration_seconds",
    "Time to answer a Shopify webhook, from its body read to the answer (verify and store).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EMAILS = Counter(
    "dropship_emails",
    "Customer and merchant emails, by outcome (sent; retry: a transient failure, tried again "
    "later; failed: given up, on the order's timeline).",
    ["outcome"],
)
REFUNDS = Counter(
    "dropship_refunds",
    "Refunds sent to Stripe, by outcome (sent: Stripe answered; retry: Stripe unreachable, "
    "tried again later; refused: Stripe or the connection refused it; given_up: not sent "
    "again by itself, in the exceptions queue: retries exhausted, or refused after an attempt "
    "Stripe may have made).",
    ["outcome"],
)
