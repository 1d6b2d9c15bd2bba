"""Migrations are the only way the schema is built: they must match the models exactly and be
reversible, on both backends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from app import migrate
from app.db import create_engine
from app.models import Base
from tests.support import services as svc


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    pg: svc.Postgres = request.getfixturevalue("pg_server")
    name = f"migr_{tmp_path.name[-20:].replace('-', '_').lower()}"
    pg.psql(f"CREATE DATABASE {name}")
    return pg.url(name)


async def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def compare(sync_conn: Connection) -> list[object]:
                ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return list(compare_metadata(ctx, Base.metadata))

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


def test_upgrade_matches_models_and_round_trips(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    assert asyncio.run(_diff(empty_db_url)) == []
    migrate.downgrade(empty_db_url, "base")
    migrate.upgrade(empty_db_url)
    assert asyncio.run(_diff(empty_db_url)) == []


def test_start_refuses_an_out_of_date_schema(empty_db_url: str) -> None:
    with pytest.raises(migrate.SchemaOutOfDate, match="dropship migrate"):
        asyncio.run(migrate.check_schema(empty_db_url))
    migrate.upgrade(empty_db_url)
    asyncio.run(migrate.check_schema(empty_db_url))
