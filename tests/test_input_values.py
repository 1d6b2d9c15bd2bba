"""Input values checked against what they mean: bounds on every number, money that the database
stores exactly, datetimes with an offset and in range, country and currency codes against ISO,
one email rule, no NUL or megabyte strings, http(s) tracking links. Each bad value answers a 400
naming the field, and nothing changes; currency minor units are respected on output."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from dramatiq.rate_limits.backends import StubBackend
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.db import Database
from app.jobs.task import TaskContext
from app.mail.address import is_email
from app.merchants.service import MerchantError, validate_email
from app.orders.drafts import PayloadError, from_shopify
from app.orders.models import Order
from app.purchasing.models import Shipment
from app.purchasing.tasks import supplier_slots
from app.routing.models import RoutingRule
from app.security import SecretBox
from app.settings import Settings
from app.suppliers.models import Supplier, SupplierProduct
from app.timeline.models import OrderEvent
from tests.conftest import MerchantHandle
from tests.support.order_flow import accepted, order_id_of
from tests.support.orders import order_body
from tests.support.shopify import order_payload
from tests.support.wait import eventually

Client = AsyncTestClient[Litestar]
SUPPLIERS = "/api/v1/suppliers"
PRODUCTS = "/api/v1/supplier-products"
ORDERS = "/api/v1/orders"
RULES = "/api/v1/routing/rules"
CSV = {"Content-Type": "text/csv"}
CATALOG_HEADER = (
    "sku,supplier,supplier_sku,unit_cost,currency,stock,lead_time_days,ships_to,priority"
)
ORDER_HEADER = (
    "reference,currency,name,address1,city,province_code,zip,country_code,sku,quantity,price,email"
)
BIG = 2**63
CRLF_EMAIL = "ada@example.com\r\nBcc: everyone@example.net"
EMAIL_ERROR = "expected one email address, like orders@example.com"


def uk(what: str) -> str:
    return f"{what}'UK' is not an ISO 3166-1 alpha-2 country code (like US, GB, DE)"


async def count(db: Database, model: Any) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def assert_400(r: Any, field: str, detail: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert (body["status_code"], body["detail"], body["extra"]["field"]) == (
        400,
        f"{field}: {detail}",
        field,
    ), body


@pytest.fixture
async def supplier(client: Client, merchant: MerchantHandle) -> dict[str, Any]:
    r = await client.post(
        SUPPLIERS, json={"name": "PortalCo", "connector": "portal"}, headers=merchant.headers
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def supplier_key(supplier: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {supplier['api_key']}"}


def product(supplier: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "supplier_id": supplier["supplier"]["id"],
        "sku": "SKU-1",
        "unit_cost": "4.50",
        "currency": "USD",
        **overrides,
    }


async def upsert(
    client: Client, merchant: MerchantHandle, supplier: dict[str, Any], **overrides: Any
) -> Any:
    return await client.post(
        PRODUCTS, json=product(supplier, **overrides), headers=merchant.headers
    )


async def products(client: Client, merchant: MerchantHandle) -> list[dict[str, Any]]:
    r = await client.get(PRODUCTS, headers=merchant.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


# --------------------------------------------------------------------------- integers, floats


class TestNumbers:
    @pytest.mark.parametrize(
        ("overrides", "field", "detail"),
        [
            ({"stock": BIG}, "stock", "Expected `int` <= 1000000000"),
            ({"stock": -1}, "stock", "Expected `int` >= 0"),
            ({"priority": BIG}, "priority", "Expected `int` <= 10000"),
            ({"lead_time_days": BIG}, "lead_time_days", "Expected `int` <= 365"),
            ({"unit_cost": "1e400"}, "unit_cost", "must be at most 1000000000000, got 1E+400"),
            (
                {"unit_cost": "0.123456789"},
                "unit_cost",
                "at most 4 decimal places, got 0.123456789",
            ),
            ({"unit_cost": "NaN"}, "unit_cost", "must be a non-negative amount, got NaN"),
            ({"ships_to": ["UK"]}, "ships_to", uk("")),
            ({"ships_to": []}, "ships_to", "Expected `array` of length >= 1"),
            (
                {"currency": "XYZ"},
                "currency",
                "'XYZ' is not an ISO 4217 currency code (like USD, EUR, JPY)",
            ),
            ({"sku": "A\x00B"}, "sku", "must not contain NUL characters"),
            ({"sku": "A" * 256}, "sku", "Expected `str` of length <= 255"),
        ],
    )
    async def test_catalog_offer_out_of_range_is_refused(
        self,
        client: Client,
        merchant: MerchantHandle,
        supplier: dict[str, Any],
        db: Database,
        overrides: dict[str, Any],
        field: str,
        detail: str,
    ) -> None:
        assert_400(await upsert(client, merchant, supplier, **overrides), field, detail)
        assert await count(db, SupplierProduct) == 0

    async def test_stored_cost_is_the_answer(
        self, client: Client, merchant: MerchantHandle, supplier: dict[str, Any]
    ) -> None:
        r = await upsert(client, merchant, supplier, unit_cost="0.1235", ships_to=["gb", "XK"])
        assert r.status_code == 201, r.text
        assert (r.json()["unit_cost"], r.json()["ships_to"]) == ("0.1235", ["GB", "XK"])
        [stored] = await products(client, merchant)
        assert stored["unit_cost"] == "0.1235"

    @pytest.mark.parametrize(
        ("body", "field", "detail"),
        [
            (
                {"rate_limit_per_second": 1.4e-288},
                "rate_limit_per_second",
                "Expected `float` >= 0.01",
            ),
            ({"rate_limit_per_second": 1e6}, "rate_limit_per_second", "Expected `float` <= 1000.0"),
            ({"max_concurrency": BIG}, "max_concurrency", "Expected `int` <= 1000"),
            ({"ship_from_country": "UK"}, "ship_from_country", uk("")),
            (
                {"shipping_rates": {"UK": {"first_item": "1"}}},
                "shipping_rates",
                uk("") + ", or *",
            ),
            (
                {"shipping_rates": {"GB": {"first_item": "0.123456789"}}},
                "shipping_rates.GB.first_item",
                "at most 4 decimal places, got 0.123456789",
            ),
            (
                {"shipping_rates": {"GB": {"first_item": "1e400"}}},
                "shipping_rates.GB.first_item",
                "must be at most 1000000000000, got 1E+400",
            ),
            ({"contact_email": CRLF_EMAIL}, "contact_email", EMAIL_ERROR),
            ({"name": "Bad\x00Co"}, "name", "must not contain NUL characters"),
            (
                {
                    "connector": "rest_json",
                    "config": {"base_url": "https://x.example", "timeout": 1e-300},
                },
                "config.timeout",
                "seconds from 0.1 to 120",
            ),
            (
                {
                    "connector": "rest_json",
                    "config": {"base_url": "https://x.example", "timeout": True},
                },
                "config.timeout",
                "seconds from 0.1 to 120",
            ),
            (
                {"config": {"email_notice": "x" * 1_000_000}},
                "config.email_notice",
                "at most 10000 characters",
            ),
            (
                {"config": {"nested": {"deep": "a\x00b"}}},
                "config.nested.deep",
                "must not contain NUL characters",
            ),
            (
                {"config": {str(i): i for i in range(301)}},
                "config",
                "Expected `object` of length <= 300",
            ),
        ],
    )
    async def test_supplier_settings_out_of_range_are_refused(
        self,
        client: Client,
        merchant: MerchantHandle,
        db: Database,
        body: dict[str, Any],
        field: str,
        detail: str,
    ) -> None:
        r = await client.post(
            SUPPLIERS,
            json={"name": "PortalCo", "connector": "portal", **body},
            headers=merchant.headers,
        )
        assert_400(r, field, detail)
        assert await count(db, Supplier) == 0

    async def test_a_patch_is_bounded_the_same_way(
        self, client: Client, merchant: MerchantHandle, supplier: dict[str, Any]
    ) -> None:
        url = f"{SUPPLIERS}/{supplier['supplier']['id']}"
        r = await client.patch(
            url, json={"rate_limit_per_second": 1.4e-288}, headers=merchant.headers
        )
        assert_400(r, "rate_limit_per_second", "Expected `float` >= 0.01")
        r = await client.patch(url, json={"ship_from_country": "UK"}, headers=merchant.headers)
        assert_400(r, "ship_from_country", uk(""))
        shown = (await client.get(url, headers=merchant.headers)).json()
        assert (shown["rate_limit_per_second"], shown["ship_from_country"]) == (None, None)

    async def test_a_stored_tiny_rate_limit_is_clamped_when_placing(
        self, settings: Settings, db: Database
    ) -> None:
        """A rate stored before the bound existed must not build a window of 1e287 seconds."""

        class Recording(StubBackend):  # type: ignore[misc]
            windows: list[int] = []

            def incr_and_sum(
                self, key: str, keys: Any, amount: int, maximum: int, ttl: int
            ) -> bool:
                self.windows.append(len(keys()))
                return bool(super().incr_and_sum(key, keys, amount, maximum, ttl))

        backend = Recording()  # type: ignore[no-untyped-call]
        ctx = TaskContext(settings=settings, db=db, box=SecretBox("k"), _limits=backend)
        row = Supplier(id=uuid.uuid4(), name="Slow", rate_limit_per_second=1e-5)
        with supplier_slots(ctx, row):
            pass
        assert backend.windows == [100]  # one placement per 100 s, the slowest accepted


class TestIntegersElsewhere:
    @pytest.mark.parametrize(
        ("path", "body", "field", "detail"),
        [
            (RULES, {"name": "r", "position": BIG}, "position", "Expected `int` <= 1000000"),
            (RULES, {"name": "r", "match_countries": ["UK"]}, "match_countries[0]", uk("")),
            (RULES, {"name": "r\x00"}, "name", "must not contain NUL characters"),
            (
                RULES,
                {"name": "r", "match_skus": ["S"] * 1001},
                "match_skus",
                "Expected `array` of length <= 1000",
            ),
            (
                "/api/v1/routing/simulate",
                {"country": "UK", "lines": [{"sku": "S", "quantity": 1}]},
                "country",
                uk(""),
            ),
            (
                "/api/v1/routing/simulate",
                {"country": "GB", "lines": [{"sku": "S", "quantity": BIG}]},
                "lines[0].quantity",
                "Expected `int` <= 100000",
            ),
            (
                "/api/v1/routing/simulate",
                {"country": "GB", "lines": [{"sku": "S\x00", "quantity": 1}]},
                "lines[0].sku",
                "must not contain NUL characters",
            ),
        ],
    )
    async def test_routing_inputs(
        self,
        client: Client,
        merchant: MerchantHandle,
        db: Database,
        path: str,
        body: dict[str, Any],
        field: str,
        detail: str,
    ) -> None:
        assert_400(await client.post(path, json=body, headers=merchant.headers), field, detail)
        assert await count(db, RoutingRule) == 0

    async def test_rule_patch_is_bounded(self, client: Client, merchant: MerchantHandle) -> None:
        r = await client.post(RULES, json={"name": "r"}, headers=merchant.headers)
        assert r.status_code == 201, r.text
        url = f"{RULES}/{r.json()['id']}"
        assert_400(
            await client.patch(url, json={"position": -BIG}, headers=merchant.headers),
            "position",
            "Expected `int` >= -1000000",
        )
        [rule] = (await client.get(RULES, headers=merchant.headers)).json()
        assert rule["position"] == 0


# --------------------------------------------------------------------------- supplier API


class TestSupplierApi:
    @pytest.mark.parametrize(
        ("rows", "field", "detail"),
        [
            ([{"sku": "SKU-1", "quantity": BIG}], "[0].quantity", "Expected `int` <= 1000000000"),
            (
                [{"sku": "SKU-1", "quantity": 1, "unit_cost": "1e400"}],
                "[0].unit_cost",
                "must be at most 1000000000000, got 1E+400",
            ),
            (
                [{"sku": "SKU-1", "quantity": 1, "unit_cost": "0.123456789"}],
                "[0].unit_cost",
                "at most 4 decimal places, got 0.123456789",
            ),
            ([{"sku": "SKU\x00", "quantity": 1}], "[0].sku", "must not contain NUL characters"),
        ],
    )
    async def test_inventory_values(
        self,
        client: Client,
        merchant: MerchantHandle,
        supplier: dict[str, Any],
        rows: list[dict[str, Any]],
        field: str,
        detail: str,
    ) -> None:
        assert (await upsert(client, merchant, supplier, stock=3)).status_code == 201
        r = await client.put("/supplier/v1/inventory", json=rows, headers=supplier_key(supplier))
        assert_400(r, field, detail)
        [stored] = await products(client, merchant)
        assert (stored["stock"], stored["unit_cost"]) == (3, "4.50")

    @pytest.mark.parametrize(
        ("body", "field", "detail"),
        [
            (
                {"tracking_number": "T1", "shipped_at": "2026-01-01T10:00:00"},
                "shipped_at",
                "Expected `datetime` with a timezone component",
            ),
            (
                {"tracking_number": "T1", "shipped_at": "0001-01-01T00:00:00+05:00"},
                "shipped_at",
                "must be between 2000 and 2100",
            ),
            (
                {"tracking_number": "T1", "tracking_url": "javascript:alert(1)"},
                "tracking_url",
                "must be an http(s) URL",
            ),
            (
                {"tracking_number": "T1", "lines": [{"sku": "S", "quantity": BIG}]},
                "lines[0].quantity",
                "Expected `int` <= 100000",
            ),
            ({"tracking_number": "T\x001"}, "tracking_number", "must not contain NUL characters"),
        ],
    )
    async def test_shipment_values(
        self,
        client: Client,
        supplier: dict[str, Any],
        db: Database,
        body: dict[str, Any],
        field: str,
        detail: str,
    ) -> None:
        r = await client.post(
            f"/supplier/v1/orders/{uuid.uuid4()}/shipments",
            json=body,
            headers=supplier_key(supplier),
        )
        assert_400(r, field, detail)
        assert await count(db, Shipment) == 0

    @pytest.mark.parametrize(
        ("body", "field", "detail"),
        [
            (
                {"status": "in_transit", "occurred_at": "2026-01-01T10:00:00"},
                "occurred_at",
                "Expected `datetime` with a timezone component",
            ),
            (
                {"status": "in_transit", "occurred_at": "0001-01-01T00:00:00+05:00"},
                "occurred_at",
                "must be between 2000 and 2100",
            ),
            (
                {
                    "status": "in_transit",
                    "occurred_at": "2026-01-01T10:00:00Z",
                    "description": "\x00",
                },
                "description",
                "must not contain NUL characters",
            ),
        ],
    )
    async def test_tracking_event_values(
        self,
        client: Client,
        supplier: dict[str, Any],
        body: dict[str, Any],
        field: str,
        detail: str,
    ) -> None:
        r = await client.post(
            f"/supplier/v1/shipments/{uuid.uuid4()}/events",
            json=body,
            headers=supplier_key(supplier),
        )
        assert_400(r, field, detail)

    async def test_reject_lines_are_bounded(self, client: Client, supplier: dict[str, Any]) -> None:
        r = await client.post(
            f"/supplier/v1/orders/{uuid.uuid4()}/reject",
            json={"reason": "no", "lines": ["S"] * 501},
            headers=supplier_key(supplier),
        )
        assert_400(r, "lines", "Expected `array` of length <= 500")


# --------------------------------------------------------------------------- orders


def _address(**changes: Any) -> dict[str, Any]:
    return {**order_body()["shipping_address"], **changes}


class TestOrders:
    @pytest.mark.parametrize(
        ("body", "field", "detail"),
        [
            (
                order_body(currency="XYZ"),
                "currency",
                "'XYZ' is not an ISO 4217 currency code (like USD, EUR, JPY)",
            ),
            (
                order_body(shipping_address=_address(country_code="UK")),
                "shipping_address.country_code",
                uk(""),
            ),
            (order_body(email=CRLF_EMAIL), "email", EMAIL_ERROR),
            (order_body(email="not-an-email@"), "email", EMAIL_ERROR),
            (
                order_body(currency="JPY"),  # the body's prices are 10.50 and 4.99
                "lines[0].price",
                "JPY amounts have 0 decimal place(s) at most, got 10.50",
            ),
            (order_body(note="x\x00y"), "note", "must not contain NUL characters"),
            (
                order_body(shipping_address=_address(city="A\x00")),
                "shipping_address.city",
                "must not contain NUL characters",
            ),
        ],
    )
    async def test_manual_order_values(
        self,
        client: Client,
        merchant: MerchantHandle,
        db: Database,
        body: dict[str, Any],
        field: str,
        detail: str,
    ) -> None:
        assert_400(await client.post(ORDERS, json=body, headers=merchant.headers), field, detail)
        assert await count(db, Order) == 0

    @pytest.mark.parametrize(
        ("currency", "price", "shipping", "shown_price", "total"),
        [
            ("JPY", "1000", "0", "1000", "2000"),
            ("USD", "9.95", "0", "9.95", "19.90"),
            ("BHD", "1.5", "0.25", "1.500", "3.250"),
        ],
    )
    async def test_amounts_are_shown_in_the_currency_minor_units(
        self,
        client: Client,
        merchant: MerchantHandle,
        currency: str,
        price: str,
        shipping: str,
        shown_price: str,
        total: str,
    ) -> None:
        body = order_body(
            currency=currency,
            shipping_price=shipping,
            lines=[{"sku": "SKU-RED", "quantity": 2, "price": price}],
        )
        r = await client.post(ORDERS, json=body, headers=merchant.headers)
        assert r.status_code == 201, r.text
        assert (r.json()["total_price"], r.json()["lines"][0]["price"]) == (total, shown_price)
        [listed] = (await client.get(ORDERS, headers=merchant.headers)).json()["items"]
        assert listed["total_price"] == total

    async def test_kosovo_is_a_country(self, client: Client, merchant: MerchantHandle) -> None:
        body = order_body(shipping_address=_address(country_code="XK", province_code=None))
        r = await client.post(ORDERS, json=body, headers=merchant.headers)
        assert r.status_code == 201, r.text

    @pytest.mark.parametrize(
        ("params", "field", "detail"),
        [
            (
                {"created_from": "0001-01-01T00:00:00+05:00"},
                "created_from",
                "must be between 2000 and 2100",
            ),
            (
                {"created_to": "9999-12-31T23:00:00-05:00"},
                "created_to",
                "must be between 2000 and 2100",
            ),
        ],
    )
    async def test_list_filters_in_range(
        self,
        client: Client,
        merchant: MerchantHandle,
        params: dict[str, str],
        field: str,
        detail: str,
    ) -> None:
        assert_400(await client.get(ORDERS, params=params, headers=merchant.headers), field, detail)


class TestCsv:
    @pytest.mark.parametrize(
        ("row", "reason"),
        [
            ("R1,USD,Ada,1 Main,Austin,TX,78701,UK,SKU-RED,1,1.00,", uk("country_code: ")),
            (
                "R1,XYZ,Ada,1 Main,Austin,TX,78701,US,SKU-RED,1,1.00,",
                "currency: 'XYZ' is not an ISO 4217 currency code (like USD, EUR, JPY)",
            ),
            (
                f'R1,USD,Ada,1 Main,Austin,TX,78701,US,SKU-RED,1,1.00,"{CRLF_EMAIL}"',
                f"email: {EMAIL_ERROR}",
            ),
            (
                "R1,JPY,Ada,1 Main,Austin,TX,78701,US,SKU-RED,1,1.5,",
                "price: JPY amounts have 0 decimal place(s) at most, got 1.5",
            ),
            (
                "R1,USD,Ada,1 Main,Austin,TX,78701,US,SKU-RED,1,0.123456789,",
                "price: at most 4 decimal places, got 0.123456789",
            ),
            (
                "R1,USD,Ada,1 Main,Austin,TX,78701,US,SKU-RED," + "9" * 5000 + ",1,",
                "quantity: must be a whole number from 1 to 100000, got '" + "9" * 5000 + "'",
            ),
        ],
    )
    async def test_order_rows(
        self, client: Client, merchant: MerchantHandle, db: Database, row: str, reason: str
    ) -> None:
        r = await client.post(
            f"{ORDERS}/import",
            content=f"{ORDER_HEADER}\n{row}\n".encode(),
            headers={**merchant.headers, **CSV},
        )
        assert r.status_code == 200, r.text
        assert [(v["row"], v["status"], v["reason"]) for v in r.json()["rows"]] == [
            (2, "rejected", reason)
        ]
        assert await count(db, Order) == 0

    @pytest.mark.parametrize(
        ("row", "reason"),
        [
            ("SKU-1,PortalCo,S-1,1.00,USD,1,1,UK,1", uk("ships_to: ")),
            (
                "SKU-1,PortalCo,S-1,1.00,USD,1,1,,1",
                "ships_to: ISO country codes separated by spaces, or *",
            ),
            (
                "SKU-1,PortalCo,S-1,1e400,USD,1,1,*,1",
                "unit_cost: must be at most 1000000000000, got 1E+400",
            ),
            (
                "SKU-1,PortalCo,S-1,0.123456789,USD,1,1,*,1",
                "unit_cost: at most 4 decimal places, got 0.123456789",
            ),
            (
                "SKU-1,PortalCo,S-1,1.00,XYZ,1,1,*,1",
                "currency: 'XYZ' is not an ISO 4217 currency code (like USD, EUR, JPY)",
            ),
            (
                f"SKU-1,PortalCo,S-1,1.00,USD,{BIG},1,*,1",
                f"stock: must be from 0 to 1000000000, got {BIG}",
            ),
            (
                f"SKU-1,PortalCo,S-1,1.00,USD,1,{BIG},*,1",
                f"lead_time_days: must be from 0 to 365, got {BIG}",
            ),
            (
                f"SKU-1,PortalCo,S-1,1.00,USD,1,1,*,{BIG}",
                f"priority: must be from 1 to 10000, got {BIG}",
            ),
        ],
    )
    async def test_catalog_rows(
        self,
        client: Client,
        merchant: MerchantHandle,
        supplier: dict[str, Any],
        db: Database,
        row: str,
        reason: str,
    ) -> None:
        r = await client.post(
            f"{PRODUCTS}/import",
            content=f"{CATALOG_HEADER}\n{row}\n".encode(),
            headers={**merchant.headers, **CSV},
        )
        assert r.status_code == 200, r.text
        assert [(v["row"], v["status"], v["reason"]) for v in r.json()["rows"]] == [
            (2, "rejected", reason)
        ]
        assert await count(db, SupplierProduct) == 0


# --------------------------------------------------------------------------- emails


@pytest.mark.parametrize(
    ("email", "ok"),
    [
        ("owner@example.com", True),
        (CRLF_EMAIL, False),
        ("Owner <owner@example.com>", False),
        ("owner@", False),
        ("a@b@example.com", False),
        ("owner@example.com,x@example.com", False),
    ],
)
def test_one_email_rule_for_merchants_suppliers_and_customers(email: str, ok: bool) -> None:
    assert is_email(email) is ok
    if ok:
        assert validate_email(email) == email
    else:
        with pytest.raises(MerchantError):
            validate_email(email)
    draft = from_shopify(order_payload(email=email, contact_email=None))
    assert draft.email == (email if ok else None)


# --------------------------------------------------------------------------- Shopify


class TestShopify:
    def test_currency_must_be_iso_4217(self) -> None:
        with pytest.raises(PayloadError) as caught:
            from_shopify(order_payload(currency="XYZ"))
        assert (caught.value.field, caught.value.detail) == (
            "currency",
            "'XYZ' is not an ISO 4217 currency code (like USD, EUR, JPY)",
        )

    @pytest.mark.parametrize("at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
    def test_timestamps_in_range(self, at: str) -> None:
        with pytest.raises(PayloadError) as caught:
            from_shopify(order_payload(created_at=at))
        assert (caught.value.field, caught.value.detail) == (
            "created_at",
            f"must be between 2000 and 2100: {at!r}",
        )

    def test_an_unusable_email_is_dropped_not_the_order(self) -> None:
        draft = from_shopify(order_payload(email=CRLF_EMAIL, contact_email=None))
        assert draft.email is None
        assert draft.extra["dropped"][0].startswith("email dropped: ")

    async def test_bad_email_and_unknown_country_keep_the_order_for_a_person(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        payload = order_payload(email=CRLF_EMAIL, contact_email=None)
        payload["customer"]["email"] = CRLF_EMAIL
        payload["shipping_address"]["country_code"] = "UK"
        await accepted(client, "orders/create", payload)
        order_id = await order_id_of(db)

        async def validated() -> Order | None:
            async with db.sessionmaker() as session:
                order = await session.get(Order, order_id)
                return order if order is not None and order.status == "needs_attention" else None

        order = await eventually(validated)
        assert order.email is None
        assert "shipping address country_code 'UK' is not an ISO country code" in (
            order.status_reason or ""
        )
        async with db.sessionmaker() as session:
            notes = (
                await session.scalars(
                    select(OrderEvent.message)
                    .where(
                        OrderEvent.order_id == order_id, OrderEvent.type == "order.value_dropped"
                    )
                    .order_by(OrderEvent.message)
                )
            ).all()
        assert [n.split(":")[0] for n in notes] == ["customer.email dropped", "email dropped"]
