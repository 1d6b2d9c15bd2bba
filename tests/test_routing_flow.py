"""Orders reach the right suppliers, once: routing, placement through connectors (respx-served
supplier), rejection and reroute, retries, crash safety, and the supplier API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import respx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.db import Database
from tests.conftest import MerchantHandle, make_merchant
from tests.support.broker import losing_jobs
from tests.support.routing import (
    SHOP,
    create_supplier,
    import_catalog,
    purchase_orders,
    send_order,
    wait_pos,
)
from tests.support.shopify import order_payload
from tests.support.supplier_sim import BASE_URL, SupplierSim, rest_config
from tests.support.wait import eventually

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def shop(db: Database) -> MerchantHandle:
    return await make_merchant(db, SHOP, auto_route=True)


@pytest.fixture
def sim() -> Iterator[SupplierSim]:
    simulator = SupplierSim()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"{BASE_URL}/orders").mock(side_effect=simulator.place)
        mock.get(url__startswith=f"{BASE_URL}/orders/").mock(side_effect=simulator.get)
        yield simulator


def two_line_order() -> dict[str, Any]:
    """The Shopify fixture order, trimmed to two lines."""
    payload = order_payload()
    payload["line_items"] = payload["line_items"][:2]
    return payload


@pytest.fixture
async def suppliers(client: Client, shop: MerchantHandle, sim: SupplierSim) -> dict[str, Any]:
    rest = await create_supplier(
        client, shop, name="RestCo", connector="rest_json", config=rest_config()
    )
    portal = await create_supplier(client, shop, name="PortalCo", connector="portal")
    return {"rest": rest, "portal": portal}


class TestTwoSuppliers:
    async def test_two_line_order_routes_to_two_suppliers(
        self, client: Client, shop: MerchantHandle, sim: SupplierSim, suppliers: dict[str, Any]
    ) -> None:
        report = await import_catalog(
            client,
            shop,
            [
                "IPOD2008GREEN,RestCo,RC-GREEN,80.00,USD,10,3,US CA,1",
                "IPOD2008RED,PortalCo,PC-RED,75.50,USD,5,4,*,1",
            ],
        )
        assert (report["created"], report["rejected"]) == (2, 0)
        await send_order(client, **{"line_items": two_line_order()["line_items"]})

        pos = await wait_pos(
            client, shop, lambda p: len(p) == 2 and all(x["status"] != "pending" for x in p)
        )
        by_supplier = {p["supplier_id"]: p for p in pos}
        rest_po = by_supplier[suppliers["rest"]["supplier"]["id"]]
        portal_po = by_supplier[suppliers["portal"]["supplier"]["id"]]
        assert rest_po["status"] == "accepted"
        assert rest_po["supplier_reference"] == "SUP-1000"
        assert [(ln["supplier_sku"], ln["quantity"]) for ln in rest_po["lines"]] == [
            ("RC-GREEN", 1)
        ]
        assert portal_po["status"] == "placed"
        # One order at the REST supplier, with its own SKU, our idempotency key, and no
        # customer email or retail price.
        [placed] = sim.orders.values()
        assert placed["request"]["lines"] == [
            {"sku": "RC-GREEN", "quantity": 1, "unit_cost": "80.00"}
        ]
        assert placed["request"]["ship_to"]["zip"] == "40202"
        assert "bob.norman" not in json.dumps(placed["request"])
        assert sim.requests[0].headers["authorization"] == "Bearer sup-secret"

        # The portal supplier sees its purchase order, and only that.
        portal_key = {"Authorization": f"Bearer {suppliers['portal']['api_key']}"}
        listed = (await client.get("/supplier/v1/orders?status=pending", headers=portal_key)).json()
        assert [o["number"] for o in listed["items"]] == [portal_po["number"]]
        assert listed["items"][0]["lines"][0]["supplier_sku"] == "PC-RED"
        assert "email" not in json.dumps(listed)

        order = (
            await client.get(f"/api/v1/orders/{rest_po['order_id']}", headers=shop.headers)
        ).json()
        assert order["status"] == "routed"
        assert sorted(
            (p["number"], p["status"], [ln["sku"] for ln in p["lines"]])
            for p in order["purchase_orders"]
        ) == sorted(
            [
                (rest_po["number"], "accepted", ["IPOD2008GREEN"]),
                (portal_po["number"], "placed", ["IPOD2008RED"]),
            ]
        )
        types = [e["type"] for e in order["timeline"]]
        assert "routing.decided" in types
        decided = next(e for e in order["timeline"] if e["type"] == "routing.decided")
        assert {ln["supplier"] for ln in decided["data"]["lines"]} == {"RestCo", "PortalCo"}

        # Stock was reserved.
        products = (await client.get("/api/v1/supplier-products", headers=shop.headers)).json()[
            "items"
        ]
        assert {p["sku"]: p["stock"] for p in products} == {"IPOD2008GREEN": 9, "IPOD2008RED": 4}

    async def test_portal_supplier_accepts_ships_partially_and_reports_tracking(
        self, client: Client, shop: MerchantHandle, sim: SupplierSim, suppliers: dict[str, Any]
    ) -> None:
        await import_catalog(client, shop, ["IPOD2008RED,PortalCo,PC-RED,75.50,USD,5,4,*,1"])
        payload = order_payload()
        payload["line_items"] = [dict(payload["line_items"][1], quantity=3)]
        await send_order(client, line_items=payload["line_items"])
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "placed")
        key = {"Authorization": f"Bearer {suppliers['portal']['api_key']}"}

        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/accept",
            json={"supplier_reference": "P-77"},
            headers=key,
        )
        assert r.status_code == 200
        assert r.json()["status"] == "accepted"

        # Too many, and an unknown SKU: 400 naming the field; nothing recorded.
        too_many = await client.post(
            f"/supplier/v1/orders/{po['id']}/shipments",
            json={"tracking_number": "1Z1", "lines": [{"sku": "PC-RED", "quantity": 4}]},
            headers=key,
        )
        assert too_many.status_code == 400
        assert "lines[0].quantity" in too_many.json()["detail"]
        unknown = await client.post(
            f"/supplier/v1/orders/{po['id']}/shipments",
            json={"tracking_number": "1Z1", "lines": [{"sku": "NOPE", "quantity": 1}]},
            headers=key,
        )
        assert unknown.status_code == 400
        assert "lines[0].sku" in unknown.json()["detail"]

        first = await client.post(
            f"/supplier/v1/orders/{po['id']}/shipments",
            json={
                "carrier": "UPS",
                "tracking_number": "1Z999",
                "tracking_url": "https://ups.example/1Z999",
                "lines": [{"sku": "PC-RED", "quantity": 2}],
            },
            headers=key,
        )
        assert first.status_code == 201, first.text
        again = await client.post(
            f"/supplier/v1/orders/{po['id']}/shipments",
            json={
                "carrier": "UPS",
                "tracking_number": "1Z999",
                "lines": [{"sku": "PC-RED", "quantity": 2}],
            },
            headers=key,
        )
        assert again.json()["id"] == first.json()["id"]  # same tracking number: same shipment
        [partial] = await purchase_orders(client, shop)
        assert partial["status"] == "partially_shipped"
        assert partial["lines"][0]["quantity_shipped"] == 2

        rest = await client.post(
            f"/supplier/v1/orders/{po['id']}/shipments",
            json={"carrier": "UPS", "tracking_number": "1Z1000"},
            headers=key,
        )
        assert rest.status_code == 201
        shipment_id = rest.json()["id"]
        [shipped] = await purchase_orders(client, shop)
        assert shipped["status"] == "shipped"
        detail = (await client.get(f"/api/v1/orders/{po['order_id']}", headers=shop.headers)).json()
        [with_shipments] = detail["purchase_orders"]
        assert [(x["tracking_number"], x["carrier"]) for x in with_shipments["shipments"]] == [
            ("1Z999", "UPS"),
            ("1Z1000", "UPS"),
        ]

        for status in ("in_transit", "out_for_delivery", "delivered"):
            r = await client.post(
                f"/supplier/v1/shipments/{shipment_id}/events",
                json={"status": status, "occurred_at": "2026-11-27T10:00:00Z"},
                headers=key,
            )
            assert r.status_code == 201, r.text
        bad = await client.post(
            f"/supplier/v1/shipments/{shipment_id}/events",
            json={"status": "teleported", "occurred_at": "2026-11-27T10:00:00Z"},
            headers=key,
        )
        assert bad.status_code == 400
        # Not delivered yet: the first parcel has no delivery event.
        assert (await purchase_orders(client, shop))[0]["status"] == "shipped"
        first_id = first.json()["id"]
        await client.post(
            f"/supplier/v1/shipments/{first_id}/events",
            json={"status": "delivered", "occurred_at": "2026-11-28T10:00:00Z"},
            headers=key,
        )
        assert (await purchase_orders(client, shop))[0]["status"] == "delivered"

        # An illegal transition is a 409.
        late = await client.post(
            f"/supplier/v1/orders/{po['id']}/reject", json={"reason": "x"}, headers=key
        )
        assert late.status_code == 409

    async def test_a_supplier_sees_only_its_own_purchase_orders(
        self, client: Client, shop: MerchantHandle, sim: SupplierSim, suppliers: dict[str, Any]
    ) -> None:
        await import_catalog(client, shop, ["IPOD2008RED,PortalCo,PC-RED,75.50,USD,5,4,*,1"])
        payload = order_payload()
        await send_order(client, line_items=[payload["line_items"][1]])
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "placed")
        other = {"Authorization": f"Bearer {suppliers['rest']['api_key']}"}
        assert (await client.get("/supplier/v1/orders", headers=other)).json()["items"] == []
        r = await client.post(f"/supplier/v1/orders/{po['id']}/accept", headers=other)
        assert r.status_code == 404
        assert (
            await client.get("/supplier/v1/orders", headers={"Authorization": "Bearer nope"})
        ).status_code == 401


class TestRejectionAndFailure:
    async def test_rejection_moves_the_line_to_the_next_supplier(
        self, client: Client, shop: MerchantHandle, sim: SupplierSim, suppliers: dict[str, Any]
    ) -> None:
        await import_catalog(
            client,
            shop,
            [
                "IPOD2008RED,PortalCo,PC-RED,70.00,USD,5,4,*,1",
                "IPOD2008RED,RestCo,RC-RED,72.00,USD,5,4,*,2",
            ],
        )
        payload = order_payload()
        await send_order(client, line_items=[payload["line_items"][1]])
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "placed")
        key = {"Authorization": f"Bearer {suppliers['portal']['api_key']}"}
        r = await client.post(
            f"/supplier/v1/orders/{po['id']}/reject", json={"reason": "out of stock"}, headers=key
        )
        assert r.status_code == 200, r.text
        pos = await wait_pos(client, shop, lambda p: any(x["status"] == "accepted" for x in p))
        statuses = sorted((x["status"], x["supplier_id"]) for x in pos)
        assert statuses == sorted(
            [
                ("rejected", suppliers["portal"]["supplier"]["id"]),
                ("accepted", suppliers["rest"]["supplier"]["id"]),
            ]
        )
        assert len(sim.orders) == 1
        products = {
            (p["supplier_id"], p["sku"]): p["stock"]
            for p in (await client.get("/api/v1/supplier-products", headers=shop.headers)).json()[
                "items"
            ]
        }
        # The rejecting supplier's reservation came back; the new one is taken.
        assert products[(suppliers["portal"]["supplier"]["id"], "IPOD2008RED")] == 5
        assert products[(suppliers["rest"]["supplier"]["id"], "IPOD2008RED")] == 4

    async def test_rejection_by_the_last_candidate_goes_to_the_exceptions_queue(
        self, client: Client, shop: MerchantHandle, sim: SupplierSim, suppliers: dict[str, Any]
    ) -> None:
        await import_catalog(client, shop, ["IPOD2008RED,PortalCo,PC-RED,70.00,USD,5,4,*,1"])
        await send_order(client, line_items=[order_payload()["line_items"][1]])
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "placed")
        key = {"Authorization": f"Bearer {suppliers['portal']['api_key']}"}
        await client.post(
            f"/supplier/v1/orders/{po['id']}/reject", json={"reason": "discontinued"}, headers=key
        )
        order = (await client.get(f"/api/v1/orders/{po['order_id']}", headers=shop.headers)).json()
        assert order["status"] == "needs_attention"
        cases = (await client.get("/api/v1/exceptions", headers=shop.headers)).json()["items"]
        assert any(c["kind"] == "unroutable_line" and "IPOD2008RED" in c["reason"] for c in cases)

    async def test_503_then_200_places_one_order(
        self, client: Client, shop: MerchantHandle, sim: SupplierSim, suppliers: dict[str, Any]
    ) -> None:
        sim.script = [503]
        await import_catalog(client, shop, ["IPOD2008GREEN,RestCo,RC-GREEN,80.00,USD,10,3,*,1"])
        await send_order(client, line_items=[order_payload()["line_items"][0]])
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "accepted")
        assert po["attempts"] == 2
        assert len(sim.orders) == 1
        assert len(sim.requests) == 2
        keys = {r.headers["idempotency-key"] for r in sim.requests}
        assert keys == {f"dropship-po-{po['id']}"}

    async def test_crash_after_the_supplier_accepted_does_not_place_twice(
        self,
        client: Client,
        shop: MerchantHandle,
        sim: SupplierSim,
        suppliers: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The supplier took the order, then our worker died before recording it: the retry
        sends the same idempotency key and the supplier answers with the order it has."""
        from sqlalchemy.exc import OperationalError

        import app.purchasing.service as po_service

        real = po_service.transition
        crashed = []

        async def crash_once(session: Any, po: Any, status: str, *a: Any, **k: Any) -> None:
            if status in ("accepted", "placed") and not crashed:
                crashed.append(status)
                raise OperationalError("UPDATE", {}, Exception("worker lost its connection"))
            await real(session, po, status, *a, **k)

        monkeypatch.setattr(po_service, "transition", crash_once)
        await import_catalog(client, shop, ["IPOD2008GREEN,RestCo,RC-GREEN,80.00,USD,10,3,*,1"])
        await send_order(client, line_items=[order_payload()["line_items"][0]])
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "accepted")
        assert crashed == ["accepted"]
        assert len(sim.requests) == 2  # placed twice at the HTTP level...
        assert len(sim.orders) == 1  # ...one order at the supplier
        assert po["supplier_reference"] == "SUP-1000"

    async def test_permanent_refusal_fails_the_purchase_order_and_reroutes(
        self, client: Client, shop: MerchantHandle, sim: SupplierSim, suppliers: dict[str, Any]
    ) -> None:
        sim.script = [422]
        await import_catalog(
            client,
            shop,
            [
                "IPOD2008GREEN,RestCo,RC-GREEN,80.00,USD,10,3,*,1",
                "IPOD2008GREEN,PortalCo,PC-GREEN,85.00,USD,10,3,*,2",
            ],
        )
        await send_order(client, line_items=[order_payload()["line_items"][0]])
        pos = await wait_pos(client, shop, lambda p: any(x["status"] == "placed" for x in p))
        failed = next(x for x in pos if x["status"] == "failed")
        assert "422" in failed["last_error"]
        assert failed["supplier_id"] == suppliers["rest"]["supplier"]["id"]
        assert len(sim.orders) == 0

    async def test_exhausted_retries_land_in_the_dead_letter_view(
        self,
        client: Client,
        shop: MerchantHandle,
        sim: SupplierSim,
        suppliers: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        import app.purchasing.tasks as tasks

        monkeypatch.setattr(tasks, "MAX_ATTEMPTS", 2)
        monkeypatch.setattr(tasks, "BASE_DELAY_MS", 50)
        sim.script = [503, 503, 503]
        await import_catalog(client, shop, ["IPOD2008GREEN,RestCo,RC-GREEN,80.00,USD,10,3,*,1"])
        await send_order(client, line_items=[order_payload()["line_items"][0]])
        await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "failed")
        dead = await purchase_orders(client, shop, dead_letter="true")
        assert len(dead) == 1
        assert dead[0]["attempts"] == 2
        assert "503" in dead[0]["last_error"]
        cases = (await client.get("/api/v1/exceptions", headers=shop.headers)).json()["items"]
        assert any(c["kind"] == "placement_dead_letter" for c in cases)


