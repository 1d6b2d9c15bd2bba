"""Stripe in tests: the simulator (``dropship.simulators.StripeSim``) behind respx at
``DROPSHIP_STRIPE_API_BASE``, the real ``stripe`` library in front of it, and helpers for a
connected merchant with an order paid through Stripe."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from typing import Any

import respx
from sqlalchemy import select

from app.db import Database
from app.refunds.models import Refund
from app.settings import Settings
from connectors.stripe_payments import to_stripe_amount
from dropship.simulators import StripeSim, stripe_signature
from tests.conftest import MerchantHandle
from tests.support.orders import Client, order_body
from tests.support.shopify import FIXTURES
from tests.support.wait import eventually

PLATFORM_KEY = "sk_test_51PlatformKey000000000000"
WEBHOOK_SECRET = "whsec_test_current_0000000000000000"
OLD_WEBHOOK_SECRET = "whsec_test_previous_000000000000000"
_keys = itertools.count(1000)
_payments = itertools.count(1)


@cache
def fixtures() -> dict[str, Any]:
    """Stripe's own example objects (``openapi_fixtures3.json``)."""
    with (FIXTURES / "stripe" / "openapi_fixtures3.json").open() as f:
        resources: dict[str, Any] = json.load(f)["resources"]
    return resources


def serve() -> Iterator[StripeSim]:
    """As a fixture body: the simulator behind respx (other hosts are refused by respx)."""
    sim = StripeSim(platform_key=PLATFORM_KEY)
    with respx.mock(assert_all_called=False) as router:
        router.route(url__startswith=sim.api_base).mock(side_effect=sim.handle)
        yield sim


def stripe_settings(settings: Settings, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "stripe_api_base": StripeSim.api_base,
            "stripe_secret_key": PLATFORM_KEY,
            "stripe_webhook_secret": f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
            **extra,
        }
    )


def new_key() -> str:
    return f"rk_test_51Restricted{next(_keys):010d}abcd"


async def connect(client: Client, merchant: MerchantHandle, sim: StripeSim) -> str:
    """Connect the merchant with a restricted key of its own; returns its account."""
    key = new_key()
    account = sim.add_key(key)
    r = await client.put(
        "/api/v1/settings/stripe", json={"secret_key": key}, headers=merchant.headers
    )
    assert r.status_code == 200, r.text
    return account


async def paid_order(
    client: Client,
    merchant: MerchantHandle,
    sim: StripeSim,
    account: str | None,
    *,
    reference: str = "PO-1001",
    captured: Decimal | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A manual order paid with a PaymentIntent that Stripe (the simulator) holds on
    ``account``: 2 x 10.50 + 4.99, shipping 5.00, tax 2.60 = 33.59 USD unless overridden."""
    pi = f"pi_3Test{next(_payments):08d}Payment"
    body = order_body(
        reference,
        **{"shipping_price": "5.00", "tax": "2.60", "stripe_payment_reference": pi, **overrides},
    )
    r = await client.post("/api/v1/orders", json=body, headers=merchant.headers)
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    if account is not None:
        total = Decimal(order["total_price"]) if captured is None else captured
        currency = order["currency"]
        sim.add_payment(pi, to_stripe_amount(total, currency), currency.lower(), scope=account)
    return order


async def refund(
    client: Client, merchant: MerchantHandle, order_id: str, **body: Any
) -> dict[str, Any]:
    r = await client.post(f"/api/v1/orders/{order_id}/refunds", json=body, headers=merchant.headers)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def settled(
    client: Client, merchant: MerchantHandle, refund_id: str, status: str = "succeeded"
) -> dict[str, Any]:
    """The refund once it reached ``status`` (the job runs in the app's workers)."""

    async def probe() -> dict[str, Any] | None:
        r = await client.get(f"/api/v1/refunds/{refund_id}", headers=merchant.headers)
        assert r.status_code == 200, r.text
        got: dict[str, Any] = r.json()
        return got if got["status"] == status else None

    return await eventually(probe)


async def refund_rows(db: Database) -> list[Refund]:
    async with db.sessionmaker() as session:
        return list(await session.scalars(select(Refund).order_by(Refund.created_at)))


def signed(
    event: dict[str, Any], *secrets: str, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The event's body and headers as Stripe sends them, one ``v1`` per secret."""
    body = json.dumps(event).encode()
    parts = [stripe_signature(body, s, timestamp) for s in secrets or (WEBHOOK_SECRET,)]
    t = parts[0].split(",")[0]
    header = ",".join([t, *(p.split(",")[1] for p in parts)])
    return body, {"Stripe-Signature": header, "Content-Type": "application/json"}
