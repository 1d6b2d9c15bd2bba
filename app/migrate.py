"""Schema migrations: ``dropship migrate`` and the start-up check that refuses an old schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from app.db import create_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


class SchemaOutOfDate(RuntimeError):
    pass


async def check_schema(url: str) -> None:
    """Raise ``SchemaOutOfDate`` naming ``dropship migrate`` unless the database is at head."""
    head = head_revision(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def current(sync_conn: Connection) -> str | None:
                return MigrationContext.configure(sync_conn).get_current_revision()

            rev = await conn.run_sync(current)
    finally:
        await engine.dispose()
    if rev != head:
        raise SchemaOutOfDate(
            f"database schema is at {rev or 'nothing (empty database)'}, code expects {head}: "
            "run `dropship migrate` first"
        )