class TestMerchantRoutingTools:
    async def test_simulate_explains_without_changing_anything(
        self, client: Client, shop: MerchantHandle, sim: SupplierSim, suppliers: dict[str, Any]
    ) -> None:
        await import_catalog(
            client,
            shop,
            [
                "IPOD2008RED,PortalCo,PC-RED,70.00,USD,5,4,*,2",
                "IPOD2008RED,RestCo,RC-RED,60.00,USD,1,4,DE,1",
            ],
        )
        r = await client.post(
            "/api/v1/routing/simulate",
            json={"country": "US", "lines": [{"sku": "IPOD2008RED", "quantity": 2}]},
            headers=shop.headers,
        )
        assert r.status_code == 200, r.text
        [line] = r.json()["lines"]
        assert line["supplier"] == "PortalCo"
        reasons = {c["supplier_name"]: c["reason"] for c in line["candidates"]}
        assert reasons == {"PortalCo": "eligible", "RestCo": "does not ship to US"}
        assert await purchase_orders(client, shop) == []

        bad = await client.post("/api/v1/routing/simulate", json={}, headers=shop.headers)
        assert bad.status_code == 400

    async def test_cheapest_rule_overrides_priority(
        self, client: Client, shop: MerchantHandle, sim: SupplierSim, suppliers: dict[str, Any]
    ) -> None:
        await import_catalog(
            client,
            shop,
            [
                "IPOD2008RED,PortalCo,PC-RED,70.00,USD,5,4,*,1",
                "IPOD2008RED,RestCo,RC-RED,60.00,USD,5,4,*,2",
            ],
        )
        ask = {"country": "US", "lines": [{"sku": "IPOD2008RED", "quantity": 1}]}
        before = (
            await client.post("/api/v1/routing/simulate", json=ask, headers=shop.headers)
        ).json()
        assert before["lines"][0]["supplier"] == "PortalCo"
        r = await client.post(
            "/api/v1/routing/rules",
            json={"name": "iPods by price", "strategy": "cheapest", "match_skus": ["IPOD*"]},
            headers=shop.headers,
        )
        assert r.status_code == 201
        after = (
            await client.post("/api/v1/routing/simulate", json=ask, headers=shop.headers)
        ).json()
        assert after["lines"][0]["supplier"] == "RestCo"
        assert after["lines"][0]["strategy"] == "cheapest"

    async def test_catalog_import_reports_each_row(
        self, client: Client, shop: MerchantHandle, suppliers: dict[str, Any]
    ) -> None:
        report = await import_catalog(
            client,
            shop,
            [
                "A1,PortalCo,P-A1,1.50,USD,3,2,US DE,1",
                "A1,PortalCo,P-A1,1.75,USD,4,2,*,1",
                "A2,Nobody,X,1,USD,1,1,*,1",
                "A3,PortalCo,P-A3,-1,USD,1,1,*,1",
                "A4,PortalCo,P-A4,2,usd,1,1,USA,1",
            ],
        )
        assert [(r["row"], r["status"]) for r in report["rows"]] == [
            (2, "created"),
            (3, "updated"),
            (4, "rejected"),
            (5, "rejected"),
            (6, "rejected"),
        ]
        assert "supplier" in report["rows"][2]["reason"]
        assert "unit_cost" in report["rows"][3]["reason"]
        assert "ships_to" in report["rows"][4]["reason"]

    async def test_supplier_inventory_update(
        self, client: Client, shop: MerchantHandle, suppliers: dict[str, Any]
    ) -> None:
        await import_catalog(client, shop, ["A1,PortalCo,P-A1,1.50,USD,3,2,*,1"])
        key = {"Authorization": f"Bearer {suppliers['portal']['api_key']}"}
        r = await client.put(
            "/supplier/v1/inventory",
            json=[
                {"sku": "P-A1", "quantity": 42, "unit_cost": "1.25"},
                {"sku": "ZZZ", "quantity": 1},
            ],
            headers=key,
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"updated": 1, "unknown": ["ZZZ"]}
        [product] = (await client.get("/api/v1/supplier-products", headers=shop.headers)).json()[
            "items"
        ]
        assert (product["stock"], product["unit_cost"]) == (42, "1.25")
        too_many = await client.put(
            "/supplier/v1/inventory", json=[{"sku": "x", "quantity": 1}] * 10_001, headers=key
        )
        assert too_many.status_code == 400
        # A bad row is named by its index and field, and nothing changes.
        bad = await client.put(
            "/supplier/v1/inventory",
            json=[{"sku": "P-A1", "quantity": 7}, {"sku": "P-A1", "quantity": "lots"}],
            headers=key,
        )
        assert bad.status_code == 400
        assert bad.json()["extra"]["field"] == "[1].quantity"
        assert bad.json()["detail"].startswith("[1].quantity: Expected `int`")
        [product] = (await client.get("/api/v1/supplier-products", headers=shop.headers)).json()[
            "items"
        ]
        assert product["stock"] == 42

    async def test_connector_secrets_are_masked_and_kept(
        self, client: Client, shop: MerchantHandle, suppliers: dict[str, Any]
    ) -> None:
        rest_id = suppliers["rest"]["supplier"]["id"]
        shown = (await client.get(f"/api/v1/suppliers/{rest_id}", headers=shop.headers)).json()
        assert shown["config"]["auth_value"] == "********"
        bad = await client.post(
            "/api/v1/suppliers",
            json={"name": "X", "connector": "rest_json", "config": {"base_url": "ftp://x"}},
            headers=shop.headers,
        )
        assert bad.status_code == 400
        assert "config.base_url" in bad.json()["detail"]


