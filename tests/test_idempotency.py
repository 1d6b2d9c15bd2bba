"""``Idempotency-Key`` on the merchant API's POSTs: replays, conflicts, tenants, what is not
stored, and keys left behind by requests that never finished."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from app.db import Database, utcnow
from app.idempotency.middleware import request_fingerprint
from app.idempotency.models import IdempotencyRecord
from app.orders.models import Order
from app.security import SecretBox
from tests.conftest import MerchantHandle
from tests.support.orders import Client, count, order_body
from tests.test_orders_csv_import import IMPORT, MIXED

ORDERS = "/api/v1/orders"


def keyed(merchant: MerchantHandle, key: str, **extra: str) -> dict[str, str]:
    return {**merchant.headers, "Idempotency-Key": key, **extra}


BOX = SecretBox("test-secret-key")  # the suite's settings.secret_key


def scope_of(merchant: MerchantHandle) -> str:
    return BOX.sign(merchant.headers["Authorization"])


class TestOrderEntryWithKey:
    async def test_retry_gets_the_same_answer_and_one_order(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        body = order_body()
        first = await client.post(ORDERS, json=body, headers=keyed(merchant, "k-1"))
        assert first.status_code == 201
        assert "idempotent-replayed" not in first.headers
        for _ in range(3):
            again = await client.post(ORDERS, json=body, headers=keyed(merchant, "k-1"))
            assert again.status_code == 201
            assert again.headers["idempotent-replayed"] == "true"
            assert again.headers["content-type"] == "application/json"
            assert again.content == first.content
        assert await count(db, Order) == 1

    async def test_retry_without_reference_still_creates_one_order(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        body = order_body(None)
        first = await client.post(ORDERS, json=body, headers=keyed(merchant, "k-noref"))
        again = await client.post(ORDERS, json=body, headers=keyed(merchant, "k-noref"))
        assert again.json()["id"] == first.json()["id"]
        assert await count(db, Order) == 1

    async def test_concurrent_retries_create_one_order(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        body = order_body(None)
        results = await asyncio.gather(
            *(client.post(ORDERS, json=body, headers=keyed(merchant, "k-race")) for _ in range(5))
        )
        created = [r for r in results if r.status_code == 201]
        in_flight = [r for r in results if r.status_code == 409]
        assert len(created) + len(in_flight) == 5
        assert len({r.json()["id"] for r in created}) == 1
        assert len([r for r in created if "idempotent-replayed" not in r.headers]) == 1
        for r in in_flight:
            assert r.json()["detail"] == (
                "Idempotency-Key: a request with this key is still running"
            )
            assert r.headers["retry-after"] == "1"
        assert await count(db, Order) == 1

    async def test_same_key_different_body_is_422(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await client.post(ORDERS, json=order_body("A"), headers=keyed(merchant, "k-2"))
        r = await client.post(ORDERS, json=order_body("B"), headers=keyed(merchant, "k-2"))
        assert r.status_code == 422
        assert r.json() == {
            "status_code": 422,
            "detail": "Idempotency-Key was already used with a different request",
            "extra": {"field": "Idempotency-Key"},
        }
        assert await count(db, Order) == 1

    async def test_same_key_on_another_endpoint_is_422(
        self, client: Client, merchant: MerchantHandle
    ) -> None:
        await client.post(ORDERS, json=order_body(), headers=keyed(merchant, "k-3"))
        r = await client.post(
            IMPORT, content=MIXED, headers=keyed(merchant, "k-3", **{"Content-Type": "text/csv"})
        )
        assert r.status_code == 422

    async def test_two_merchants_may_use_the_same_key(
        self,
        client: Client,
        merchant: MerchantHandle,
        other_merchant: MerchantHandle,
        db: Database,
    ) -> None:
        body = order_body()
        mine = await client.post(ORDERS, json=body, headers=keyed(merchant, "shared"))
        theirs = await client.post(ORDERS, json=body, headers=keyed(other_merchant, "shared"))
        assert (mine.status_code, theirs.status_code) == (201, 201)
        assert "idempotent-replayed" not in theirs.headers
        assert mine.json()["id"] != theirs.json()["id"]
        replay = await client.post(ORDERS, json=body, headers=keyed(other_merchant, "shared"))
        assert replay.json()["id"] == theirs.json()["id"]
        assert await count(db, Order, merchant_id=merchant.id) == 1
        assert await count(db, Order, merchant_id=other_merchant.id) == 1

    async def test_without_a_key_nothing_is_remembered(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        body = order_body(None)
        a = await client.post(ORDERS, json=body, headers=merchant.headers)
        b = await client.post(ORDERS, json=body, headers=merchant.headers)
        assert (a.status_code, b.status_code) == (201, 201)
        assert a.json()["id"] != b.json()["id"]
        assert "idempotent-replayed" not in b.headers
        assert await count(db, IdempotencyRecord) == 0

    async def test_client_errors_are_replayed(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        bad = order_body(currency="usd")
        first = await client.post(ORDERS, json=bad, headers=keyed(merchant, "k-bad"))
        again = await client.post(ORDERS, json=bad, headers=keyed(merchant, "k-bad"))
        assert first.status_code == again.status_code == 400
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"

    async def test_conflicts_are_not_stored(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await client.post(ORDERS, json=order_body("TAKEN"), headers=merchant.headers)
        for _ in range(2):
            r = await client.post(ORDERS, json=order_body("TAKEN"), headers=keyed(merchant, "k-c"))
            assert r.status_code == 409
            assert "idempotent-replayed" not in r.headers
        assert await count(db, IdempotencyRecord) == 0

    async def test_bad_credentials_are_not_stored(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        r = await client.post(
            ORDERS,
            json=order_body(),
            headers={"Authorization": "Bearer dsm_wrong", "Idempotency-Key": "k-auth"},
        )
        assert r.status_code == 401
        assert await count(db, IdempotencyRecord) == 0

    async def test_server_errors_are_not_stored(
        self,
        client: Client,
        merchant: MerchantHandle,
        db: Database,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("database fell over")

        import app.orders.service as service

        real = service.enter_order
        monkeypatch.setattr(service, "enter_order", broken)
        r = await client.post(ORDERS, json=order_body(), headers=keyed(merchant, "k-500"))
        assert r.status_code == 500
        assert await count(db, IdempotencyRecord) == 0
        assert await count(db, Order) == 0

        monkeypatch.setattr(service, "enter_order", real)
        r = await client.post(ORDERS, json=order_body(), headers=keyed(merchant, "k-500"))
        assert r.status_code == 201
        assert "idempotent-replayed" not in r.headers
        assert await count(db, Order) == 1

    async def test_overlong_key_is_400(self, client: Client, merchant: MerchantHandle) -> None:
        r = await client.post(ORDERS, json=order_body(), headers=keyed(merchant, "k" * 256))
        assert r.status_code == 400
        assert r.json()["detail"] == "Idempotency-Key: at most 255 characters"
        r = await client.post(ORDERS, json=order_body(), headers=keyed(merchant, "k" * 255))
        assert r.status_code == 201


class TestLeftoverKeys:
    async def _leftover(
        self,
        db: Database,
        merchant: MerchantHandle,
        key: str,
        age: timedelta,
        *,
        status_code: int | None = None,
        request_hash: str = "0" * 64,
    ) -> None:
        async with db.transaction() as s:
            s.add(
                IdempotencyRecord(
                    scope=scope_of(merchant),
                    key=key,
                    request_hash=request_hash,
                    status_code=status_code,
                    response_body=b'{"stale": true}' if status_code else None,
                    created_at=utcnow() - age,
                )
            )

    async def test_a_key_still_running_is_409_for_the_same_request(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        raw = json.dumps(order_body()).encode()
        fingerprint = request_fingerprint(BOX, {"path": ORDERS, "query_string": b""}, raw)
        await self._leftover(db, merchant, "k-run", timedelta(seconds=1), request_hash=fingerprint)
        headers = keyed(merchant, "k-run", **{"Content-Type": "application/json"})
        r = await client.post(ORDERS, content=raw, headers=headers)
        assert r.status_code == 409
        assert r.headers["retry-after"] == "1"
        # ...and 422 for another request with that key.
        r = await client.post(ORDERS, content=raw + b" ", headers=headers)
        assert r.status_code == 422
        assert await count(db, Order) == 0

    async def test_a_key_whose_request_died_is_released(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await self._leftover(db, merchant, "k-dead", timedelta(minutes=10))
        r = await client.post(ORDERS, json=order_body(), headers=keyed(merchant, "k-dead"))
        assert r.status_code == 201
        again = await client.post(ORDERS, json=order_body(), headers=keyed(merchant, "k-dead"))
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == r.json()["id"]
        assert await count(db, Order) == 1

    async def test_keys_expire_after_a_day(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        await self._leftover(db, merchant, "k-old", timedelta(hours=25), status_code=201)
        r = await client.post(ORDERS, json=order_body(), headers=keyed(merchant, "k-old"))
        assert r.status_code == 201
        assert "idempotent-replayed" not in r.headers
        assert await count(db, Order) == 1
        assert await count(db, IdempotencyRecord) == 1


class TestImportWithKey:
    async def test_same_csv_same_key_is_replayed(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        headers = keyed(merchant, "imp-1", **{"Content-Type": "text/csv"})
        first = await client.post(IMPORT, content=MIXED, headers=headers)
        again = await client.post(IMPORT, content=MIXED, headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
        assert again.json()["created"] == 2  # the original answer, not "duplicate"
        assert await count(db, Order) == 2

    async def test_multipart_retry_with_a_new_boundary_is_replayed(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        def multipart(boundary: str) -> tuple[bytes, dict[str, str]]:
            body = (
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="file"; filename="orders.csv"\r\n'
                "Content-Type: text/csv\r\n\r\n"
                f"{MIXED}\r\n"
                f"--{boundary}--\r\n"
            ).encode()
            content_type = f"multipart/form-data; boundary={boundary}"
            return body, keyed(merchant, "imp-2", **{"Content-Type": content_type})

        body, headers = multipart("a1b2c3d4e5f6")
        first = await client.post(IMPORT, content=body, headers=headers)
        assert first.status_code == 200, first.text
        body, headers = multipart("ffeeddccbbaa")
        again = await client.post(IMPORT, content=body, headers=headers)
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
        assert await count(db, Order) == 2

    async def test_different_csv_same_key_is_422(
        self, client: Client, merchant: MerchantHandle, db: Database
    ) -> None:
        headers = keyed(merchant, "imp-3", **{"Content-Type": "text/csv"})
        await client.post(IMPORT, content=MIXED, headers=headers)
        r = await client.post(IMPORT, content=MIXED + "\n", headers=headers)
        assert r.status_code == 422
