"""``PUT/DELETE /api/v1/settings/stripe``: a restricted key (checked once against Stripe, stored
encrypted, never shown again) or a connected account under the platform's key; what
``GET /api/v1/settings`` shows of it; refunds through a connected account."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from sqlalchemy import text

from app.db import Database
from app.security import SecretBox
from app.settings import Settings
from dropship.asgi import create_app
from dropship.simulators import StripeSim
from tests.conftest import MerchantHandle
from tests.support import stripe as st
from tests.support.orders import Client

URL = "/api/v1/settings/stripe"
ACCOUNT = "acct_1Nv0FGQ9RKHgCVdK"


@pytest.fixture
def sim() -> Iterator[StripeSim]:
    yield from st.serve()


@pytest.fixture
def app(settings: Settings, sim: StripeSim) -> Litestar:
    return create_app(st.stripe_settings(settings), run_workers=True, configure_logs=False)


async def stored(db: Database) -> list[tuple[object, ...]]:
    async with db.sessionmaker() as session:
        rows = await session.execute(
            text("SELECT mode, secret_key_encrypted, key_last4, account_id FROM stripe_connections")
        )
        return [tuple(r) for r in rows]


async def stripe_view(client: Client, merchant: MerchantHandle) -> dict[str, object]:
    r = await client.get("/api/v1/settings", headers=merchant.headers)
    assert r.status_code == 200
    view: dict[str, object] = r.json()["stripe"]
    return view


class TestKey:
    async def test_a_key_is_checked_stored_encrypted_and_never_shown(
        self,
        client: Client,
        merchant: MerchantHandle,
        other_merchant: MerchantHandle,
        sim: StripeSim,
        db: Database,
        settings: Settings,
    ) -> None:
        key = st.new_key()
        sim.add_key(key)
        r = await client.put(URL, json={"secret_key": key}, headers=merchant.headers)
        assert r.status_code == 200, r.text
        shown = {"connected": True, "mode": "key", "account_id": None, "key_last4": key[-4:]}
        assert r.json() == shown
        assert key not in r.text
        assert await stripe_view(client, merchant) == shown
        assert await stripe_view(client, other_merchant) == {
            "connected": False,
            "mode": None,
            "account_id": None,
            "key_last4": None,
        }
        # Checked once, with the key itself.
        [check] = sim.requests
        assert (check.method, check.path, check.headers["authorization"]) == (
            "GET",
            "/v1/balance",
            f"Bearer {key}",
        )
        [(mode, encrypted, last4, account)] = await stored(db)
        assert (mode, last4, account) == ("key", key[-4:], None)
        assert isinstance(encrypted, bytes)
        assert key.encode() not in encrypted
        assert SecretBox(settings.resolved_secret_key()).decrypt(encrypted) == key
        if settings.is_sqlite:  # not anywhere in the database file either
            path = Path(settings.database_url.split("///", 1)[1])
            for f in path.parent.glob(path.name + "*"):
                assert key.encode() not in f.read_bytes(), f

    async def test_a_key_stripe_refuses_is_a_422_and_nothing_is_stored(
        self, client: Client, merchant: MerchantHandle, sim: StripeSim, db: Database
    ) -> None:
        r = await client.put(URL, json={"secret_key": st.new_key()}, headers=merchant.headers)
        assert r.status_code == 422
        assert r.json()["extra"] == {"field": "secret_key"}
        assert r.json()["detail"] == (
            "secret_key: Stripe refused it: Invalid API Key provided: rk_test_****abcd"
        )
        assert await stored(db) == []

    async def test_stripe_unreachable_is_a_503(
        self, client: Client, merchant: MerchantHandle, sim: StripeSim, db: Database
    ) -> None:
        key = st.new_key()
        sim.add_key(key)
        for fault in ("timeout_before", "500"):
            sim.fail_next(fault)
            r = await client.put(URL, json={"secret_key": key}, headers=merchant.headers)
            assert (r.status_code, r.json()["extra"]) == (503, {"field": "secret_key"}), r.text
        assert await stored(db) == []

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"secret_key": "pk_test_51PublishableKey000000"}, "secret_key"),
            ({"secret_key": "rk_test_ with space"}, "secret_key"),
            ({"account_id": "acct_"}, "account_id"),
            ({}, "account_id"),
            ({"secret_key": st.new_key(), "account_id": ACCOUNT}, "secret_key"),
            ({"secret_key": "x" * 256}, "secret_key"),
        ],
    )
    async def test_bad_input_is_a_400_naming_the_field(
        self,
        client: Client,
        merchant: MerchantHandle,
        sim: StripeSim,
        db: Database,
        body: dict[str, str],
        field: str,
    ) -> None:
        r = await client.put(URL, json=body, headers=merchant.headers)
        assert (r.status_code, r.json()["extra"]["field"]) == (400, field), r.text
        assert sim.requests == []

    async def test_disconnect_forgets_it_and_refunds_stop(
        self, client: Client, merchant: MerchantHandle, sim: StripeSim, db: Database
    ) -> None:
        account = await st.connect(client, merchant, sim)
        order = await st.paid_order(client, merchant, sim, account)
        r = await client.delete(URL, headers=merchant.headers)
        assert r.status_code == 204
        assert await stored(db) == []
        assert (await stripe_view(client, merchant))["connected"] is False
        r = await client.post(
            f"/api/v1/orders/{order['id']}/refunds",
            json={"amount": "1.00"},
            headers=merchant.headers,
        )
        assert r.status_code == 409


class TestConnectedAccount:
    async def test_refunds_go_to_the_account_under_the_platform_key(
        self, client: Client, merchant: MerchantHandle, sim: StripeSim, db: Database
    ) -> None:
        sim.add_connected(ACCOUNT)
        r = await client.put(URL, json={"account_id": ACCOUNT}, headers=merchant.headers)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "connected": True,
            "mode": "account",
            "account_id": ACCOUNT,
            "key_last4": None,
        }
        assert await stored(db) == [("account", None, None, ACCOUNT)]
        order = await st.paid_order(client, merchant, sim, ACCOUNT)
        made = await st.refund(client, merchant, order["id"], amount="2.50")
        await st.settled(client, merchant, made["id"])
        [post] = sim.refund_requests()
        assert post.headers["authorization"] == f"Bearer {st.PLATFORM_KEY}"
        assert post.headers["stripe-account"] == ACCOUNT
        # Webhooks for that account apply; the account's own events name it.
        obj = dict(sim.refunds[next(iter(sim.refunds))])
        obj.pop("_scope")
        body, headers = st.signed(sim.event("refund.updated", obj, account=ACCOUNT))
        r = await client.post("/webhooks/stripe", content=body, headers=headers)
        assert r.json() == {"status": "processed"}

    async def test_an_account_not_connected_to_the_platform_is_a_422(
        self, client: Client, merchant: MerchantHandle, sim: StripeSim, db: Database
    ) -> None:
        r = await client.put(URL, json={"account_id": ACCOUNT}, headers=merchant.headers)
        assert (r.status_code, r.json()["extra"]) == (422, {"field": "account_id"}), r.text
        assert await stored(db) == []

    async def test_without_a_platform_key_accounts_are_a_503(
        self, settings: Settings, merchant: MerchantHandle, sim: StripeSim, db: Database
    ) -> None:
        from litestar.testing import AsyncTestClient

        api = create_app(st.stripe_settings(settings, stripe_secret_key=None), configure_logs=False)
        async with AsyncTestClient(api) as client:
            r = await client.put(URL, json={"account_id": ACCOUNT}, headers=merchant.headers)
        assert r.status_code == 503
        assert "DROPSHIP_STRIPE_SECRET_KEY" in r.json()["detail"]
        assert sim.requests == []
