"""``dropship demo``: one order from the storefront's webhook to the customer's doorstep.

A throwaway instance in this process (SQLite in a temporary folder, the in-process broker and
workers) with a simulated storefront (a signed ``orders/create`` webhook), a simulated supplier
(a portal supplier working through the supplier API: accept, ship, report tracking) and a
simulated Shopify Admin API (``dropship.simulators``). Everything between is the real service.
It prints the order's timeline, the emails written and the Shopify calls made.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from litestar import Litestar
from litestar.testing import AsyncTestClient

from app import migrate
from app.db import Database
from app.logging import configure_logging
from app.mail.models import OutgoingEmail
from app.merchants.service import create_merchant
from app.security import SecretBox
from app.settings import Settings
from dropship.asgi import create_app
from dropship.simulators import ShopifyAdminSim

SHOP = "demo-store.myshopify.com"
SHOPIFY_ORDER_ID = 820982911946154508
LINE_ITEMS = [
    (466157049, "MUG-BLUE", "Blue enamel mug", 2, "18.00"),
    (518995019, "TEE-M", "Organic tee, M", 1, "29.00"),
]
TRACKING_NUMBER = "1Z999AA10123456784"
T = TypeVar("T")

Echo = Callable[[str], None]


def order_webhook() -> dict[str, Any]:
    """A Shopify ``orders/create`` body: the fields the service reads, as Shopify sends them."""
    address = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "name": "Ada Lovelace",
        "address1": "12 Analytical Row",
        "city": "Portland",
        "province_code": "OR",
        "zip": "97201",
        "country_code": "US",
        "phone": "+15035550100",
    }
    subtotal = sum(int(q) * float(p) for _, _, _, q, p in LINE_ITEMS)
    return {
        "id": SHOPIFY_ORDER_ID,
        "admin_graphql_api_id": f"gid://shopify/Order/{SHOPIFY_ORDER_ID}",
        "name": "#1001",
        "order_number": 1001,
        "email": "ada@example.com",
        "customer_locale": "en",
        "currency": "USD",
        "financial_status": "paid",
        "created_at": "2026-12-01T09:00:00Z",
        "updated_at": "2026-12-01T09:00:00Z",
        "subtotal_price": f"{subtotal:.2f}",
        "total_tax": "0.00",
        "total_discounts": "0.00",
        "total_price": f"{subtotal + 5:.2f}",
        "shipping_lines": [{"title": "Standard", "price": "5.00", "code": "STANDARD"}],
        "customer": {"id": 115310627314723954, "email": "ada@example.com", "first_name": "Ada"},
        "shipping_address": address,
        "billing_address": address,
        "line_items": [
            {
                "id": line_id,
                "sku": sku,
                "title": title,
                "name": title,
                "quantity": quantity,
                "price": price,
                "requires_shipping": True,
                "variant_id": line_id + 1,
                "product_id": line_id + 2,
            }
            for line_id, sku, title, quantity, price in LINE_ITEMS
        ],
    }


def _signed(body: bytes, secret: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Api-Version": "2025-10",
        "X-Shopify-Triggered-At": "2026-12-01T09:00:00.000Z",
    }


async def _until(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 60) -> T:  # noqa: ASYNC109 (a polling deadline)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the demo stalled waiting for {what}")


class Demo:
    def __init__(self, echo: Echo, folder: Path, shopify: ShopifyAdminSim) -> None:
        self.echo = echo
        self.shopify = shopify
        self.webhook_secret = secrets.token_hex(16)
        self.settings = Settings(
            database_url=f"sqlite+aiosqlite:///{folder / 'demo.db'}",
            redis_url=None,
            smtp_url=None,
            var_dir=folder / "var",
            secret_key=secrets.token_urlsafe(32),
            shopify_api_key="dropship-demo",
            shopify_api_secret=self.webhook_secret,
            shopify_admin_url=shopify.admin_url,
            public_url="http://127.0.0.1:8000",
            mail_from="orders@demo.dropship.local",
            log_level="WARNING",
            stale_after=5,
        )

    async def run(self) -> None:
        echo = self.echo
        token = await self._merchant()
        self.shopify.add_order(SHOPIFY_ORDER_ID, [(i, s, q) for i, s, _, q, _ in LINE_ITEMS])
        configure_logging(self.settings)  # warnings only: the demo prints its own story
        app: Litestar = create_app(self.settings, run_workers=True, configure_logs=False)
        async with AsyncTestClient(app, timeout=30) as client:
            merchant = {"Authorization": f"Bearer {token}"}
            supplier_key = await self._supplier(client, merchant)
            supplier = {"Authorization": f"Bearer {supplier_key}"}

            echo("storefront  orders/create webhook for order #1001 (signed, 2 lines)")
            body = json.dumps(order_webhook()).encode()
            r = await client.post(
                "/webhooks/shopify", content=body, headers=_signed(body, self.webhook_secret)
            )
            r.raise_for_status()

            async def placed() -> dict[str, Any] | None:
                r = await client.get("/supplier/v1/orders", headers=supplier)
                items = r.json()["items"] if r.status_code == 200 else []
                return items[0] if items else None

            po = await _until("the purchase order to reach the supplier", placed)
            echo(f"supplier    sees purchase order {po['number']} and accepts it")
            (
                await client.post(
                    f"/supplier/v1/orders/{po['id']}/accept",
                    json={"supplier_reference": "ACME-77"},
                    headers=supplier,
                )
            ).raise_for_status()
            echo(f"supplier    ships everything: UPS {TRACKING_NUMBER} (no link given)")
            r = await client.post(
                f"/supplier/v1/orders/{po['id']}/shipments",
                json={"tracking_number": TRACKING_NUMBER},
                headers=supplier,
            )
            r.raise_for_status()
            shipment = r.json()
            for status, at, where in (
                ("in_transit", "2026-12-01T18:00:00Z", "Louisville, KY"),
                ("out_for_delivery", "2026-12-03T07:40:00Z", "Portland, OR"),
                ("delivered", "2026-12-03T14:05:00Z", "Portland, OR"),
            ):
                echo(f"carrier     {status.replace('_', ' ')} ({where})")
                (
                    await client.post(
                        f"/supplier/v1/shipments/{shipment['id']}/events",
                        json={"status": status, "occurred_at": at, "description": where},
                        headers=supplier,
                    )
                ).raise_for_status()
            order = await self._settled(client, merchant)
        await self._report(order)

    async def _merchant(self) -> str:
        db = Database(self.settings.database_url)
        try:
            async with db.transaction() as session:
                merchant, token = await create_merchant(
                    session,
                    SHOP,
                    "owner@demo-store.example",
                    access_token="shpat_" + secrets.token_hex(16),
                    box=SecretBox(self.settings.resolved_secret_key()),
                )
                merchant.settings = {
                    "routing": {"auto_route": True},
                    "branding": {"store_name": "Demo Store", "color": "#0b7285"},
                }
        finally:
            await db.dispose()
        self.echo(f"merchant    {SHOP} with its Admin API token (stored encrypted)")
        return token

    async def _supplier(self, client: AsyncTestClient[Litestar], merchant: dict[str, str]) -> str:
        r = await client.post(
            "/api/v1/suppliers",
            json={"name": "Acme Supply", "connector": "portal", "config": {"email_notice": False}},
            headers=merchant,
        )
        r.raise_for_status()
        created = r.json()
        for _, sku, _, _, _ in LINE_ITEMS:
            (
                await client.post(
                    "/api/v1/supplier-products",
                    json={
                        "supplier_id": created["supplier"]["id"],
                        "sku": sku,
                        "supplier_sku": f"AC-{sku}",
                        "unit_cost": "7.50",
                        "currency": "USD",
                        "stock": 40,
                    },
                    headers=merchant,
                )
            ).raise_for_status()
        self.echo("supplier    Acme Supply (works through the supplier API), 2 products in stock")
        return str(created["api_key"])

    async def _settled(
        self, client: AsyncTestClient[Litestar], merchant: dict[str, str]
    ) -> dict[str, Any]:
        """The order once the workers are done with it: nothing left in the outbox and every
        email out of the queue (sent, or failed and said so)."""
        from sqlalchemy import func, select

        from app.jobs.models import OutboxMessage

        db = Database(self.settings.database_url)
        previous: list[Any] = []

        async def quiet() -> bool:
            async with db.sessionmaker() as session:
                outbox = await session.scalar(select(func.count()).select_from(OutboxMessage))
                queued = await session.scalar(
                    select(func.count())
                    .select_from(OutgoingEmail)
                    .where(OutgoingEmail.status == "queued")
                )
            state = [outbox, queued, len(self.shopify.calls)]
            stable = state == previous and outbox == 0 and queued == 0
            previous[:] = state
            return stable

        try:
            await asyncio.sleep(1.0)
            await _until("the workers to finish", quiet, timeout=90)
            r = await client.get("/api/v1/orders", headers=merchant)
            [summary] = r.json()["items"]
            r = await client.get(f"/api/v1/orders/{summary['id']}", headers=merchant)
            r.raise_for_status()
            order: dict[str, Any] = r.json()
            async with db.sessionmaker() as session:
                emails = (
                    await session.scalars(select(OutgoingEmail).order_by(OutgoingEmail.created_at))
                ).all()
            order["_emails"] = [(e.kind, e.to_address, e.subject, e.status) for e in emails]
            return order
        finally:
            await db.dispose()

    async def _report(self, order: dict[str, Any]) -> None:
        echo = self.echo
        echo("")
        echo(f"Timeline of order {order['name']} (status {order['status']}):")
        for entry in order["timeline"]:
            echo(f"  {entry['at'][11:19]}  {entry['type']:<28} {entry['message']}")
        echo("")
        echo(f"Emails written ({len(order['_emails'])}; without SMTP they are .eml files):")
        for kind, to, subject, status in order["_emails"]:
            echo(f"  {status:<6} {kind:<20} to {to}: {subject}")
        echo("")
        echo(f"Shopify Admin API calls ({len(self.shopify.calls)}):")
        for call in self.shopify.calls:
            echo(f"  {call.operation:<32} {_summary(call.variables)}")
        echo("")
        echo(f"Tracking page: {order.get('tracking_url')}")


def _summary(variables: dict[str, Any]) -> str:
    text = json.dumps(variables, separators=(",", ":"))
    return text if len(text) <= 110 else text[:107] + "..."


def run(echo: Echo) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="dropship-demo-") as folder,
        ShopifyAdminSim() as shopify,
    ):
        demo = Demo(echo, Path(folder), shopify)
        migrate.upgrade(demo.settings.database_url)  # runs its own event loop
        asyncio.run(demo.run())
