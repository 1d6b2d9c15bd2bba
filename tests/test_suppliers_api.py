"""The merchant's supplier endpoints (``/api/v1/suppliers``): creation and its one-time key,
listing, patch semantics, key rotation, tenant isolation, connector settings (checked, masked,
stored encrypted)."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.db import Database
from app.security import SecretBox
from app.settings import Settings
from app.suppliers.models import Supplier
from tests.conftest import MerchantHandle
from tests.support.orders import count
from tests.support.portal import bearer
from tests.support.routing import create_supplier

Client = AsyncTestClient[Litestar]

REST = {"base_url": "https://api.supplier.example/v2/", "auth_value": "Bearer s3cret"}


async def row(db: Database, supplier_id: str) -> Supplier:
    async with db.sessionmaker() as session:
        supplier = await session.get(Supplier, uuid.UUID(supplier_id))
    assert supplier is not None
    return supplier


async def stored_config(db: Database, settings: Settings, supplier_id: str) -> dict[str, Any]:
    raw = (await row(db, supplier_id)).config_encrypted
    assert raw is not None
    return dict(json.loads(SecretBox(settings.secret_key).decrypt(raw)))


class TestCreate:
    async def test_created_with_a_key_shown_once_that_works(
        self, client: Client, db: Database, merchant: MerchantHandle
    ) -> None:
        r = await client.post(
            "/api/v1/suppliers",
            json={
                "name": "  Acme Parts ",
                "connector": "portal",
                "contact_email": "orders@acme-parts.example",
                "ship_from_country": "DE",
                "shipping_rates": {"de": {"first_item": "4.50", "additional_item": "1"}},
                "rate_limit_per_second": 2.5,
                "max_concurrency": 3,
            },
            headers=merchant.headers,
        )
        assert r.status_code == 201, r.text
        created = r.json()
        key = created["api_key"]
        assert key.startswith("dss_")
        assert len(key) == 4 + 43
        supplier = created["supplier"]
        assert supplier == {
            "id": supplier["id"],
            "name": "Acme Parts",
            "connector": "portal",
            "status": "active",
            "config": {"email_notice": True},
            "contact_email": "orders@acme-parts.example",
            "ship_from_country": "DE",
            "shipping_rates": {"DE": {"first_item": "4.50", "additional_item": "1"}},
            "rate_limit_per_second": 2.5,
            "max_concurrency": 3,
            "created_at": supplier["created_at"],
        }
        # Shown once: never again.
        again = await client.get(f"/api/v1/suppliers/{supplier['id']}", headers=merchant.headers)
        assert again.json() == supplier
        listed = await client.get("/api/v1/suppliers", headers=merchant.headers)
        assert listed.json() == {"items": [supplier], "next_cursor": None}
        assert key not in again.text + listed.text
        # It works on the supplier API.
        r = await client.get("/supplier/v1/orders", headers=bearer(key))
        assert (r.status_code, r.json()) == (200, {"items": [], "next_cursor": None})

    async def test_the_key_is_stored_only_as_its_hash(
        self, client: Client, db: Database, merchant: MerchantHandle
    ) -> None:
        created = await create_supplier(client, merchant, name="Hashed", connector="portal")
        key = created["api_key"]
        stored = await row(db, created["supplier"]["id"])
        assert stored.api_key_hash == hashlib.sha256(key.encode()).hexdigest()
        columns = [str(getattr(stored, c.key)) for c in Supplier.__table__.columns]
        assert not [c for c in columns if key in c or key.removeprefix("dss_") in c]

    async def test_settings_are_stored_encrypted(
        self, client: Client, db: Database, settings: Settings, merchant: MerchantHandle
    ) -> None:
        created = await create_supplier(
            client, merchant, name="Sealed", connector="rest_json", config=REST
        )
        raw = (await row(db, created["supplier"]["id"])).config_encrypted
        assert isinstance(raw, bytes)
        assert raw.startswith(b"gAAAAA")  # a Fernet token
        for clear in (b"s3cret", b"base_url", b"supplier.example"):
            assert clear not in raw
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)
        assert await stored_config(db, settings, created["supplier"]["id"]) == {
            "base_url": "https://api.supplier.example/v2",  # normalised
            "auth_value": "Bearer s3cret",
        }
        assert created["supplier"]["config"] == {
            "base_url": "https://api.supplier.example/v2",
            "auth_value": "********",
        }

    @pytest.mark.parametrize(
        ("body", "field", "detail"),
        [
            ({"connector": "fax"}, "connector", "unknown kind 'fax'; one of portal, rest_json"),
            ({"name": "   "}, "name", "required"),
            ({"name": "Taken"}, "name", "a supplier named 'Taken' already exists"),
        ],
        ids=["unknown-connector", "blank-name", "duplicate-name"],
    )
    async def test_refused_input_names_the_field_and_creates_nothing(
        self,
        client: Client,
        db: Database,
        merchant: MerchantHandle,
        body: dict[str, Any],
        field: str,
        detail: str,
    ) -> None:
        await create_supplier(client, merchant, name="Taken", connector="portal")
        r = await client.post(
            "/api/v1/suppliers",
            json={"name": "New", "connector": "portal", **body},
            headers=merchant.headers,
        )
        assert r.status_code == 400
        assert r.json()["extra"] == {"field": field}
        assert r.json()["detail"] == f"{field}: {detail}"
        assert await count(db, Supplier) == 1


class TestConnectorSettings:
    @pytest.mark.parametrize(
        ("config", "field", "message"),
        [
            ({"email_notice": "yes"}, "email_notice", "must be true or false"),
            ({"email_notice": 1}, "email_notice", "must be true or false"),
            ({"base_url": "https://x"}, "base_url", "unknown setting for a portal supplier"),
        ],
    )
    async def test_portal(
        self,
        client: Client,
        db: Database,
        merchant: MerchantHandle,
        config: dict[str, Any],
        field: str,
        message: str,
    ) -> None:
        r = await client.post(
            "/api/v1/suppliers",
            json={"name": "P", "connector": "portal", "config": config},
            headers=merchant.headers,
        )
        assert r.status_code == 400
        assert r.json()["extra"] == {"field": f"config.{field}"}
        assert r.json()["detail"] == f"config.{field}: {message}"
        assert await count(db, Supplier) == 0

    async def test_portal_without_notices(self, client: Client, merchant: MerchantHandle) -> None:
        created = await create_supplier(
            client, merchant, name="Quiet", connector="portal", config={"email_notice": False}
        )
        assert created["supplier"]["config"] == {"email_notice": False}

    @pytest.mark.parametrize(
        ("config", "field", "message"),
        [
            ({}, "base_url", "an http(s) URL is required"),
            ({"base_url": "ftp://x.example"}, "base_url", "an http(s) URL is required"),
            ({"base_url": 42}, "base_url", "an http(s) URL is required"),
            ({**REST, "order_path": "orders"}, "order_path", "must be a path starting with /"),
            ({**REST, "status_path": 7}, "status_path", "must be a path starting with /"),
            ({**REST, "cancel_path": "x/"}, "cancel_path", "must be a path starting with /"),
            ({**REST, "stock_path": ""}, "stock_path", "must be a path starting with /"),
            ({**REST, "field_map": ["lines"]}, "field_map", "must be an object"),
            ({**REST, "status_map": "ok"}, "status_map", "must be an object"),
            ({**REST, "timeout": 0}, "timeout", "seconds from 0.1 to 120"),
            ({**REST, "timeout": 121}, "timeout", "seconds from 0.1 to 120"),
            ({**REST, "timeout": "10"}, "timeout", "seconds from 0.1 to 120"),
        ],
    )
    async def test_rest_json(
        self,
        client: Client,
        db: Database,
        merchant: MerchantHandle,
        config: dict[str, Any],
        field: str,
        message: str,
    ) -> None:
        r = await client.post(
            "/api/v1/suppliers",
            json={"name": "R", "connector": "rest_json", "config": config},
            headers=merchant.headers,
        )
        assert r.status_code == 400
        assert r.json()["extra"] == {"field": f"config.{field}"}
        assert r.json()["detail"] == f"config.{field}: {message}"
        assert await count(db, Supplier) == 0


class TestListAndGet:
    async def test_pagination_oldest_first(self, client: Client, merchant: MerchantHandle) -> None:
        ids = [
            (await create_supplier(client, merchant, name=f"S{i}", connector="portal"))["supplier"][
                "id"
            ]
            for i in range(5)
        ]
        pages: list[list[str]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            r = await client.get("/api/v1/suppliers", params=params, headers=merchant.headers)
            assert r.status_code == 200, r.text
            pages.append([s["id"] for s in r.json()["items"]])
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert pages == [ids[0:2], ids[2:4], ids[4:5]]
        r = await client.get("/api/v1/suppliers", params={"limit": 201}, headers=merchant.headers)
        assert (r.status_code, r.json()["extra"]["field"]) == (400, "limit")

    async def test_unknown_id_is_404(self, client: Client, merchant: MerchantHandle) -> None:
        missing = uuid.uuid4()
        r = await client.get(f"/api/v1/suppliers/{missing}", headers=merchant.headers)
        assert r.json() == {
            "status_code": 404,
            "detail": f"supplier {missing} not found",
            "extra": {},
        }


class TestPatch:
    async def test_fields_change_and_absent_fields_stay(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        created = await create_supplier(
            client,
            merchant,
            name="Patchy",
            connector="portal",
            contact_email="a@patchy.example",
            ship_from_country="US",
            shipping_rates={"US": {"first_item": "4.00", "additional_item": "1.00"}},
        )
        path = f"/api/v1/suppliers/{created['supplier']['id']}"
        before = created["supplier"]
        r = await client.patch(path, json={}, headers=merchant.headers)
        assert (r.status_code, r.json()) == (200, before)

        r = await client.patch(
            path,
            json={
                "status": "inactive",
                "contact_email": "b@patchy.example",
                "ship_from_country": "CA",
                "shipping_rates": {"ca": {"first_item": "6"}, "*": {"first_item": "9.99"}},
                "rate_limit_per_second": 0.5,
                "max_concurrency": 1,
            },
            headers=merchant.headers,
        )
        assert r.status_code == 200, r.text
        assert r.json() == {
            **before,
            "status": "inactive",
            "contact_email": "b@patchy.example",
            "ship_from_country": "CA",
            # Replaced as a whole, codes upper-cased, a missing amount is 0.
            "shipping_rates": {
                "CA": {"first_item": "6", "additional_item": "0"},
                "*": {"first_item": "9.99", "additional_item": "0"},
            },
            "rate_limit_per_second": 0.5,
            "max_concurrency": 1,
        }
        r = await client.get(path, headers=merchant.headers)
        assert r.json()["status"] == "inactive"
        r = await client.patch(path, json={"status": "active"}, headers=merchant.headers)
        assert r.json()["status"] == "active"

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"status": "paused"}, "status"),
            ({"max_concurrency": 0}, "max_concurrency"),
            ({"rate_limit_per_second": 0}, "rate_limit_per_second"),
            ({"shipping_rates": {"USA": {"first_item": "1"}}}, "shipping_rates"),
            ({"config": {"email_notice": "no"}}, "config.email_notice"),
            ({"name": "renamed"}, "name"),
        ],
    )
    async def test_bad_patches_are_400_and_change_nothing(
        self, client: Client, merchant: MerchantHandle, body: dict[str, Any], field: str
    ) -> None:
        created = await create_supplier(client, merchant, name="Firm", connector="portal")
        path = f"/api/v1/suppliers/{created['supplier']['id']}"
        r = await client.patch(path, json=body, headers=merchant.headers)
        assert r.status_code == 400
        assert r.json()["extra"]["field"] == field
        assert (await client.get(path, headers=merchant.headers)).json() == created["supplier"]

    async def test_masked_secrets_sent_back_keep_their_stored_value(
        self, client: Client, db: Database, settings: Settings, merchant: MerchantHandle
    ) -> None:
        created = await create_supplier(
            client, merchant, name="Keeper", connector="rest_json", config=REST
        )
        sid = created["supplier"]["id"]
        path = f"/api/v1/suppliers/{sid}"
        shown = (await client.get(path, headers=merchant.headers)).json()["config"]
        assert shown == {"base_url": "https://api.supplier.example/v2", "auth_value": "********"}

        # The form sent back as shown, with one setting changed.
        r = await client.patch(
            path, json={"config": {**shown, "timeout": 30}}, headers=merchant.headers
        )
        assert r.status_code == 200, r.text
        assert r.json()["config"] == {**shown, "timeout": 30}
        assert await stored_config(db, settings, sid) == {
            "base_url": "https://api.supplier.example/v2",
            "auth_value": "Bearer s3cret",
            "timeout": 30,
        }
        # A new secret replaces the old one.
        r = await client.patch(
            path, json={"config": {**shown, "auth_value": "Bearer n3w"}}, headers=merchant.headers
        )
        assert r.json()["config"]["auth_value"] == "********"
        assert (await stored_config(db, settings, sid))["auth_value"] == "Bearer n3w"
        # ``config`` replaces the settings as a whole: what is left out is gone.
        r = await client.patch(
            path,
            json={"config": {"base_url": "https://other.example"}},
            headers=merchant.headers,
        )
        assert r.json()["config"] == {"base_url": "https://other.example"}
        assert await stored_config(db, settings, sid) == {"base_url": "https://other.example"}

    async def test_invalid_settings_keep_the_stored_ones(
        self, client: Client, db: Database, settings: Settings, merchant: MerchantHandle
    ) -> None:
        created = await create_supplier(
            client, merchant, name="Steady", connector="rest_json", config=REST
        )
        sid = created["supplier"]["id"]
        r = await client.patch(
            f"/api/v1/suppliers/{sid}",
            json={"config": {"base_url": "ftp://nope", "auth_value": "********"}},
            headers=merchant.headers,
        )
        assert r.status_code == 400
        assert r.json()["extra"] == {"field": "config.base_url"}
        assert r.json()["detail"] == "config.base_url: an http(s) URL is required"
        assert await stored_config(db, settings, sid) == {
            "base_url": "https://api.supplier.example/v2",
            "auth_value": "Bearer s3cret",
        }


class TestRotateKey:
    async def test_the_old_key_stops_working(
        self, client: Client, db: Database, merchant: MerchantHandle
    ) -> None:
        created = await create_supplier(client, merchant, name="Rotor", connector="portal")
        sid, old = created["supplier"]["id"], created["api_key"]
        r = await client.post(f"/api/v1/suppliers/{sid}/rotate-key", headers=merchant.headers)
        assert r.status_code == 200, r.text
        new = r.json()["api_key"]
        assert new.startswith("dss_")
        assert new != old
        assert r.json()["supplier"] == created["supplier"]
        assert (await row(db, sid)).api_key_hash == hashlib.sha256(new.encode()).hexdigest()
        assert (await client.get("/supplier/v1/orders", headers=bearer(old))).status_code == 401
        assert (await client.get("/supplier/v1/orders", headers=bearer(new))).status_code == 200


class TestTenantIsolation:
    async def test_another_merchants_supplier_is_404_and_unchanged(
        self,
        client: Client,
        db: Database,
        merchant: MerchantHandle,
        other_merchant: MerchantHandle,
    ) -> None:
        theirs = await create_supplier(client, other_merchant, name="Theirs", connector="portal")
        sid = theirs["supplier"]["id"]
        not_found = {"status_code": 404, "detail": f"supplier {sid} not found", "extra": {}}
        path = f"/api/v1/suppliers/{sid}"
        h = merchant.headers
        for r in (
            await client.get(path, headers=h),
            await client.patch(path, json={"status": "inactive"}, headers=h),
            await client.post(f"{path}/rotate-key", headers=h),
        ):
            assert (r.status_code, r.json()) == (404, not_found)
        assert (await client.get("/api/v1/suppliers", headers=h)).json()["items"] == []
        assert (await client.get(path, headers=other_merchant.headers)).json() == theirs["supplier"]
        # Their key still works: the rotation was refused.
        r = await client.get("/supplier/v1/orders", headers=bearer(theirs["api_key"]))
        assert r.status_code == 200
        # Names are unique per merchant, not across merchants.
        mine = await create_supplier(client, merchant, name="Theirs", connector="portal")
        assert mine["supplier"]["id"] != sid
