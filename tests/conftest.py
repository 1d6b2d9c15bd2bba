"""Test fixtures. Every test that takes ``settings`` runs twice: on SQLite with the in-process
broker (the embedded default) and on PostgreSQL with Redis (production), both real servers
started here from the machine's binaries. Databases are built by the migrations, never by
``create_all``, so migration drift shows up as failing tests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_lib
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from app import migrate
from app.db import Database
from app.merchants.service import create_merchant
from app.models import Base
from app.settings import Settings
from dropship.asgi import create_app
from tests.support import services as svc

REQUIRE_SERVICES = os.environ.get("DROPSHIP_TEST_REQUIRE_SERVICES") == "1"
SHOPIFY_SECRET = "test-shopify-secret"
OLD_SHOPIFY_SECRET = "previous-shopify-secret"


def pytest_configure(config: pytest.Config) -> None:
    global _CONFIG
    _CONFIG = config


_CONFIG: pytest.Config | None = None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """On CI, print a failure's traceback the moment it happens, not only in the summary at
    the end, so a run cut short by CI's time limit still shows why a test failed."""
    if not (report.failed and os.environ.get("CI")) or _CONFIG is None:
        return
    writer = _CONFIG.pluginmanager.get_plugin("terminalreporter")
    if writer is None:
        return
    writer.write_line("")
    writer.write_sep("!", f"FAILED ({report.when}) {report.nodeid}")
    writer.write_line(report.longreprtext[-20_000:])
    for name, content in report.sections:
        if "stderr" in name or "log" in name:
            writer.write_sep("-", name)
            writer.write_line(content[-5_000:])


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (DROPSHIP_TEST_REQUIRE_SERVICES=1)")
    pytest.skip(f"{reason}: install PostgreSQL and Redis to run the production-backend tests")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[svc.Postgres]:
    try:
        with svc.postgres() as pg:
            yield pg
    except svc.ServiceUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[svc.Redis]:
    try:
        with svc.redis() as server:
            yield server
    except svc.ServiceUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database(pg_server: svc.Postgres) -> str:
    pg_server.psql("CREATE DATABASE dropship_test")
    url = pg_server.url("dropship_test")
    migrate.upgrade(url)
    return url


TABLES = [t.name for t in reversed(Base.metadata.sorted_tables)]


async def _truncate(url: str) -> None:
    db = Database(url)
    try:
        async with db.transaction() as session:
            await session.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    finally:
        await db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    common = {
        "secret_key": "test-secret-key",
        "shopify_api_key": "test-client-id",
        "shopify_api_secret": SHOPIFY_SECRET,
        "shopify_old_api_secret": OLD_SHOPIFY_SECRET,
        "public_url": "http://testserver.local",
        "env": "test",
        "var_dir": tmp_path / "var",
        "relay_interval": 0.02,
        "worker_threads": 2,
        # Tests wait on chains of jobs over mostly idle queues: poll them as often as the relay.
        "worker_idle_poll_ms": 100,
        "log_format": "console",
    }
    if backend == "sqlite":
        db = tmp_path / "dropship.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), db)
        return Settings(database_url=f"sqlite+aiosqlite:///{db}", redis_url=None, **common)
    url = request.getfixturevalue("pg_database")
    server: svc.Redis = request.getfixturevalue("redis_server")
    server.start()
    redis_lib.Redis.from_url(server.url).flushall()
    asyncio.run(_truncate(url))
    return Settings(database_url=url, redis_url=server.url, **common)


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings, run_workers=True, configure_logs=False)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app, timeout=30) as c:
        yield c


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url)
    yield database
    await database.dispose()


@dataclass
class MerchantHandle:
    id: object
    shop: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_merchant(
    db: Database, shop: str, email: str = "owner@example.com", *, auto_route: bool = False
) -> MerchantHandle:
    """A merchant and its API token. Intake and validation tests keep ``auto_route`` off so
    valid orders stay ``ready_to_route``; routing tests turn it on (the product default)."""
    async with db.transaction() as session:
        m, token = await create_merchant(session, shop, email)
        m.settings = {"routing": {"auto_route": auto_route}}
    return MerchantHandle(m.id, m.shop_domain, token)


@pytest.fixture
async def merchant(db: Database) -> MerchantHandle:
    return await make_merchant(db, "acme-store.myshopify.com")


@pytest.fixture
async def other_merchant(db: Database) -> MerchantHandle:
    return await make_merchant(db, "rival-store.myshopify.com")
