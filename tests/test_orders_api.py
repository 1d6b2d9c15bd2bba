"""The merchant order API: listing (auth, filters, cursor pagination, tenants), manual entry and
what validation makes of it, bad input, and the exceptions queue."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from app.db import Database
from app.exceptions.models import ExceptionCase
from app.merchants.models import ApiToken
from app.orders.models import Customer, Order, OrderLine
from tests.conftest import MerchantHandle
from tests.support.orders import (
    Client,
    add_catalog,
    all_pages,
    count,
    create_order,
    get_order,
    order_body,
    wait_for_status,
)
from tests.support.wait import eventually

ORDERS = "/api/v1/orders"
EXCEPTIONS = "/api/v1/exceptions"


async def set_created_at(db: Database, order_id: str, at: datetime) -> None:
    async with db.transaction() as s:
        await s.execute(update(Order).where(Order.id == uuid.UUID(order_id)).values(created_at=at))


def assert_bad_request(r: Any, field: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status_code"] == 400
    assert body["detail"].startswith(f"{field}: "), body
    assert body["extra"]["field"] == field, body


class TestAuthentication:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", ORDERS),
            ("GET", f"{ORDERS}/{uuid.UUID(int=1)}"),
            ("POST", ORDERS),
            ("POST", f"{ORDERS}/import"),
            ("GET", EXCEPTIONS),
        ],
    )
    async def test_no_header_is_401_saying_what_to_send(
        self, client: Client, merchant: MerchantHandle, method: str, path: str
    ) -> None:
        r = await client.request(method, path, json={})
        assert r.status_code == 401
        assert r.json() == {
            "status_code": 401,
            "detail": "missing bearer token: send 'Authorization: Bearer <token>'",
            "extra": {},
        }
        assert r.headers["www-authenticate"] == 'Bearer realm="dropship"'

    @pytest.mark.parametrize(
        "header",
        ["Bearer dsm_not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "token"],
    )
    async def test_bad_credentials_are_401(
        self, client: Client, merchant: MerchantHandle, header: str
    ) -> None:
        r = await client.get(ORDERS, headers={"Authorization": header})
        assert r.status_code == 401
        assert r.json()["status_code"] == 401
        assert "Bearer" in r.headers["www-authenticate"]

    async def test_wrong_token_says_it_is_invalid(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        r = await client.get(ORDERS, headers={"Authorization": "Bearer dsm_nope"})
        assert r.json()["detail"] == "invalid or revoked merchant token"
        assert r.headers["www-authenticate"] == 'Bearer realm="dropship", error="invalid_token"'

    async def test_revoked_token_is_401(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        assert (await client.get(ORDERS, headers=merchant.headers)).status_code == 200
        async with db.transaction() as s:
            await s.execute(
                update(ApiToken)
                .where(ApiToken.merchant_id == merchant.id)
                .values(revoked_at=datetime.now(UTC))
            )
        r = await client.get(ORDERS, headers=merchant.headers)
        assert r.status_code == 401
        assert r.json()["detail"] == "invalid or revoked merchant token"

    async def test_unauthenticated_bad_body_is_401_not_400_and_stores_nothing(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        r = await client.post(ORDERS, json={"currency": "usd"})
        assert r.status_code == 401
        r = await client.post(ORDERS, json=order_body(), headers={"Authorization": "Bearer x"})
        assert r.status_code == 401
        assert await count(db, Order) == 0


class TestListFilters:
    async def _three_statuses(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> dict[str, str]:
        await add_catalog(db, merchant, "SKU-RED", "SKU-BLUE")
        ready = await create_order(client, merchant, "R-READY")
        held = await create_order(client, merchant, "R-HELD", financial_status="pending")
        attention = await create_order(
            client,
            merchant,
            "R-ATTN",
            lines=[{"sku": "SKU-UNKNOWN", "quantity": 1, "price": "1.00"}],
        )
        await wait_for_status(client, merchant, ready["id"], "ready_to_route")
        await wait_for_status(client, merchant, held["id"], "on_hold")
        await wait_for_status(client, merchant, attention["id"], "needs_attention")
        return {"ready": ready["id"], "held": held["id"], "attention": attention["id"]}

    async def test_status_single_and_comma_list(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        ids = await self._three_statuses(client, merchant, db)

        async def listed(status: str) -> list[str]:
            r = await client.get(ORDERS, params={"status": status}, headers=merchant.headers)
            assert r.status_code == 200, r.text
            return [o["id"] for o in r.json()["items"]]

        assert await listed("needs_attention") == [ids["attention"]]
        assert await listed("on_hold") == [ids["held"]]
        assert await listed("ready_to_route") == [ids["ready"]]
        assert await listed("received") == []
        assert await listed("needs_attention,on_hold") == [ids["attention"], ids["held"]]
        assert await listed(" ready_to_route , needs_attention ") == [
            ids["attention"],
            ids["ready"],
        ]
        summary = (
            await client.get(ORDERS, params={"status": "on_hold"}, headers=merchant.headers)
        ).json()["items"][0]
        assert summary["status"] == "on_hold"
        assert summary["status_reason"] == "payment is pending review"

    async def test_empty_status_is_no_filter(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        order = await create_order(client, merchant)
        for status in ("", ",", " "):
            r = await client.get(ORDERS, params={"status": status}, headers=merchant.headers)
            assert [o["id"] for o in r.json()["items"]] == [order["id"]]

    @pytest.mark.parametrize("status", ["bogus", "received,bogus", "READY_TO_ROUTE", "received,,x"])
    async def test_unknown_status_is_400_naming_status(
        self, client: Client, merchant: MerchantHandle, status: str
    ) -> None:
        r = await client.get(ORDERS, params={"status": status}, headers=merchant.headers)
        assert_bad_request(r, "status")
        assert "ready_to_route" in r.json()["detail"]  # says what is allowed

    async def test_created_from_inclusive_created_to_exclusive_offsets_respected(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        jan = await create_order(client, merchant, "JAN")
        feb = await create_order(client, merchant, "FEB")
        mar = await create_order(client, merchant, "MAR")
        await set_created_at(db, jan["id"], datetime(2026, 1, 15, tzinfo=UTC))
        await set_created_at(db, feb["id"], datetime(2026, 2, 1, tzinfo=UTC))
        await set_created_at(db, mar["id"], datetime(2026, 3, 15, tzinfo=UTC))

        async def refs(**params: str) -> list[str]:
            r = await client.get(ORDERS, params=params, headers=merchant.headers)
            assert r.status_code == 200, r.text
            return [o["reference"] for o in r.json()["items"]]

        assert await refs(created_from="2026-02-01T00:00:00Z") == ["MAR", "FEB"]
        assert await refs(created_to="2026-02-01T00:00:00Z") == ["JAN"]
        assert await refs(
            created_from="2026-02-01T00:00:00Z", created_to="2026-03-01T00:00:00Z"
        ) == ["FEB"]
        # 02:00 at +02:00 is midnight UTC: FEB is included; one hour later it is not.
        assert await refs(created_from="2026-02-01T02:00:00+02:00") == ["MAR", "FEB"]
        assert await refs(created_from="2026-02-01T03:00:00+02:00") == ["MAR"]
        assert await refs(created_from="2026-04-01T00:00:00Z") == []
        listed = (await client.get(ORDERS, headers=merchant.headers)).json()["items"]
        assert [o["created_at"] for o in listed] == [
            "2026-03-15T00:00:00Z",
            "2026-02-01T00:00:00Z",
            "2026-01-15T00:00:00Z",
        ]

    @pytest.mark.parametrize("field", ["created_from", "created_to"])
    @pytest.mark.parametrize("value", ["2026-02-01", "2026-02-01T00:00:00", "yesterday"])
    async def test_date_without_offset_is_400_naming_the_parameter(
        self, client: Client, merchant: MerchantHandle, field: str, value: str
    ) -> None:
        r = await client.get(ORDERS, params={field: value}, headers=merchant.headers)
        assert_bad_request(r, field)

    async def test_naive_datetime_error_says_to_add_an_offset(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        r = await client.get(
            ORDERS, params={"created_to": "2026-02-01T00:00:00"}, headers=merchant.headers
        )
        assert r.json()["detail"] == ("created_to: include a UTC offset, e.g. 2026-01-31T00:00:00Z")


class TestListPagination:
    async def test_seven_orders_in_pages_of_three(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        created = [(await create_order(client, merchant, f"P-{i}"))["id"] for i in range(7)]
        pages = await all_pages(client, merchant, ORDERS, limit=3)
        assert [len(p) for p in pages] == [3, 3, 1]
        listed = [o["id"] for p in pages for o in p]
        assert listed == list(reversed(created))  # newest first, none twice, none missing
        stamps = [o["created_at"] for p in pages for o in p]
        assert stamps == sorted(stamps, reverse=True)

    async def test_exact_multiple_has_no_empty_last_page(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        for i in range(4):
            await create_order(client, merchant, f"P-{i}")
        pages = await all_pages(client, merchant, ORDERS, limit=2)
        assert [len(p) for p in pages] == [2, 2]

    async def test_same_created_at_is_ordered_by_id_without_gaps(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        ids = [(await create_order(client, merchant, f"T-{i}"))["id"] for i in range(5)]
        for order_id in ids:
            await set_created_at(db, order_id, datetime(2026, 5, 1, 12, tzinfo=UTC))
        pages = await all_pages(client, merchant, ORDERS, limit=2)
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [o["id"] for p in pages for o in p] == sorted(ids, reverse=True)

    async def test_new_orders_do_not_shift_later_pages(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        first = [(await create_order(client, merchant, f"S-{i}"))["id"] for i in range(4)]
        page1 = (await client.get(ORDERS, params={"limit": 2}, headers=merchant.headers)).json()
        await create_order(client, merchant, "S-new")
        page2 = (
            await client.get(
                ORDERS,
                params={"limit": 2, "cursor": page1["next_cursor"]},
                headers=merchant.headers,
            )
        ).json()
        assert [o["id"] for o in page1["items"] + page2["items"]] == list(reversed(first))
        assert page2["next_cursor"] is None

    async def test_cursor_combines_with_filters(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        ids = [(await create_order(client, merchant, f"F-{i}"))["id"] for i in range(5)]
        pages = await all_pages(
            client, merchant, ORDERS, limit=2, created_from="2000-01-01T00:00:00Z"
        )
        assert [o["id"] for p in pages for o in p] == list(reversed(ids))

    @pytest.mark.parametrize(
        "cursor",
        [
            "garbage",
            "!!!",
            base64.urlsafe_b64encode(b"\xff\xfe").decode(),
            base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|not-a-uuid").decode(),
            # A well-formed cursor with a naive timestamp used to be a 500.
            base64.urlsafe_b64encode(f"2026-01-01T00:00:00|{uuid.UUID(int=2)}".encode()).decode(),
        ],
    )
    async def test_garbage_cursor_is_400_naming_cursor(
        self, client: Client, merchant: MerchantHandle, cursor: str
    ) -> None:
        r = await client.get(ORDERS, params={"cursor": cursor}, headers=merchant.headers)
        assert_bad_request(r, "cursor")

    @pytest.mark.parametrize("limit", ["0", "-1", "201", "1000", "abc", "2.5"])
    async def test_limit_out_of_range_is_400_naming_limit(
        self, client: Client, merchant: MerchantHandle, limit: str
    ) -> None:
        r = await client.get(ORDERS, params={"limit": limit}, headers=merchant.headers)
        assert_bad_request(r, "limit")

    @pytest.mark.parametrize("limit", ["1", "200"])
    async def test_limit_bounds_are_accepted(
        self, client: Client, merchant: MerchantHandle, limit: str
    ) -> None:
        r = await client.get(ORDERS, params={"limit": limit}, headers=merchant.headers)
        assert r.status_code == 200
        assert r.json() == {"items": [], "next_cursor": None}


class TestTenantIsolation:
    async def test_other_merchant_sees_nothing_and_gets_404(
        self,
        client: Client,
        merchant: MerchantHandle,
        other_merchant: MerchantHandle,
    ) -> None:
        order = await create_order(
            client, merchant, lines=[{"sku": "SKU-NOPE", "quantity": 1, "price": "1"}]
        )
        await wait_for_status(client, merchant, order["id"], "needs_attention")

        listing = await client.get(ORDERS, headers=other_merchant.headers)
        assert listing.json() == {"items": [], "next_cursor": None}
        r = await client.get(f"{ORDERS}/{order['id']}", headers=other_merchant.headers)
        assert r.status_code == 404
        assert r.json() == {
            "status_code": 404,
            "detail": f"order {order['id']} not found",
            "extra": {},
        }
        exceptions = await client.get(EXCEPTIONS, headers=other_merchant.headers)
        assert exceptions.json() == {"items": [], "next_cursor": None}
        # ...and the owner still sees it.
        assert (await get_order(client, merchant, order["id"]))["reference"] == "PO-1001"

    async def test_references_are_per_merchant(
        self,
        client: Client,
        merchant: MerchantHandle,
        other_merchant: MerchantHandle,
    ) -> None:
        mine = await create_order(client, merchant, "SAME-REF")
        theirs = await create_order(client, other_merchant, "SAME-REF")
        assert mine["id"] != theirs["id"]
        for handle, order in ((merchant, mine), (other_merchant, theirs)):
            items = (await client.get(ORDERS, headers=handle.headers)).json()["items"]
            assert [o["id"] for o in items] == [order["id"]]

    async def test_unknown_order_is_404(self, client: Client, merchant: MerchantHandle) -> None:
        r = await client.get(f"{ORDERS}/{uuid.uuid4()}", headers=merchant.headers)
        assert r.status_code == 404
        r = await client.get(f"{ORDERS}/not-a-uuid", headers=merchant.headers)
        assert r.status_code == 404


class TestManualEntry:
    async def test_201_with_exact_totals_lines_and_timeline(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        body = order_body(
            "PO-77",
            tax="2.08",
            shipping_price="5",
            discount="3.00",
            shipping_method="Ground",
            note="leave at the door",
        )
        r = await client.post(ORDERS, json=body, headers=merchant.headers)
        assert r.status_code == 201, r.text
        order = r.json()
        assert order["source"] == "manual"
        assert order["status"] == "received"
        assert order["reference"] == "PO-77"
        assert order["name"] == "PO-77"
        assert order["currency"] == "USD"
        assert order["email"] == "ada@example.com"
        assert order["financial_status"] == "paid"
        assert order["shopify_order_id"] is None
        # 2 x 10.50 + 1 x 4.99 = 25.99; + 2.08 tax + 5.00 shipping - 3.00 discount = 30.07
        assert order["subtotal_price"] == "25.99"
        assert order["total_tax"] == "2.08"
        assert order["total_shipping"] == "5.00"
        assert order["total_discounts"] == "3.00"
        assert order["total_price"] == "30.07"
        assert [(ln["sku"], ln["title"], ln["quantity"], ln["price"]) for ln in order["lines"]] == [
            ("SKU-RED", "Red mug", 2, "10.50"),
            ("SKU-BLUE", "SKU-BLUE", 1, "4.99"),
        ]
        assert order["shipping_address"]["country_code"] == "US"
        assert order["shipping_address"]["zip"] == "78701"
        assert order["shipping_method"] == "Ground"
        assert order["note"] == "leave at the door"
        assert order["tracking_url"].startswith("http://testserver.local/track/")
        first = order["timeline"][0]
        assert first["type"] == "order.received"
        assert first["message"] == "order PO-77 received from manual"
        assert first["data"]["total_price"] == "30.07"
        assert first["data"]["lines"] == 2

        stored = await get_order(client, merchant, order["id"])
        for field in ("subtotal_price", "total_price", "total_shipping", "lines", "created_at"):
            assert stored[field] == order[field], field
        assert await count(db, OrderLine) == 2

    async def test_amounts_as_json_numbers_stay_exact(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        order = await create_order(
            client,
            merchant,
            lines=[{"sku": "A", "quantity": 3, "price": 0.1}],
            tax=0.2,
        )
        assert order["subtotal_price"] == "0.30"
        assert order["total_price"] == "0.50"

    async def test_without_reference_is_named_manual_and_never_deduplicated(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        a = await create_order(client, merchant, None)
        b = await create_order(client, merchant, None)
        assert a["id"] != b["id"]
        assert a["reference"] is None
        assert a["name"] == "manual"
        assert await count(db, Order) == 2

    async def test_unknown_sku_needs_attention_with_an_exception_naming_it(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        order = await create_order(
            client, merchant, lines=[{"sku": "GHOST-1", "quantity": 1, "price": "9.00"}]
        )
        detail = await wait_for_status(client, merchant, order["id"], "needs_attention")
        assert detail["status_reason"] == "SKU GHOST-1 is not in any active supplier's catalog"
        types = [e["type"] for e in detail["timeline"]]
        assert types[0] == "order.received"
        assert "validation.catalog" in types
        # The customer's order confirmation (email.*) may land on the timeline at any point.
        assert [t for t in types if not t.startswith("email.")][-1] == "status.needs_attention"

        r = await client.get(EXCEPTIONS, headers=merchant.headers)
        [case] = r.json()["items"]
        assert case["order_id"] == order["id"]
        assert case["kind"] == "validation_failed"
        assert case["reason"] == "SKU GHOST-1 is not in any active supplier's catalog"
        assert case["data"] == {"problems": ["SKU GHOST-1 is not in any active supplier's catalog"]}
        assert case["resolved_at"] is None

    async def test_catalogued_skus_become_ready_to_route(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await add_catalog(db, merchant, "SKU-RED", "SKU-BLUE")
        order = await create_order(client, merchant)
        detail = await wait_for_status(client, merchant, order["id"], "ready_to_route")
        assert detail["status_reason"] is None
        catalog = [e for e in detail["timeline"] if e["type"] == "validation.catalog"]
        assert [e["message"] for e in catalog] == ["every SKU is in the catalog"]
        assert (await client.get(EXCEPTIONS, headers=merchant.headers)).json()["items"] == []

    async def test_another_merchants_catalog_does_not_count(
        self,
        client: Client,
        merchant: MerchantHandle,
        other_merchant: MerchantHandle,
        db: Database,
    ) -> None:
        await add_catalog(db, other_merchant, "SKU-RED", "SKU-BLUE")
        order = await create_order(client, merchant)
        detail = await wait_for_status(client, merchant, order["id"], "needs_attention")
        assert "SKU-RED" in detail["status_reason"]
        assert "SKU-BLUE" in detail["status_reason"]

    async def test_duplicate_reference_is_409_with_the_existing_order(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        first = await create_order(client, merchant, "DUP-1")
        r = await client.post(
            ORDERS,
            json=order_body("DUP-1", lines=[{"sku": "X", "quantity": 9, "price": "1"}]),
            headers=merchant.headers,
        )
        assert r.status_code == 409
        assert r.json() == {
            "status_code": 409,
            "detail": "reference: an order with reference 'DUP-1' already exists",
            "extra": {"field": "reference", "order_id": first["id"]},
        }
        assert await count(db, Order) == 1
        assert await count(db, OrderLine) == 2  # the first order's, untouched
        assert await count(db, Customer) == 1


def _without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def _line(**overrides: Any) -> dict[str, Any]:
    return {"lines": [{"sku": "A", "quantity": 1, "price": "1.00", **overrides}]}


def _address(**overrides: Any) -> dict[str, Any]:
    return {"shipping_address": {**order_body()["shipping_address"], **overrides}}


BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("missing currency", _without(order_body(), "currency"), "currency"),
    ("missing lines", _without(order_body(), "lines"), "lines"),
    ("missing address", _without(order_body(), "shipping_address"), "shipping_address"),
    ("no lines", order_body(lines=[]), "lines"),
    ("quantity 0", order_body(**_line(quantity=0)), "lines[0].quantity"),
    ("quantity negative", order_body(**_line(quantity=-2)), "lines[0].quantity"),
    ("quantity fractional", order_body(**_line(quantity=1.5)), "lines[0].quantity"),
    ("quantity huge", order_body(**_line(quantity=100_001)), "lines[0].quantity"),
    ("negative price", order_body(**_line(price="-0.01")), "lines[0].price"),
    ("price NaN", order_body(**_line(price="NaN")), "lines[0].price"),
    ("price Infinity", order_body(**_line(price="Infinity")), "lines[0].price"),
    ("price not a number", order_body(**_line(price="ten")), "lines[0].price"),
    ("price too precise", order_body(**_line(price="1.00001")), "lines[0].price"),
    ("price too large", order_body(**_line(price="1e30")), "lines[0].price"),
    ("sku missing", order_body(lines=[{"quantity": 1, "price": "1"}]), "lines[0].sku"),
    ("sku empty", order_body(**_line(sku="")), "lines[0].sku"),
    ("title too long", order_body(**_line(title="t" * 513)), "lines[0].title"),
    ("negative tax", order_body(tax="-1"), "tax"),
    ("negative shipping", order_body(shipping_price="-5"), "shipping_price"),
    ("discount beyond total", order_body(discount="1000.00"), "discount"),
    ("subtotal too large", order_body(**_line(price="1000000000000", quantity=2)), "lines"),
    ("currency lower case", order_body(currency="usd"), "currency"),
    ("currency too long", order_body(currency="USDX"), "currency"),
    (
        "country alpha-3",
        order_body(**_address(country_code="USA")),
        "shipping_address.country_code",
    ),
    ("address without name", order_body(**_address(name="")), "shipping_address.name"),
    ("unknown field", order_body(colour="red"), "colour"),
    ("unknown line field", order_body(**_line(colour="red")), "lines[0].colour"),
    ("email too long", order_body(email="a" * 320 + "@example.com"), "email"),
    ("reference too long", order_body("r" * 256), "reference"),
    ("shipping method too long", order_body(shipping_method="m" * 256), "shipping_method"),
    ("financial status empty", order_body(financial_status=""), "financial_status"),
    # PostgreSQL cannot store NUL in text or JSON: these used to be 500s there.
    ("NUL in reference", order_body("PO\u00001"), "reference"),
    ("NUL in address", order_body(**_address(city="Aus\u0000tin")), "shipping_address.city"),
    ("NUL in sku", order_body(**_line(sku="A\u0000")), "lines[0].sku"),
]


class TestManualEntryBadInput:
    @pytest.mark.parametrize(
        ("body", "field"), [(b, f) for _, b, f in BAD_BODIES], ids=[n for n, _, _ in BAD_BODIES]
    )
    async def test_400_naming_the_field_and_nothing_stored(
        self,
        client: Client,
        merchant: MerchantHandle,
        db: Database,
        body: dict[str, Any],
        field: str,
    ) -> None:
        r = await client.post(ORDERS, json=body, headers=merchant.headers)
        assert r.status_code == 400, r.text
        error = r.json()
        assert error["status_code"] == 400
        assert error["extra"]["field"] == field, error
        assert error["detail"].startswith(f"{field}: "), error
        assert [e["field"] for e in error["extra"]["errors"]] == [field]
        assert await count(db, Order) == 0
        assert await count(db, Customer) == 0

    @pytest.mark.parametrize(
        "content",
        [b"", b"{", b"null", b"[]", b'"order"', b"42", b'{"lines": "many"}', b"\xff\xfe"],
    )
    async def test_malformed_bodies_are_400_never_500(
        self, client: Client, merchant: MerchantHandle, db: Database, content: bytes
    ) -> None:
        r = await client.post(
            ORDERS,
            content=content,
            headers={**merchant.headers, "Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert r.json()["status_code"] == 400
        assert await count(db, Order) == 0


class TestExceptionsQueue:
    async def _cases(self, db: Database, merchant: MerchantHandle, n: int) -> list[str]:
        """``n`` open cases, one minute apart (oldest first), plus one resolved one."""
        base = datetime(2026, 6, 1, 9, tzinfo=UTC)
        ids = []
        async with db.transaction() as s:
            for i in range(n):
                case = ExceptionCase(
                    merchant_id=merchant.id,
                    kind="validation_failed",
                    reason=f"problem {i}",
                    data={"i": i},
                    created_at=base + timedelta(minutes=i),
                )
                s.add(case)
                await s.flush()
                ids.append(str(case.id))
            s.add(
                ExceptionCase(
                    merchant_id=merchant.id,
                    kind="validation_failed",
                    reason="fixed already",
                    created_at=base + timedelta(hours=1),
                    resolved_at=base + timedelta(hours=2),
                )
            )
        return ids

    async def test_open_cases_newest_first_in_pages(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        ids = await self._cases(db, merchant, 5)
        pages = await all_pages(client, merchant, EXCEPTIONS, limit=2)
        assert [len(p) for p in pages] == [2, 2, 1]
        items = [c for p in pages for c in p]
        assert [c["id"] for c in items] == list(reversed(ids))
        assert [c["reason"] for c in items] == [f"problem {i}" for i in (4, 3, 2, 1, 0)]
        assert items[0]["created_at"] == "2026-06-01T09:04:00Z"
        assert items[0]["data"] == {"i": 4}
        assert all(c["resolved_at"] is None for c in items)

    async def test_resolved_cases_only_on_request(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await self._cases(db, merchant, 2)
        open_ = (await client.get(EXCEPTIONS, headers=merchant.headers)).json()["items"]
        assert [c["reason"] for c in open_] == ["problem 1", "problem 0"]
        everything = (
            await client.get(
                EXCEPTIONS, params={"include_resolved": "true"}, headers=merchant.headers
            )
        ).json()["items"]
        assert [c["reason"] for c in everything] == ["fixed already", "problem 1", "problem 0"]
        assert everything[0]["resolved_at"] == "2026-06-01T11:00:00Z"

    async def test_cases_from_validation_arrive_newest_first(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        orders = [
            await create_order(
                client, merchant, f"X-{i}", lines=[{"sku": f"NOPE-{i}", "quantity": 1, "price": 1}]
            )
            for i in range(4)
        ]

        async def four() -> list[dict[str, Any]] | None:
            r = await client.get(EXCEPTIONS, headers=merchant.headers)
            items: list[dict[str, Any]] = r.json()["items"]
            return items if len(items) == 4 else None

        await eventually(four)
        pages = await all_pages(client, merchant, EXCEPTIONS, limit=3)
        assert [len(p) for p in pages] == [3, 1]
        items = [c for p in pages for c in p]
        assert {c["order_id"] for c in items} == {o["id"] for o in orders}
        assert [c["created_at"] for c in items] == sorted(
            (c["created_at"] for c in items), reverse=True
        )
        by_order = {c["order_id"]: c["reason"] for c in items}
        for i, o in enumerate(orders):
            assert by_order[o["id"]] == f"SKU NOPE-{i} is not in any active supplier's catalog"

    async def test_other_merchants_cases_are_invisible(
        self,
        client: Client,
        merchant: MerchantHandle,
        other_merchant: MerchantHandle,
        db: Database,
    ) -> None:
        await self._cases(db, merchant, 3)
        r = await client.get(EXCEPTIONS, headers=other_merchant.headers)
        assert r.json() == {"items": [], "next_cursor": None}

    async def test_bad_cursor_and_limit_are_400(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        r = await client.get(EXCEPTIONS, params={"cursor": "nope"}, headers=merchant.headers)
        assert_bad_request(r, "cursor")
        r = await client.get(EXCEPTIONS, params={"limit": "0"}, headers=merchant.headers)
        assert_bad_request(r, "limit")
