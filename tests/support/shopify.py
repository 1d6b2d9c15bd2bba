"""Shopify-side helpers for tests and benchmarks: real payloads, real signatures."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import uuid
from pathlib import Path
from typing import Any

#: Third-party payloads live in ``shared/fixtures`` beside the repository (see its SOURCES.md).
FIXTURES = Path(
    os.environ.get("DROPSHIP_FIXTURES")
    or Path(__file__).resolve().parents[3] / "shared" / "fixtures"
)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def order_payload(**overrides: Any) -> dict[str, Any]:
    """Shopify's REST Order from its own test fixtures (a webhook body is the bare order)."""
    order = copy.deepcopy(fixture("shopify_python_api_order.json")["order"])
    order.update(overrides)
    return order


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def webhook_headers(
    body: bytes,
    *,
    secret: str,
    topic: str = "orders/create",
    shop: str = "acme-store.myshopify.com",
    webhook_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Api-Version": "2025-10",
        "X-Shopify-Triggered-At": "2026-11-26T10:00:00.000Z",
    }
