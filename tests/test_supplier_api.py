"""The supplier API (``/supplier/v1``) on its own: authentication, isolation, listing, and each
thing a supplier reports (accept, reject, shipments, tracking). Orders are entered through the
merchant API and routed to portal suppliers by the workers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from app.db import Database
from app.purchasing.models import Shipment, TrackingEvent
from app.routing.models import LineExclusion
from tests.conftest import MerchantHandle, make_merchant
from tests.support.broker import losing_jobs
from tests.support.orders import count, order_body
from tests.support.portal import (
    bearer,
    line,
    offer,
    order_pos,
    portal_supplier,
    routed_order,
    wait_order_pos,
)
from tests.support.wait import eventually

Client = AsyncTestClient[Litestar]

MISSING = "missing bearer token: send 'Authorization: Bearer <token>'"
CHALLENGE = 'Bearer realm="dropship"'
INVALID_CHALLENGE = 'Bearer realm="dropship", error="invalid_token"'


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, "portal-shop.myshopify.com", auto_route=True)


@pytest.fixture
async def alpha(client: Client, shop: MerchantHandle) -> dict[str, Any]:
    """The first choice for RED and BLUE (5 of each)."""
    s = await portal_supplier(client, shop, "Alpha")
    await offer(client, shop, s["supplier"]["id"], "RED", stock=5)
    await offer(client, shop, s["supplier"]["id"], "BLUE", stock=5)
    return s


@pytest.fixture
async def beta(client: Client, shop: MerchantHandle, alpha: dict[str, Any]) -> dict[str, Any]:
    """The second choice for RED (5 in stock)."""
    s = await portal_supplier(client, shop, "Beta")
    await offer(client, shop, s["supplier"]["id"], "RED", stock=5, priority=2)
    return s


def key(supplier: dict[str, Any]) -> dict[str, str]:
    return bearer(supplier["api_key"])


async def stock(client: Client, shop: MerchantHandle) -> dict[tuple[str, str], int]:
    r = await client.get("/api/v1/supplier-products", headers=shop.headers)
    assert r.status_code == 200, r.text
    return {(p["supplier_id"], p["sku"]): p["stock"] for p in r.json()["items"]}


async def timeline_types(client: Client, shop: MerchantHandle, order_id: str) -> list[str]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)
    assert r.status_code == 200, r.text
    return [e["type"] for e in r.json()["timeline"]]


async def ship(
    client: Client, supplier: dict[str, Any], po_id: str, tracking: str, *lines: tuple[str, int]
) -> Any:
    return await client.post(
        f"/supplier/v1/orders/{po_id}/shipments",
        json={
            "carrier": "UPS",
            "tracking_number": tracking,
            "lines": [{"sku": s, "quantity": q} for s, q in lines],
        },
        headers=key(supplier),
    )


async def event(
    client: Client, supplier: dict[str, Any], shipment_id: str, status: str, at: str
) -> Any:
    return await client.post(
        f"/supplier/v1/shipments/{shipment_id}/events",
        json={"status": status, "occurred_at": at},
        headers=key(supplier),
    )


async def supplier_po(client: Client, supplier: dict[str, Any], po_id: str) -> dict[str, Any]:
    r = await client.get(f"/supplier/v1/orders/{po_id}", headers=key(supplier))
    assert r.status_code == 200, r.text
    return dict(r.json())


class TestAuthentication:
    @pytest.mark.parametrize(
        "header",
        [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"],
        ids=["absent", "empty", "scheme-only", "blank-token", "basic", "other-scheme"],
    )
    async def test_missing_or_malformed_credentials(
        self, client: Client, alpha: dict[str, Any], header: str | None
    ) -> None:
        headers = {} if header is None else {"Authorization": header}
        r = await client.get("/supplier/v1/orders", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == CHALLENGE
        assert r.json() == {"status_code": 401, "detail": MISSING, "extra": {}}

    async def test_wrong_key_and_merchant_token_are_refused_with_a_challenge(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        for token in ("dss_not-a-real-key", shop.token, alpha["api_key"] + "x"):
            for r in (
                await client.get("/supplier/v1/orders", headers=bearer(token)),
                await client.put("/supplier/v1/inventory", json=[], headers=bearer(token)),
            ):
                assert r.status_code == 401
                assert r.headers["www-authenticate"] == INVALID_CHALLENGE
                assert r.json() == {
                    "status_code": 401,
                    "detail": "invalid or revoked supplier key",
                    "extra": {},
                }

    async def test_the_scheme_is_case_insensitive(
        self, client: Client, alpha: dict[str, Any]
    ) -> None:
        r = await client.get(
            "/supplier/v1/orders", headers={"Authorization": f"bearer {alpha['api_key']}"}
        )
        assert (r.status_code, r.json()) == (200, {"items": [], "next_cursor": None})

    async def test_a_rotated_key_stops_working(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        old = alpha["api_key"]
        assert (await client.get("/supplier/v1/orders", headers=bearer(old))).status_code == 200
        r = await client.post(
            f"/api/v1/suppliers/{alpha['supplier']['id']}/rotate-key", headers=shop.headers
        )
        assert r.status_code == 200, r.text
        new = r.json()["api_key"]
        assert new != old
        refused = await client.get("/supplier/v1/orders", headers=bearer(old))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == INVALID_CHALLENGE
        assert (await client.get("/supplier/v1/orders", headers=bearer(new))).status_code == 200

    async def test_an_inactive_supplier_is_refused_until_reactivated(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        path = f"/api/v1/suppliers/{alpha['supplier']['id']}"
        r = await client.patch(path, json={"status": "inactive"}, headers=shop.headers)
        assert r.status_code == 200, r.text
        refused = await client.get("/supplier/v1/orders", headers=key(alpha))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == INVALID_CHALLENGE
        await client.patch(path, json={"status": "active"}, headers=shop.headers)
        assert (await client.get("/supplier/v1/orders", headers=key(alpha))).status_code == 200


class TestIsolation:
    async def test_another_supplier_of_the_same_merchant_gets_404_and_changes_nothing(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any], beta: dict[str, Any]
    ) -> None:
        await self._refused_everywhere(client, shop, alpha, beta)

    async def test_a_supplier_of_another_merchant_gets_404_and_changes_nothing(
        self, client: Client, db: Database, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        rival = await make_merchant(db, "rival-portal.myshopify.com", auto_route=True)
        # Same name, same SKU, other merchant.
        stranger = await portal_supplier(client, rival, "Alpha")
        await offer(client, rival, stranger["supplier"]["id"], "RED", stock=5)
        _, [theirs] = await routed_order(client, rival, "THEIRS", [line("RED")])
        # Neither sees the other's purchase orders.
        mine = await client.get("/supplier/v1/orders", headers=key(alpha))
        assert [p["id"] for p in mine.json()["items"]] == []
        listed = await client.get("/supplier/v1/orders", headers=key(stranger))
        assert [p["id"] for p in listed.json()["items"]] == [theirs["id"]]
        await self._refused_everywhere(client, shop, alpha, stranger)

    async def _refused_everywhere(
        self,
        client: Client,
        shop: MerchantHandle,
        owner: dict[str, Any],
        intruder: dict[str, Any],
    ) -> None:
        order_id, [po] = await routed_order(client, shop, "R-ISO", [line("RED", 2)])
        shipped = await ship(client, owner, po["id"], "T-ISO", ("RED-S", 1))
        assert shipped.status_code == 201, shipped.text
        shipment_id = shipped.json()["id"]
        before = await supplier_po(client, owner, po["id"])

        listed = await client.get("/supplier/v1/orders", headers=key(intruder))
        assert po["id"] not in [p["id"] for p in listed.json()["items"]]
        not_found = {
            "status_code": 404,
            "detail": f"purchase order {po['id']} not found",
            "extra": {},
        }
        h = key(intruder)
        for r in (
            await client.get(f"/supplier/v1/orders/{po['id']}", headers=h),
            await client.post(f"/supplier/v1/orders/{po['id']}/accept", headers=h),
            await client.post(
                f"/supplier/v1/orders/{po['id']}/reject", json={"reason": "mine now"}, headers=h
            ),
            await ship(client, intruder, po["id"], "T-EVIL", ("RED-S", 1)),
            await ship(client, intruder, po["id"], "T-ISO"),  # an existing tracking number
        ):
            assert (r.status_code, r.json()) == (404, not_found)
        r = await event(client, intruder, shipment_id, "delivered", "2026-11-27T10:00:00Z")
        assert (r.status_code, r.json()) == (
            404,
            {"status_code": 404, "detail": f"shipment {shipment_id} not found", "extra": {}},
        )
        assert await supplier_po(client, owner, po["id"]) == before
        assert before["status"] == "partially_shipped"
        assert "purchase_order.rejected" not in await timeline_types(client, shop, order_id)


class TestList:
    async def test_status_filters_and_pagination(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        numbers = {}
        for ref in ("L-1", "L-2", "L-3", "L-4"):
            _, [po] = await routed_order(client, shop, ref, [line("RED")])
            numbers[ref] = po
        h = key(alpha)
        l2 = numbers["L-2"]["id"]
        accepted = await client.post(f"/supplier/v1/orders/{l2}/accept", headers=h)
        assert accepted.status_code == 200, accepted.text
        assert (await ship(client, alpha, numbers["L-3"]["id"], "T-L3")).status_code == 201
        rejected = await client.post(
            f"/supplier/v1/orders/{numbers['L-4']['id']}/reject", json={"reason": "no"}, headers=h
        )
        assert rejected.status_code == 200, rejected.text

        async def listed(**params: Any) -> list[str]:
            r = await client.get("/supplier/v1/orders", params=params, headers=h)
            assert r.status_code == 200, r.text
            assert r.json()["next_cursor"] is None
            return [p["number"] for p in r.json()["items"]]

        n = {ref: po["number"] for ref, po in numbers.items()}
        assert await listed() == [n["L-1"], n["L-2"], n["L-3"], n["L-4"]]  # oldest first
        assert await listed(status="pending") == [n["L-1"]]  # awaiting the supplier's answer
        assert await listed(status="placed") == [n["L-1"]]
        assert await listed(status="open") == [n["L-1"], n["L-2"]]
        assert await listed(status="accepted") == [n["L-2"]]
        assert await listed(status="shipped") == [n["L-3"]]
        assert await listed(status="rejected") == [n["L-4"]]
        assert await listed(status="delivered") == []

        pages = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            r = await client.get("/supplier/v1/orders", params=params, headers=h)
            assert r.status_code == 200, r.text
            pages.append([p["number"] for p in r.json()["items"]])
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert pages == [[n["L-1"], n["L-2"], n["L-3"]], [n["L-4"]]]
        first = await client.get(
            "/supplier/v1/orders", params={"status": "open", "limit": 1}, headers=h
        )
        assert [p["number"] for p in first.json()["items"]] == [n["L-1"]]
        second = await client.get(
            "/supplier/v1/orders",
            params={"status": "open", "limit": 1, "cursor": first.json()["next_cursor"]},
            headers=h,
        )
        assert [p["number"] for p in second.json()["items"]] == [n["L-2"]]

    async def test_bad_status_limit_and_cursor_are_400_naming_the_field(
        self, client: Client, alpha: dict[str, Any]
    ) -> None:
        h = key(alpha)
        r = await client.get("/supplier/v1/orders", params={"status": "lost"}, headers=h)
        assert r.status_code == 400
        assert r.json()["extra"]["field"] == "status"
        assert r.json()["detail"] == (
            "status: one of pending, open, placed, accepted, partially_shipped, shipped, "
            "delivered, rejected, cancelled, failed"
        )
        r = await client.get("/supplier/v1/orders", params={"limit": 0}, headers=h)
        assert (r.status_code, r.json()["extra"]["field"]) == (400, "limit")
        r = await client.get("/supplier/v1/orders", params={"cursor": "garbage"}, headers=h)
        assert (r.status_code, r.json()["extra"]["field"]) == (400, "cursor")

    async def test_a_pending_purchase_order_is_invisible_and_untouchable(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        """Pending: decided but not yet handed over. The supplier neither sees it (in any
        list, or by id) nor acts on it. (A portal purchase order routed by a job is placed as
        it is created; one the merchant's reroute creates waits for its placement job.)"""
        r = await client.post(
            "/api/v1/orders", json=order_body("P-1", lines=[line("GREEN")]), headers=shop.headers
        )
        assert r.status_code == 201, r.text
        order_id = r.json()["id"]

        async def unroutable() -> bool:
            got = await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)
            return bool(got.json()["status"] == "needs_attention")

        await eventually(unroutable)
        await offer(client, shop, alpha["supplier"]["id"], "GREEN")
        with losing_jobs(client.app.state.workers.broker, "purchase_order.place") as lost:
            r = await client.post(
                f"/api/v1/orders/{order_id}/reroute", json={}, headers=shop.headers
            )
            assert r.status_code == 200, r.text

            async def lost_one() -> bool:
                return bool(lost)

            await eventually(lost_one)
        [po] = await order_pos(client, shop, order_id)
        assert po["status"] == "pending"
        h = key(alpha)
        for status in (None, "pending", "open"):
            params = {"status": status} if status else {}
            r = await client.get("/supplier/v1/orders", params=params, headers=h)
            assert r.json() == {"items": [], "next_cursor": None}, status
        not_found = {
            "status_code": 404,
            "detail": f"purchase order {po['id']} not found",
            "extra": {},
        }
        for r in (
            await client.get(f"/supplier/v1/orders/{po['id']}", headers=h),
            await client.post(f"/supplier/v1/orders/{po['id']}/accept", headers=h),
            await client.post(
                f"/supplier/v1/orders/{po['id']}/reject", json={"reason": "x"}, headers=h
            ),
            await ship(client, alpha, po["id"], "T-P"),
        ):
            assert (r.status_code, r.json()) == (404, not_found)
        [still] = await order_pos(client, shop, order_id)
        assert still["status"] == "pending"


