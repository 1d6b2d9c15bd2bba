"""On PostgreSQL an INSERT of many rows (an ORM flush of new objects, a Core list of dicts) is
one multi-row statement, not asyncpg's executemany running it once per row: one statement for
the server to parse, plan and log instead of one per row."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, insert, select

from app.db import Database, utcnow, uuid7
from app.jobs.models import OutboxMessage


async def test_many_rows_are_one_statement(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite's executemany is in-process: there is no round trip to save")
    calls: list[tuple[str, bool]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        calls.append((statement, many))

    now = utcnow()
    rows = [
        {"id": uuid7(), "actor": "noop", "args": [n], "available_at": now, "created_at": now}
        for n in range(5)
    ]
    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with db.transaction() as session:
            await session.execute(insert(OutboxMessage), rows)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)

    # One call: SQLAlchemy's "insertmanyvalues" batch (reported as an executemany of one
    # parameter set), five rows of values in its one statement.
    [(statement, _)] = calls
    assert statement.count("::JSONB") == 5, statement
    async with db.transaction() as session:
        stored = (await session.scalars(select(OutboxMessage.args))).all()
    assert sorted(a[0] for a in stored) == [0, 1, 2, 3, 4]
