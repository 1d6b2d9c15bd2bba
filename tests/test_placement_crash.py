"""A worker killed for real (SIGKILL) after the supplier accepted the order but before we
recorded it: the retry places nothing twice.

The supplier is the simulated REST supplier served over HTTP; the worker is a separate
``dropship`` process (``serve`` with its in-process workers on SQLite, ``worker`` on
PostgreSQL + Redis). The supplier records the order, then holds its answer while the test kills
the worker, so our side never learns of it. A new worker retries the placement with the same
idempotency key, and the supplier answers with the order it already has.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from pathlib import Path

from litestar.testing import AsyncTestClient
from sqlalchemy import select

from app.db import Database
from app.main import create_app
from app.purchasing.models import POStatus, PurchaseOrder
from app.settings import Settings
from tests.conftest import make_merchant
from tests.support import services as svc
from tests.support.processes import dropship_env, start_dropship
from tests.support.routing import SHOP, create_supplier, import_catalog, send_order
from tests.support.shopify import order_payload
from tests.support.supplier_http import SupplierServer
from tests.support.supplier_sim import SupplierSim
from tests.support.wait import eventually


async def purchase_order_rows(db: Database) -> list[PurchaseOrder]:
    async with db.sessionmaker() as session:
        return list(await session.scalars(select(PurchaseOrder)))


class TestWorkerKilledMidPlacement:
    async def test_killed_after_the_supplier_accepted_the_retry_places_no_second_order(
        self, settings: Settings, db: Database, tmp_path: Path
    ) -> None:
        sim = SupplierSim()
        supplier = SupplierServer(sim)
        accepted = threading.Event()
        answer = threading.Event()

        def hold_the_first_answer() -> None:
            if not accepted.is_set():
                accepted.set()
                answer.wait(60)

        supplier.before_reply = hold_the_first_answer
        shop = await make_merchant(db, SHOP, auto_route=True)

        # The merchant's side, through the API (this process runs no workers).
        api = create_app(settings, configure_logs=False)
        async with AsyncTestClient(api, timeout=30) as client:
            await create_supplier(
                client,
                shop,
                name="RestCo",
                connector="rest_json",
                config={"base_url": supplier.base_url, "auth_value": "Bearer sup-secret"},
            )
            await import_catalog(client, shop, ["IPOD2008GREEN,RestCo,RC-GREEN,80.00,USD,10,3,*,1"])
            await send_order(client, line_items=[order_payload()["line_items"][0]])

        if settings.redis_url:
            args: tuple[str, ...] = ("worker",)
        else:
            args = ("serve", "--port", str(svc.free_port()))
        env = dropship_env(settings, tmp_path / "var", DROPSHIP_WORKER_THREADS="2")
        with supplier.running():
            worker = start_dropship(*args, env=env)
            try:
                got_it = await asyncio.to_thread(accepted.wait, 60)
                assert got_it, "the worker never reached the supplier"
                worker.kill()  # SIGKILL: no cleanup, no commit
                await asyncio.to_thread(worker.wait, 10)
            finally:
                answer.set()
                if worker.poll() is None:
                    worker.kill()

            # The supplier has the order; we do not know it.
            assert len(sim.orders) == 1
            [po] = await purchase_order_rows(db)
            assert po.status == POStatus.PENDING

            # Recovery: the periodic sweep re-enqueues the stuck placement (an embedded server
            # sweeps when it starts; a Redis deployment sweeps every minute: run it now).
            if settings.redis_url:
                from app.jobs.task import TaskContext
                from workers.maintenance import sweep

                await sweep(TaskContext(settings=settings, db=db, box=api.state.services.box), 0)
            again = start_dropship(*args, env=env)
            try:

                async def placed() -> bool:
                    rows = await purchase_order_rows(db)
                    return [r.status for r in rows] == [POStatus.ACCEPTED]

                await eventually(placed, timeout=60)
            finally:
                again.terminate()
                try:
                    await asyncio.to_thread(again.wait, 30)
                except subprocess.TimeoutExpired:
                    again.kill()

        # Two calls, one idempotency key, one order at the supplier.
        keys = [r.headers.get("idempotency-key") for r in sim.requests]
        assert len(keys) == 2
        assert len(set(keys)) == 1
        assert len(sim.orders) == 1
        [po] = await purchase_order_rows(db)
        [order] = sim.orders.values()
        assert po.supplier_reference == order["id"]
        assert json.loads(sim.requests[0].content) == json.loads(sim.requests[1].content)