class TestRecovery:
    async def test_lost_placement_job_is_recovered_by_the_sweeper(
        self,
        client: Client,
        shop: MerchantHandle,
        sim: SupplierSim,
        suppliers: dict[str, Any],
        db: Database,
        settings: Any,
    ) -> None:
        from app.jobs.task import TaskContext
        from workers.maintenance import sweep

        with losing_jobs(client.app.state.workers.broker, "purchase_order.place") as lost:
            await import_catalog(client, shop, ["IPOD2008GREEN,RestCo,RC-GREEN,80.00,USD,10,3,*,1"])
            await send_order(client, line_items=[order_payload()["line_items"][0]])

            async def lost_one() -> bool:
                return bool(lost)

            await eventually(lost_one)
        [po] = await purchase_orders(client, shop)
        assert po["status"] == "pending"
        assert sim.orders == {}

        ctx = TaskContext(settings=settings, db=db, box=client.app.state.services.box)
        await sweep(ctx, 0)
        client.app.state.workers.relay.wake()
        [po] = await wait_pos(client, shop, lambda p: p[0]["status"] == "accepted")
        assert len(sim.orders) == 1


class TestMerchantControls:
    async def test_routing_settings_round_trip_and_validation(
        self, client: Client, shop: MerchantHandle
    ) -> None:
        r = await client.get("/api/v1/routing/settings", headers=shop.headers)
        assert r.json() == {"auto_route": True, "consolidation_tolerance": "0.05"}
        r = await client.put(
            "/api/v1/routing/settings",
            json={"auto_route": False, "consolidation_tolerance": "0.10"},
            headers=shop.headers,
        )
        assert r.status_code == 200, r.text
        again = await client.get("/api/v1/routing/settings", headers=shop.headers)
        assert again.json() == {"auto_route": False, "consolidation_tolerance": "0.10"}
        bad = await client.put(
            "/api/v1/routing/settings",
            json={"auto_route": True, "consolidation_tolerance": "2"},
            headers=shop.headers,
        )
        assert bad.status_code == 400
        assert "consolidation_tolerance" in bad.json()["detail"]

    async def test_manual_reroute_after_the_catalog_is_fixed(
        self, client: Client, shop: MerchantHandle, sim: SupplierSim, suppliers: dict[str, Any]
    ) -> None:
        # The only offer does not ship to the US: the order waits in the exceptions queue.
        await import_catalog(client, shop, ["IPOD2008RED,PortalCo,PC-RED,70.00,USD,5,4,DE,1"])
        await send_order(client, line_items=[order_payload()["line_items"][1]])

        async def stuck() -> dict[str, Any] | None:
            items = (await client.get("/api/v1/orders", headers=shop.headers)).json()["items"]
            return items[0] if items and items[0]["status"] == "needs_attention" else None

        order = await eventually(stuck)
        await import_catalog(client, shop, ["IPOD2008RED,PortalCo,PC-RED,70.00,USD,5,4,*,1"])
        r = await client.post(
            f"/api/v1/orders/{order['id']}/reroute",
            json={"reason": "catalog fixed"},
            headers=shop.headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "routed"
        [po] = await wait_pos(client, shop, lambda p: len(p) == 1 and p[0]["status"] == "placed")
        assert po["order_id"] == order["id"]
        nothing_left = await client.post(
            f"/api/v1/orders/{order['id']}/reroute", json={}, headers=shop.headers
        )
        assert nothing_left.status_code == 409

    async def test_supplier_rate_limit_spaces_placements(
        self, client: Client, shop: MerchantHandle, sim: SupplierSim
    ) -> None:
        await create_supplier(
            client,
            shop,
            name="SlowCo",
            connector="rest_json",
            config=rest_config(),
            rate_limit_per_second=1,
            max_concurrency=1,
        )
        await import_catalog(client, shop, ["IPOD2008GREEN,SlowCo,S-G,80.00,USD,10,3,*,1"])
        for i in range(3):
            await send_order(
                client,
                id=7000 + i,
                name=f"#{7000 + i}",
                line_items=[order_payload()["line_items"][0]],
            )
        await wait_pos(
            client,
            shop,
            lambda p: len(p) == 3 and all(x["status"] == "accepted" for x in p),
            wait=30,
        )
        assert len(sim.orders) == 3
        # One per second at most: three placements span at least two window boundaries (a
        # little under a second by arrival, if the first slot was granted at the end of its
        # second and its request reached the supplier a few milliseconds into the next one;
        # without the limit, the three arrive within milliseconds).
        assert sim.times[-1] - sim.times[0] >= 0.9