class TestGetOne:
    async def test_the_supplier_view_is_exactly_what_it_needs(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        _, [po] = await routed_order(client, shop, "G-1", [line("RED", 2), line("BLUE", 1)])
        view = await supplier_po(client, alpha, po["id"])
        assert view == {
            "id": po["id"],
            "number": po["number"],
            "status": "placed",
            "currency": "USD",
            "total_cost": "9.30",
            "ship_to": {
                "name": "Ada Lovelace",
                "company": None,
                "address1": "12 Congress Ave",
                "address2": None,
                "city": "Austin",
                "province_code": "TX",
                "zip": "78701",
                "country_code": "US",
                "phone": None,
            },
            "shipping_method": None,
            "supplier_reference": None,
            "lines": [
                {
                    "supplier_sku": "RED-S",
                    "sku": "RED",
                    "quantity": 2,
                    "quantity_shipped": 0,
                    "unit_cost": "3.10",
                },
                {
                    "supplier_sku": "BLUE-S",
                    "sku": "BLUE",
                    "quantity": 1,
                    "quantity_shipped": 0,
                    "unit_cost": "3.10",
                },
            ],
            "created_at": po["created_at"],
            "cancellation_requested_at": None,
        }

    async def test_no_customer_email_and_no_retail_price_anywhere(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        body = order_body("PRIV-1", lines=[line("RED", 1, price="47.99")])
        body["email"] = "secret.customer@example.org"
        body["shipping_address"]["phone"] = "+1 512 555 0100"
        r = await client.post("/api/v1/orders", json=body, headers=shop.headers)
        assert r.status_code == 201, r.text
        [po] = await wait_order_pos(
            client, shop, r.json()["id"], lambda p: len(p) == 1 and p[0]["status"] == "placed"
        )
        h = key(alpha)
        texts = [
            (await client.get("/supplier/v1/orders", headers=h)).text,
            (await client.get(f"/supplier/v1/orders/{po['id']}", headers=h)).text,
            (await client.post(f"/supplier/v1/orders/{po['id']}/accept", headers=h)).text,
        ]
        for text in texts:
            assert "secret.customer" not in text
            assert "47.99" not in text
            assert "email" not in text
            assert "price" not in text
        view = json.loads(texts[1])
        # What it ships to, including the phone the carrier needs; what we pay, not what we sell.
        assert view["ship_to"]["phone"] == "+1 512 555 0100"
        assert [ln["unit_cost"] for ln in view["lines"]] == ["3.10"]

    async def test_unknown_id_is_404(self, client: Client, alpha: dict[str, Any]) -> None:
        missing = uuid.uuid4()
        r = await client.get(f"/supplier/v1/orders/{missing}", headers=key(alpha))
        assert (r.status_code, r.json()["detail"]) == (404, f"purchase order {missing} not found")


class TestAccept:
    async def test_accept_without_and_with_reference(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        _, [plain] = await routed_order(client, shop, "A-1", [line("RED")])
        _, [with_ref] = await routed_order(client, shop, "A-2", [line("RED")])
        h = key(alpha)
        r = await client.post(f"/supplier/v1/orders/{plain['id']}/accept", headers=h)
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["supplier_reference"]) == ("accepted", None)
        r = await client.post(
            f"/supplier/v1/orders/{with_ref['id']}/accept",
            json={"supplier_reference": "SUP-77"},
            headers=h,
        )
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["supplier_reference"]) == ("accepted", "SUP-77")
        merchant_view = {p["id"]: p for p in await order_pos(client, shop, with_ref["order_id"])}
        assert merchant_view[with_ref["id"]]["supplier_reference"] == "SUP-77"
        assert merchant_view[with_ref["id"]]["accepted_at"] is not None

    async def test_accepting_twice_is_harmless(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        order_id, [po] = await routed_order(client, shop, "A-3", [line("RED")])
        h = key(alpha)
        path = f"/supplier/v1/orders/{po['id']}/accept"
        first = await client.post(path, json={"supplier_reference": "SUP-1"}, headers=h)
        again = await client.post(path, json={"supplier_reference": "SUP-1"}, headers=h)
        bare = await client.post(path, headers=h)
        assert [r.status_code for r in (first, again, bare)] == [200, 200, 200]
        assert first.json() == again.json() == bare.json()
        assert bare.json()["supplier_reference"] == "SUP-1"
        types = await timeline_types(client, shop, order_id)
        assert types.count("purchase_order.accepted") == 1

    async def test_illegal_states_are_409_and_change_nothing(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        _, [accepted] = await routed_order(client, shop, "A-4", [line("RED")])
        _, [rejected] = await routed_order(client, shop, "A-5", [line("RED")])
        _, [shipped] = await routed_order(client, shop, "A-6", [line("RED")])
        h = key(alpha)
        await client.post(
            f"/supplier/v1/orders/{accepted['id']}/accept",
            json={"supplier_reference": "SUP-A"},
            headers=h,
        )
        await client.post(
            f"/supplier/v1/orders/{rejected['id']}/reject", json={"reason": "no"}, headers=h
        )
        assert (await ship(client, alpha, shipped["id"], "T-A6")).status_code == 201
        cases = [
            (rejected, None, "rejected"),
            (shipped, None, "shipped"),
            (accepted, {"supplier_reference": "SUP-B"}, "accepted"),  # another reference
        ]
        for po, body, status in cases:
            r = await client.post(f"/supplier/v1/orders/{po['id']}/accept", json=body, headers=h)
            assert r.json() == {
                "status_code": 409,
                "detail": f"purchase order {po['number']} is {status}: cannot become accepted",
                "extra": {},
            }
            assert r.status_code == 409
        view = await supplier_po(client, alpha, accepted["id"])
        assert (view["status"], view["supplier_reference"]) == ("accepted", "SUP-A")

    async def test_unknown_body_field_is_400(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        _, [po] = await routed_order(client, shop, "A-7", [line("RED")])
        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/accept", json={"ref": "x"}, headers=key(alpha)
        )
        assert (r.status_code, r.json()["extra"]["field"]) == (400, "ref")
        assert (await supplier_po(client, alpha, po["id"]))["status"] == "placed"


class TestReject:
    async def test_rejecting_everything_moves_it_to_the_next_supplier(
        self,
        client: Client,
        db: Database,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        beta: dict[str, Any],
    ) -> None:
        a, b = alpha["supplier"]["id"], beta["supplier"]["id"]
        order_id, [po] = await routed_order(client, shop, "J-1", [line("RED", 2)])
        assert po["supplier_id"] == a
        assert (await stock(client, shop))[(a, "RED")] == 3
        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/reject",
            json={"reason": "out of stock"},
            headers=key(alpha),
        )
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["lines"]) == ("rejected", [])
        pos = await wait_order_pos(
            client, shop, order_id, lambda p: len(p) == 2 and p[1]["status"] == "placed"
        )
        assert [(p["supplier_id"], p["status"]) for p in pos] == [(a, "rejected"), (b, "placed")]
        assert [(ln["sku"], ln["quantity"]) for ln in pos[1]["lines"]] == [("RED", 2)]
        levels = await stock(client, shop)
        assert (levels[(a, "RED")], levels[(b, "RED")]) == (5, 3)  # given back; taken at Beta
        async with db.sessionmaker() as s:
            exclusions = (await s.scalars(select(LineExclusion))).all()
        assert [(str(x.supplier_id), x.reason) for x in exclusions] == [
            (a, "rejected by supplier: out of stock")
        ]
        # Beta sees it now, Alpha still sees its rejected purchase order and nothing else.
        listed = await client.get("/supplier/v1/orders", headers=key(beta))
        assert [p["id"] for p in listed.json()["items"]] == [pos[1]["id"]]

    async def test_the_rejecting_supplier_is_never_asked_again(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any], beta: dict[str, Any]
    ) -> None:
        order_id, [po] = await routed_order(client, shop, "J-2", [line("RED")])
        await client.post(
            f"/supplier/v1/orders/{po['id']}/reject", json={"reason": "no"}, headers=key(alpha)
        )
        pos = await wait_order_pos(
            client, shop, order_id, lambda p: len(p) == 2 and p[1]["status"] == "placed"
        )
        r = await client.post(
            f"/supplier/v1/orders/{pos[1]['id']}/reject", json={"reason": "nope"}, headers=key(beta)
        )
        assert r.status_code == 200, r.text
        # Alpha has stock but rejected the line: nobody is left, a person must decide.
        final = await order_pos(client, shop, order_id)
        assert [p["status"] for p in final] == ["rejected", "rejected"]
        detail = (await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)).json()
        assert detail["status"] == "needs_attention"
        cases = (await client.get("/api/v1/exceptions", headers=shop.headers)).json()["items"]
        assert [c["kind"] for c in cases if c["order_id"] == order_id] == ["unroutable_line"]
        levels = await stock(client, shop)
        a, b = alpha["supplier"]["id"], beta["supplier"]["id"]
        assert (levels[(a, "RED")], levels[(b, "RED")]) == (5, 5)

    async def test_rejecting_some_lines_keeps_the_others(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any], beta: dict[str, Any]
    ) -> None:
        a, b = alpha["supplier"]["id"], beta["supplier"]["id"]
        order_id, [po] = await routed_order(client, shop, "J-3", [line("RED", 1), line("BLUE", 2)])
        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/reject",
            json={"reason": "red discontinued", "lines": ["RED-S"]},  # its own SKU
            headers=key(alpha),
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "placed"
        assert [(ln["sku"], ln["quantity"]) for ln in r.json()["lines"]] == [("BLUE", 2)]
        pos = await wait_order_pos(
            client, shop, order_id, lambda p: len(p) == 2 and p[1]["status"] == "placed"
        )
        assert [p["supplier_id"] for p in pos] == [a, b]
        assert [ln["sku"] for ln in pos[1]["lines"]] == ["RED"]
        levels = await stock(client, shop)
        assert (levels[(a, "RED")], levels[(a, "BLUE")], levels[(b, "RED")]) == (5, 3, 4)
        assert "purchase_order.lines_rejected" in await timeline_types(client, shop, order_id)
        # By our SKU too; then the last line rejects the whole purchase order.
        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/reject",
            json={"reason": "blue too", "lines": ["BLUE"]},
            headers=key(alpha),
        )
        assert (r.status_code, r.json()["status"], r.json()["lines"]) == (200, "rejected", [])

    async def test_bad_lines_and_illegal_states(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        _, [po] = await routed_order(client, shop, "J-4", [line("RED", 2)])
        h = key(alpha)
        path = f"/supplier/v1/orders/{po['id']}/reject"
        r = await client.post(path, json={"reason": "x", "lines": ["NOPE", "RED"]}, headers=h)
        assert r.status_code == 400
        assert r.json()["extra"] == {"field": "lines"}
        assert r.json()["detail"] == f"lines: not open on {po['number']}: NOPE"
        r = await client.post(path, json={"reason": ""}, headers=h)
        assert (r.status_code, r.json()["extra"]["field"]) == (400, "reason")
        assert (await ship(client, alpha, po["id"], "T-J4", ("RED-S", 1))).status_code == 201
        r = await client.post(path, json={"reason": "x"}, headers=h)
        assert r.json() == {
            "status_code": 409,
            "detail": "lines already (partly) shipped cannot be rejected",
            "extra": {},
        }
        view = await supplier_po(client, alpha, po["id"])
        assert (view["status"], view["lines"][0]["quantity_shipped"]) == ("partially_shipped", 1)


class TestShipments:
    async def test_partial_then_repeat_then_everything_owed(
        self, client: Client, db: Database, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        _, [po] = await routed_order(client, shop, "S-1", [line("RED", 3), line("BLUE", 1)])
        first = await client.post(
            f"/supplier/v1/orders/{po['id']}/shipments",
            json={
                "carrier": "UPS",
                "tracking_number": "1Z001",
                "tracking_url": "https://ups.example/1Z001",
                "shipped_at": "2026-11-26T09:30:00+01:00",
                "lines": [{"sku": "RED-S", "quantity": 1}],
            },
            headers=key(alpha),
        )
        assert first.status_code == 201, first.text
        assert first.json() == {
            "id": first.json()["id"],
            "purchase_order_id": po["id"],
            "carrier": "UPS",
            "tracking_number": "1Z001",
            "tracking_url": "https://ups.example/1Z001",
            "status": "shipped",
            "shipped_at": "2026-11-26T08:30:00Z",
            "delivered_at": None,
        }
        view = await supplier_po(client, alpha, po["id"])
        assert view["status"] == "partially_shipped"
        assert [ln["quantity_shipped"] for ln in view["lines"]] == [1, 0]

        # The same tracking number again is the same shipment, counted once.
        again = await ship(client, alpha, po["id"], "1Z001", ("RED-S", 1))
        assert (again.status_code, again.json()["id"]) == (201, first.json()["id"])
        # By our SKU as well as theirs.
        second = await ship(client, alpha, po["id"], "1Z002", ("RED", 1))
        assert second.status_code == 201, second.text
        view = await supplier_po(client, alpha, po["id"])
        assert [ln["quantity_shipped"] for ln in view["lines"]] == [2, 0]

        # No lines: everything still owed.
        rest = await ship(client, alpha, po["id"], "1Z003")
        assert rest.status_code == 201, rest.text
        view = await supplier_po(client, alpha, po["id"])
        assert view["status"] == "shipped"
        assert [ln["quantity_shipped"] for ln in view["lines"]] == [3, 1]
        assert await count(db, Shipment, purchase_order_id=uuid.UUID(po["id"])) == 3

        # Nothing more to ship.
        late = await ship(client, alpha, po["id"], "1Z004", ("RED-S", 1))
        assert late.json() == {
            "status_code": 409,
            "detail": f"purchase order {po['number']} is shipped: cannot ship",
            "extra": {},
        }

    async def test_one_full_shipment(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        order_id, [po] = await routed_order(client, shop, "S-2", [line("RED", 2), line("BLUE", 1)])
        r = await ship(client, alpha, po["id"], "1Z100", ("RED-S", 2), ("BLUE-S", 1))
        assert r.status_code == 201, r.text
        view = await supplier_po(client, alpha, po["id"])
        assert (view["status"], [ln["quantity_shipped"] for ln in view["lines"]]) == (
            "shipped",
            [2, 1],
        )
        detail = (await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)).json()
        [with_shipments] = detail["purchase_orders"]
        assert [(s["tracking_number"], s["carrier"]) for s in with_shipments["shipments"]] == [
            ("1Z100", "UPS")
        ]

    @pytest.mark.parametrize(
        ("lines", "field", "message"),
        [
            ([("NOPE", 1)], "lines[0].sku", "'NOPE' is not on {number}"),
            ([("RED-S", 4)], "lines[0].quantity", "4 > 3 still to ship for RED-S"),
            ([("RED-S", 2), ("RED", 2)], "lines[1].quantity", "4 > 3 still to ship for RED"),
            ([("BLUE-S", 1), ("RED-S", 0)], "lines[1].quantity", "Expected `int` >= 1"),
        ],
        ids=["wrong-sku", "too-many", "too-many-summed", "zero"],
    )
    async def test_bad_lines_are_400_naming_the_field_and_record_nothing(
        self,
        client: Client,
        db: Database,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        lines: list[tuple[str, int]],
        field: str,
        message: str,
    ) -> None:
        _, [po] = await routed_order(client, shop, "S-3", [line("RED", 3), line("BLUE", 1)])
        r = await ship(client, alpha, po["id"], "1Z200", *lines)
        assert r.status_code == 400
        assert r.json()["extra"]["field"] == field
        assert r.json()["detail"] == f"{field}: " + message.format(number=po["number"])
        assert await count(db, Shipment, purchase_order_id=uuid.UUID(po["id"])) == 0
        view = await supplier_po(client, alpha, po["id"])
        assert (view["status"], [ln["quantity_shipped"] for ln in view["lines"]]) == (
            "placed",
            [0, 0],
        )

    async def test_shipping_a_rejected_purchase_order_is_409(
        self, client: Client, db: Database, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        _, [po] = await routed_order(client, shop, "S-4", [line("RED")])
        await client.post(
            f"/supplier/v1/orders/{po['id']}/reject", json={"reason": "no"}, headers=key(alpha)
        )
        r = await ship(client, alpha, po["id"], "1Z300")
        assert r.json() == {
            "status_code": 409,
            "detail": f"purchase order {po['number']} is rejected: cannot ship",
            "extra": {},
        }
        assert r.status_code == 409
        assert await count(db, Shipment, purchase_order_id=uuid.UUID(po["id"])) == 0

    async def test_a_shipped_at_without_offset_is_400(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        _, [po] = await routed_order(client, shop, "S-6", [line("RED")])
        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/shipments",
            json={"tracking_number": "1Z600", "shipped_at": "2026-11-26T09:30:00"},
            headers=key(alpha),
        )
        assert (r.status_code, r.json()["extra"]["field"]) == (400, "shipped_at")

    async def test_tracking_number_is_required(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        _, [po] = await routed_order(client, shop, "S-5", [line("RED")])
        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/shipments", json={"carrier": "UPS"}, headers=key(alpha)
        )
        assert (r.status_code, r.json()["extra"]["field"]) == (400, "tracking_number")


class TestTracking:
    async def test_each_status_is_recorded_once_and_delivered_closes(
        self, client: Client, db: Database, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        order_id, [po] = await routed_order(client, shop, "T-1", [line("RED", 2)])
        one = (await ship(client, alpha, po["id"], "1ZA", ("RED-S", 1))).json()["id"]
        two = (await ship(client, alpha, po["id"], "1ZB", ("RED-S", 1))).json()["id"]
        statuses = ["in_transit", "out_for_delivery", "exception", "returned", "in_transit"]
        for hour, status in enumerate(statuses, start=1):
            r = await event(client, alpha, one, status, f"2026-11-27T{hour:02d}:00:00Z")
            assert r.status_code == 201, r.text
            assert (r.json()["status"], r.json()["delivered_at"]) == (status, None)
        # A repeat (same status, same instant, even written with another offset) is stored once.
        for at in ("2026-11-27T01:00:00Z", "2026-11-27T03:00:00+02:00"):
            r = await event(client, alpha, one, "in_transit", at)
            assert r.status_code == 201, r.text
        assert await count(db, TrackingEvent, shipment_id=uuid.UUID(one)) == 5

        r = await event(client, alpha, one, "delivered", "2026-11-28T11:00:00+01:00")
        assert r.status_code == 201, r.text
        assert (r.json()["status"], r.json()["delivered_at"]) == (
            "delivered",
            "2026-11-28T10:00:00Z",  # in UTC, like every timestamp we answer
        )
        # The other parcel is still on its way.
        assert (await supplier_po(client, alpha, po["id"]))["status"] == "shipped"
        r = await event(client, alpha, two, "delivered", "2026-11-29T10:00:00Z")
        assert r.status_code == 201, r.text
        assert (await supplier_po(client, alpha, po["id"]))["status"] == "delivered"
        types = await timeline_types(client, shop, order_id)
        assert types.count("shipment.delivered") == 2
        assert types.count("purchase_order.delivered") == 1
        assert types.count("shipment.in_transit") == 2  # 01:00 and 05:00, not the repeats
        # Repeating the last delivery changes nothing.
        r = await event(client, alpha, two, "delivered", "2026-11-29T10:00:00Z")
        assert r.status_code == 201
        assert await count(db, TrackingEvent, shipment_id=uuid.UUID(two)) == 1

    async def test_delivered_before_everything_shipped_keeps_the_purchase_order_open(
        self, client: Client, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        _, [po] = await routed_order(client, shop, "T-2", [line("RED", 2)])
        one = (await ship(client, alpha, po["id"], "1ZC", ("RED-S", 1))).json()["id"]
        r = await event(client, alpha, one, "delivered", "2026-11-28T10:00:00Z")
        assert (r.status_code, r.json()["status"]) == (201, "delivered")
        assert (await supplier_po(client, alpha, po["id"]))["status"] == "partially_shipped"

    async def test_bad_events_are_400_and_unknown_shipments_404(
        self, client: Client, db: Database, shop: MerchantHandle, alpha: dict[str, Any]
    ) -> None:
        _, [po] = await routed_order(client, shop, "T-3", [line("RED")])
        shipment = (await ship(client, alpha, po["id"], "1ZD")).json()["id"]
        r = await event(client, alpha, shipment, "teleported", "2026-11-27T10:00:00Z")
        assert r.status_code == 400
        assert r.json()["extra"] == {"field": "status"}
        assert r.json()["detail"] == (
            "status: one of info_received, in_transit, out_for_delivery, delivered, exception, "
            "returned"
        )
        r = await event(client, alpha, shipment, "delivered", "2026-11-27T10:00:00")
        assert r.status_code == 400
        assert r.json()["detail"].startswith("occurred_at: ")
        assert await count(db, TrackingEvent, shipment_id=uuid.UUID(shipment)) == 0
        missing = uuid.uuid4()
        r = await event(client, alpha, str(missing), "delivered", "2026-11-27T10:00:00Z")
        assert (r.status_code, r.json()["detail"]) == (404, f"shipment {missing} not found")


class TestStockMovedUnderTheDecision:
    """Stock taken between the routing decision and its reservation is a 409 the caller may
    retry, never a 500, and the refused request changes nothing."""

    @pytest.fixture
    def stock_vanishes(self, monkeypatch: pytest.MonkeyPatch, db: Database) -> None:
        from sqlalchemy import update

        from app.purchasing import service as purchasing
        from app.suppliers.models import SupplierProduct

        original = purchasing.create_from_plan

        async def racing(session: Any, order: Any, decided: Any, **kw: Any) -> Any:
            # Another order takes every unit after the decision was made.
            await session.execute(update(SupplierProduct).values(stock=0))
            return await original(session, order, decided, **kw)

        monkeypatch.setattr(purchasing, "create_from_plan", racing)

    async def test_reject_is_409_and_changes_nothing(
        self,
        client: Client,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        beta: dict[str, Any],
        request: pytest.FixtureRequest,
    ) -> None:
        order_id, [po] = await routed_order(client, shop, "J-409", [line("RED", 2)])
        before = await stock(client, shop)
        request.getfixturevalue("stock_vanishes")
        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/reject", json={"reason": "none"}, headers=key(alpha)
        )
        assert r.status_code == 409, r.text
        assert "stock of RED" in r.json()["detail"]
        assert (await supplier_po(client, alpha, po["id"]))["status"] == "placed"
        assert await stock(client, shop) == before
        assert "purchase_order.rejected" not in await timeline_types(client, shop, order_id)

    async def test_reroute_is_409_and_changes_nothing(
        self,
        client: Client,
        shop: MerchantHandle,
        alpha: dict[str, Any],
        beta: dict[str, Any],
        request: pytest.FixtureRequest,
    ) -> None:
        order_id, [_po] = await routed_order(client, shop, "J-410", [line("RED", 2)])
        before = await stock(client, shop)
        detail = (await client.get(f"/api/v1/orders/{order_id}", headers=shop.headers)).json()
        request.getfixturevalue("stock_vanishes")
        r = await client.post(
            f"/api/v1/orders/{order_id}/reroute",
            json={"lines": [detail["lines"][0]["id"]], "reason": "try Beta"},
            headers=shop.headers,
        )
        assert r.status_code == 409, r.text
        assert "stock of RED" in r.json()["detail"]
        assert [p["status"] for p in await order_pos(client, shop, order_id)] == ["placed"]
        assert await stock(client, shop) == before
