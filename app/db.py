"""Database plumbing: the declarative base, portable column types, engines and sessions.

One request or one task is one transaction. Services ``flush()``; whoever opened the session
commits. SQLite (the embedded default) and PostgreSQL are both first-class: column types below
keep money exact and timestamps in UTC on both.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeAlias

from sqlalchemy import JSON, BigInteger, DateTime, MetaData, Numeric, String, Uuid, event, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from app.codes import wire_amount
from app.limits import MAX_SHOPIFY_ID
from app.sqlite_writer import serialize_writers

#: The session controllers and tasks are handed: they name it, and import nothing from SQLAlchemy
#: (a domain's queries live in its service module).
DbSession: TypeAlias = AsyncSession

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): index-friendly and sortable by creation."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = (rand >> 68) & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    value = ((ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use UTC-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """Exact decimal amounts: NUMERIC(18, 4) on PostgreSQL, canonical text on SQLite.

    SQLite has no decimal type and would round-trip through float; text keeps every digit.
    """

    impl = Numeric(18, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(Numeric(18, 4, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        value = value.quantize(Decimal("0.0001"))
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        # The column does not know the currency: the same form on both backends (two places,
        # more when stored), and the API shows it in the currency's minor units (wire_amount).
        return wire_amount(Decimal(value))


class UnsignedBigInt(TypeDecorator[int]):
    """Unsigned 64-bit integers (Shopify ids) kept exact in a signed BIGINT, by two's complement.

    0 … 2**63-1 are stored as themselves, 2**63 … 2**64-1 as -2**63 … -1. Why this rather than
    NUMERIC(20, 0): SQLite gives a NUMERIC column REAL affinity above 2**63-1 (the id would be
    rounded), and PostgreSQL would have to rewrite the columns and their unique indexes. Here the
    columns and indexes stay as they are, every existing row (all below 2**63) already means
    what it meant, so no data migration; equality and ``IN`` lookups stay exact and indexed
    because the compared value goes through the same conversion. The one thing that changes is
    order: ids above 2**63 sort before the others in SQL, and nothing sorts by Shopify ids.
    Raw SQL must not compare these columns with unconverted values.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"an unsigned 64-bit id must be int, got {type(value).__name__}")
        if not 0 <= value <= MAX_SHOPIFY_ID:
            raise ValueError(f"out of the unsigned 64-bit range: {value}")
        return value - 2**64 if value >= 2**63 else value

    def process_result_value(self, value: int | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return value + 2**64 if value < 0 else value


#: JSON on SQLite, JSONB on PostgreSQL.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        Decimal: Money(),
        uuid.UUID: Uuid(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def insert_for(session: AsyncSession) -> Any:
    """The dialect's ``insert`` (``on_conflict_do_nothing`` / ``_do_update`` are dialect
    constructs in SQLAlchemy): PostgreSQL's, else SQLite's.

    Row locks need no such branch: ``with_for_update()`` is left out by SQLAlchemy on SQLite,
    whose transactions begin IMMEDIATE (writers are already serialised)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql_insert
    return sqlite_insert


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and ":memory:" not in url:
        return Path(url[len(prefix) :].split("?", 1)[0])
    return None


#: How long a SQLite transaction waits for the write lock (other processes: SQLite's busy
#: timeout; this process: :mod:`app.sqlite_writer`) before failing as a transient error.
SQLITE_LOCK_TIMEOUT = 30.0


def create_engine(
    url: str, *, pool_size: int = 10, pre_ping: bool = True, read_only: bool = False
) -> AsyncEngine:
    """An async engine tuned for the backend.

    SQLite: WAL, ``BEGIN IMMEDIATE`` so a transaction never has to upgrade a read lock (which
    fails at once with "database is locked"), the writers of this process queued on one
    :class:`~app.sqlite_writer.WriterLock` per file, and a generous busy timeout for writers in
    other processes (``dropship migrate``, the CLI).

    ``read_only`` (SQLite): a plain deferred ``BEGIN`` and ``PRAGMA query_only``, no writer lock.
    In WAL mode readers never wait for the writer, so a read-only request is not queued behind
    a long import; ``query_only`` turns an accidental write into an error instead of a wait.
    """
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_LOCK_TIMEOUT})

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide where transactions begin.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_TIMEOUT * 1000)}")
            if read_only:
                cursor.execute("PRAGMA query_only=ON")
            cursor.close()

        if read_only:

            @event.listens_for(engine.sync_engine, "begin")
            def _on_read_begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN")  # one snapshot for the whole request

        elif path is not None:
            # Writers of this process queue in Python, not in SQLite's busy handler (see there).
            serialize_writers(engine, path, timeout=SQLITE_LOCK_TIMEOUT)
        else:

            @event.listens_for(engine.sync_engine, "begin")
            def _on_begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
    )
    # An executemany INSERT (order lines, purchase-order lines: rows of an ORM flush or of a
    # Core list of dicts) as one multi-row ``INSERT … VALUES`` per 1,000 rows, where asyncpg's
    # executemany runs the statement once per row: one statement for the server to plan and
    # log instead of N. The dialect has the machinery (it uses it with RETURNING) but leaves it
    # off without; psycopg2's dialect turns it on.
    engine.sync_engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


class Database:
    """An engine and its session factory, bound to one event loop."""

    def __init__(self, url: str, *, pool_size: int = 10, pre_ping: bool = True) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size, pre_ping=pre_ping)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        #: Sessions for work that only reads (GET requests, dry-runs): on SQLite an engine that
        #: never takes the write lock; on PostgreSQL the same engine (readers never wait there).
        self.read_engine = (
            create_engine(url, pool_size=pool_size, pre_ping=pre_ping, read_only=True)
            if self.engine.dialect.name == "sqlite"
            else self.engine
        )
        self.read_sessionmaker = async_sessionmaker(self.read_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits on success and rolls back on any exception."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def ping(self) -> None:
        """One round trip to the database (the readiness probe); raises if it does not answer."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
