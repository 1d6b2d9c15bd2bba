"""Issue 8 end to end, every domain at once: the real ``stripe`` library against the Stripe
simulator, a rest_json supplier behind respx, a portal supplier through the supplier API, and
customer emails through a real SMTP server (aiosmtpd).

- A paid order with one shipped and one unshipped purchase order, cancelled by the merchant:
  the unshipped one is cancelled at its supplier (one call), its stock released; the shipped
  one becomes an approved return; the policy refund gives back the cancelled lines once in
  Stripe; the customer gets the cancelled, return-approved and refund-issued emails, once each
  (and no "return requested" email: the customer asked for none).
- A return goes requested, approved (by the merchant), received (resellable, by the supplier),
  refunded: one email per step, the timeline showing each, the stock back at the supplier, the
  supplier's credit expected.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import pytest
import respx
from litestar import Litestar
from sqlalchemy import select

from app.db import Database
from app.events.models import LifecycleEvent
from app.returns.models import Return
from app.settings import Settings
from app.suppliers.models import SupplierProduct
from dropship.asgi import create_app
from dropship.simulators import StripeSim
from tests.conftest import MerchantHandle, make_merchant
from tests.support import stripe as st
from tests.support.portal import Client, bearer, line, offer, portal_supplier, wait_order_pos
from tests.support.routing import create_supplier
from tests.support.smtp import Inbox, smtp_inbox
from tests.support.supplier_sim import BASE_URL, SupplierSim, rest_config
from tests.support.wait import eventually
from tests.test_cancellations import CANCEL_PATH, CancellingSupplier

CUSTOMER = "ada@example.com"
PI = "pi_3MoneyBack0000000001"


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    yield from smtp_inbox()


@pytest.fixture
def stripe() -> StripeSim:
    return StripeSim(platform_key=st.PLATFORM_KEY)


@pytest.fixture
def suppliers(stripe: StripeSim) -> Iterator[tuple[SupplierSim, CancellingSupplier]]:
    """One respx router for every outside party over HTTP: Stripe and the rest_json supplier."""
    placing, cancelling = SupplierSim(), CancellingSupplier()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(url__startswith=stripe.api_base).mock(side_effect=stripe.handle)
        mock.post(f"{BASE_URL}/orders").mock(side_effect=placing.place)
        mock.post(url__regex=rf"{BASE_URL}/orders/[^/]+/cancel").mock(side_effect=cancelling.cancel)
        mock.get(url__startswith=f"{BASE_URL}/orders/").mock(side_effect=placing.get)
        yield placing, cancelling


@pytest.fixture
def app(settings: Settings, inbox: Inbox, suppliers: Any) -> Litestar:
    configured = st.stripe_settings(settings, smtp_url=inbox.url)
    return create_app(configured, run_workers=True, configure_logs=False)


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, "money-back.myshopify.com", auto_route=True)


async def paid_routed_order(
    client: Client,
    shop: MerchantHandle,
    stripe: StripeSim,
    account: str,
    reference: str,
    lines: list[dict[str, Any]],
    expect: int,
) -> tuple[str, list[dict[str, Any]]]:
    """A manual order paid through Stripe (the simulator holds the PaymentIntent), routed and
    placed with ``expect`` purchase orders."""
    body = {
        "reference": reference,
        "currency": "USD",
        "email": CUSTOMER,
        "shipping_address": {
            "name": "Ada Lovelace",
            "address1": "1 Analytical Way",
            "city": "London",
            "zip": "N1 9GU",
            "country_code": "GB",
        },
        "lines": lines,
        "shipping_price": "5.00",
        "stripe_payment_reference": PI,
    }
    r = await client.post("/api/v1/orders", json=body, headers=shop.headers)
    assert r.status_code == 201, r.text
    order = r.json()
    total = Decimal(order["total_price"])
    stripe.add_payment(PI, int(total * 100), "usd", scope=account)
    pos = await wait_order_pos(
        client,
        shop,
        order["id"],
        lambda p: len(p) == expect and all(x["status"] != "pending" for x in p),
    )
    return str(order["id"]), pos


async def ship(client: Client, supplier: dict[str, Any], po_id: str) -> None:
    r = await client.post(
        f"/supplier/v1/orders/{po_id}/shipments",
        json={"carrier": "UPS", "tracking_number": "1Z999AA10123456784"},
        headers=bearer(supplier["api_key"]),
    )
    assert r.status_code == 201, r.text


async def detail(client: Client, shop: MerchantHandle, order_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def subjects(inbox: Inbox) -> list[str]:
    return sorted(str(m["Subject"]) for m in inbox.to(CUSTOMER))


async def emails(inbox: Inbox, count: int) -> list[EmailMessage]:
    async def probe() -> list[EmailMessage] | None:
        got = inbox.to(CUSTOMER)
        return got if len(got) >= count else None

    return await eventually(probe, timeout=30)


async def one(inbox: Inbox, start: str) -> EmailMessage:
    """The one email to the customer whose subject starts so (waiting for it)."""

    async def probe() -> list[EmailMessage] | None:
        got = [m for m in inbox.to(CUSTOMER) if str(m["Subject"]).startswith(start)]
        return got or None

    [found] = await eventually(probe, timeout=30)
    return found


async def refunds_of(client: Client, shop: MerchantHandle, order_id: str) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/refunds", params={"order_id": order_id}, headers=shop.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def succeeded(client: Client, shop: MerchantHandle, order_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await refunds_of(client, shop, order_id)
        return found[0] if len(found) == 1 and found[0]["status"] == "succeeded" else None

    return await eventually(probe, timeout=30)


async def stock(db: Database, sku: str) -> int:
    async with db.sessionmaker() as session:
        value = await session.scalar(
            select(SupplierProduct.stock).where(SupplierProduct.sku == sku)
        )
    assert value is not None
    return int(value)


async def published(db: Database, prefix: str) -> list[str]:
    async with db.sessionmaker() as session:
        keys = await session.scalars(
            select(LifecycleEvent.type).where(LifecycleEvent.type.startswith(prefix))
        )
    return sorted(keys)


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())  # type: ignore[attr-defined]


def refund_form(stripe: StripeSim) -> list[dict[str, str]]:
    return [dict(r.form) for r in stripe.refund_requests()]


class TestMoneyBack:
    async def test_cancelled_order_cancels_the_unshipped_po_returns_the_shipped_and_refunds_once(
        self,
        client: Client,
        db: Database,
        shop: MerchantHandle,
        stripe: StripeSim,
        suppliers: tuple[SupplierSim, CancellingSupplier],
        inbox: Inbox,
    ) -> None:
        _, cancelling = suppliers
        account = await st.connect(client, shop, stripe)
        rest = await create_supplier(
            client,
            shop,
            name="RestCo",
            connector="rest_json",
            config=rest_config(cancel_path=CANCEL_PATH),
        )
        await offer(client, shop, rest["supplier"]["id"], "RED", stock=10, unit_cost="3.10")
        portal = await portal_supplier(client, shop, "PortalCo")
        await offer(client, shop, portal["supplier"]["id"], "BLUE", stock=10, unit_cost="4.00")
        order_id, pos = await paid_routed_order(
            client, shop, stripe, account, "MB-1", [line("RED", 2), line("BLUE", 1)], expect=2
        )
        rest_po = next(p for p in pos if p["supplier_id"] == rest["supplier"]["id"])
        portal_po = next(p for p in pos if p["supplier_id"] == portal["supplier"]["id"])
        await ship(client, portal, portal_po["id"])
        assert await stock(db, "RED") == 8

        r = await client.post(
            f"/api/v1/orders/{order_id}/cancel",
            json={"reason": "customer changed their mind"},
            headers=shop.headers,
        )
        assert r.status_code == 202, r.text

        # The unshipped purchase order: cancelled at its supplier, once; its stock back.
        refund = await succeeded(client, shop, order_id)
        assert [req.url.path for req in cancelling.requests] == ["/api/orders/SUP-1000/cancel"]
        assert cancelling.requests[0].headers["idempotency-key"] == (
            f"dropship-cancel-{rest_po['id']}"
        )
        assert await stock(db, "RED") == 10
        # The policy refund: the two cancelled RED lines (2 x 10.50), no shipping (BLUE shipped).
        assert (refund["amount"], refund["currency"], refund["origin"]) == (
            "21.00",
            "USD",
            "policy-cancel",
        )
        [sent] = refund_form(stripe)
        assert (sent["payment_intent"], sent["amount"]) == (PI, "2100")
        assert stripe.refund_requests()[0].headers["idempotency-key"] == (
            f"dropship-refund-{refund['id']}"
        )
        # The shipped purchase order: an approved return of its BLUE line.
        async with db.sessionmaker() as session:
            [ret] = list(await session.scalars(select(Return)))
        assert (str(ret.purchase_order_id), ret.origin, ret.status) == (
            portal_po["id"],
            "cancellation",
            "approved",
        )
        order = await detail(client, shop, order_id)
        assert order["status"] == "cancelled"
        assert [x["amount"] for x in order["refunds"]] == ["21.00"]

        # The customer: cancelled, return approved (what to do with the parcel that left),
        # refund issued, once each; no "return requested": nobody asked for one.
        await emails(inbox, 5)
        assert subjects(inbox) == [
            "Order MB-1 confirmed",
            "We refunded $21.00 for order MB-1",
            "Your order MB-1 has been cancelled",
            "Your order MB-1 is on its way",
            "Your return R-MB-1-1 for order MB-1 is approved",
        ]
        refund_mail = next(m for m in inbox.to(CUSTOMER) if m["Subject"].startswith("We refunded"))
        assert "$21.00" in text_of(refund_mail)
        assert await published(db, "return.") == ["return.approved", "return.requested"]
        assert len(refund_form(stripe)) == 1

    async def test_a_return_requested_approved_received_refunded_one_email_per_step(
        self,
        client: Client,
        db: Database,
        shop: MerchantHandle,
        stripe: StripeSim,
        inbox: Inbox,
    ) -> None:
        account = await st.connect(client, shop, stripe)
        r = await client.put(
            "/api/v1/settings",
            json={"returns": {"auto_approve": False, "instructions": "Pack it in its box."}},
            headers=shop.headers,
        )
        assert r.status_code == 200, r.text
        alpha = await portal_supplier(client, shop, "Alpha")
        await offer(client, shop, alpha["supplier"]["id"], "RED", stock=5, unit_cost="3.10")
        order_id, [po] = await paid_routed_order(
            client, shop, stripe, account, "MB-2", [line("RED", 2)], expect=1
        )
        await ship(client, alpha, po["id"])
        assert await stock(db, "RED") == 3
        order = await detail(client, shop, order_id)
        red = order["lines"][0]["id"]

        # Requested (the merchant's policy queues it).
        r = await client.post(
            f"/api/v1/orders/{order_id}/returns",
            json={"lines": [{"line_id": red, "quantity": 1}], "reason": "Too big"},
            headers=shop.headers,
        )
        assert r.status_code == 201, r.text
        [ret] = r.json()["returns"]
        assert ret["status"] == "requested"
        await one(inbox, f"We received your return request {ret['number']}")

        # Approved by the merchant: the customer learns where to send it.
        r = await client.post(f"/api/v1/returns/{ret['id']}/approve", headers=shop.headers)
        assert r.status_code == 200, r.text
        approved = await one(inbox, f"Your return {ret['number']} for order MB-2 is approved")
        assert "Pack it in its box." in text_of(approved)

        # Received by the supplier, resellable: restocked there, the refund follows.
        r = await client.post(
            f"/supplier/v1/returns/{ret['id']}/receive",
            json={"condition": "resellable"},
            headers=bearer(alpha["api_key"]),
        )
        assert r.status_code == 200, r.text
        refund = await succeeded(client, shop, order_id)
        assert (refund["amount"], refund["origin"]) == ("10.50", "policy-return")
        assert await stock(db, "RED") == 4
        received = await one(inbox, f"We received your return {ret['number']}")
        assert f"your return {ret['number']} for order MB-2 has arrived in good condition" in (
            text_of(received)
        )
        refunded = await one(inbox, "We refunded $10.50 for order MB-2")
        assert "$10.50" in text_of(refunded)
        [sent] = refund_form(stripe)
        assert (sent["payment_intent"], sent["amount"]) == (PI, "1050")

        # One email per step, and each step on the timeline.
        order = await detail(client, shop, order_id)
        types = [e["type"] for e in order["timeline"]]
        for step in ("return.requested", "return.approved", "return.received"):
            assert types.count(step) == 1, (step, types)
        assert (types.count("refund.requested"), types.count("refund.succeeded")) == (1, 1), types
        assert await published(db, "return.") == [
            "return.approved",
            "return.received",
            "return.requested",
        ]
        # The supplier owes the returned item's cost.
        r = await client.get("/api/v1/supplier-credits", headers=shop.headers)
        assert r.status_code == 200, r.text
        [credit] = r.json()["items"]
        assert (credit["kind"], credit["amount"], credit["status"]) == (
            "return",
            "3.10",
            "expected",
        )
        # Confirmed, shipped, and one per step: requested, approved, received, refunded.
        assert len(inbox.to(CUSTOMER)) == 6, subjects(inbox)
