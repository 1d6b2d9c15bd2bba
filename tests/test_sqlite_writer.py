"""The per-file writer lock keeping this process's SQLite writers out of the busy handler."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from app.db import Database
from app.sqlite_writer import WriterLock, WriterLockTimeout, lock_for


class LoopThread:
    """An event loop running in its own thread, like the Dramatiq workers' loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def other_loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


class TestWriterLock:
    async def test_waiters_on_other_loops_are_served_in_arrival_order(
        self, other_loop: LoopThread
    ) -> None:
        lock = WriterLock()
        order: list[str] = []
        await lock.acquire(5)

        async def take(name: str) -> None:
            await lock.acquire(5)
            order.append(name)
            lock.release()

        first = other_loop.run(take("other-loop"))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(take("this-loop"))
        await asyncio.sleep(0.05)
        assert order == []  # both wait while the lock is held
        lock.release()
        await asyncio.wrap_future(first)
        await second
        assert order == ["other-loop", "this-loop"]
        assert not lock.locked

    async def test_a_cancelled_waiter_passes_the_lock_on(self) -> None:
        lock = WriterLock()
        await lock.acquire(5)
        quitter = asyncio.create_task(lock.acquire(5))
        stayer = asyncio.create_task(lock.acquire(5))
        await asyncio.sleep(0.02)
        quitter.cancel()
        lock.release()
        await asyncio.wait_for(stayer, 2)
        assert quitter.cancelled()
        assert lock.locked
        lock.release()
        assert not lock.locked

    async def test_waiting_too_long_is_a_transient_timeout_and_leaves_the_lock_usable(
        self,
    ) -> None:
        lock = WriterLock()
        await lock.acquire(5)
        with pytest.raises(WriterLockTimeout, match="database is locked") as caught:
            await lock.acquire(0.05)
        assert isinstance(caught.value, TimeoutError)  # retried by the workers
        lock.release()
        await asyncio.wait_for(lock.acquire(1), 2)
        lock.release()
        assert not lock.locked

    # The stopped loop's abandoned coroutine is reported when its loop is closed: expected.
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    async def test_a_grant_lost_with_a_stopped_loop_is_reclaimed(self) -> None:
        """The lock handed to a waiter whose loop stopped before running the grant (a worker
        loop shutting down) would be held forever; the next waiter to give up passes it on."""
        lock = WriterLock()
        await lock.acquire(5)
        doomed = LoopThread()
        doomed.run(lock.acquire(60))
        await asyncio.sleep(0.05)
        doomed.loop.call_soon_threadsafe(doomed.loop.stop)
        doomed.thread.join(5)
        lock.release()  # the grant is queued on a loop that will never run it
        with pytest.raises(WriterLockTimeout):
            await lock.acquire(0.1)
        await asyncio.wait_for(lock.acquire(1), 2)  # usable again
        lock.release()
        assert not lock.locked
        doomed.loop.close()
        gc.collect()  # the abandoned waiter goes now, under this test's warning filter


def _fail_fast_on_sqlite_locks(db: Database) -> None:
    """Make SQLite answer "database is locked" at once instead of waiting in its busy handler."""

    @event.listens_for(db.engine.sync_engine, "connect")
    def _no_busy_wait(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()


class TestTwoEnginesOnOneFile:
    async def test_writers_in_one_process_queue_in_python_not_in_sqlite(
        self, tmp_path: Path, other_loop: LoopThread
    ) -> None:
        """Two engines on one file, on two event loops (the API's and the workers'): the second
        writer waits for the first without ever entering SQLite's busy handler. With SQLite's
        busy timeout at 0, a writer that reached SQLite while the other held the lock would
        fail with "database is locked"."""
        url = f"sqlite+aiosqlite:///{tmp_path / 'one.db'}"
        a = Database(url)
        _fail_fast_on_sqlite_locks(a)
        async with a.transaction() as session:
            await session.execute(text("CREATE TABLE t (n INTEGER)"))

        async def other_writer() -> float:
            b = Database(url)
            _fail_fast_on_sqlite_locks(b)
            try:
                started = time.monotonic()
                async with b.transaction() as session:
                    await session.execute(text("INSERT INTO t VALUES (2)"))
                return time.monotonic() - started
            finally:
                await b.dispose()

        try:
            async with a.transaction() as session:
                await session.execute(text("INSERT INTO t VALUES (1)"))
                waiting = other_loop.run(other_writer())
                await asyncio.sleep(0.3)
                assert not waiting.done()  # queued behind our transaction
            waited = await asyncio.wrap_future(waiting)
            assert waited >= 0.25
            async with a.sessionmaker() as session:
                rows = (await session.execute(text("SELECT n FROM t ORDER BY n"))).scalars()
                assert list(rows) == [1, 2]
            assert not lock_for(tmp_path / "one.db").locked
        finally:
            await a.dispose()

    async def test_waiting_too_long_fails_the_transaction_and_the_connection_recovers(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from sqlalchemy.exc import OperationalError

        monkeypatch.setattr("app.db.SQLITE_LOCK_TIMEOUT", 0.2)
        url = f"sqlite+aiosqlite:///{tmp_path / 'three.db'}"
        a, b = Database(url), Database(url)
        try:
            async with a.transaction() as session:
                await session.execute(text("CREATE TABLE t (n INTEGER)"))
            async with a.transaction() as session:
                await session.execute(text("INSERT INTO t VALUES (1)"))
                with pytest.raises(OperationalError, match="database is locked"):
                    async with b.engine.connect() as conn:
                        await conn.execute(text("INSERT INTO t VALUES (2)"))
            # The same engine (and pooled connection) works normally afterwards, inside a
            # real transaction: a rollback undoes its insert.
            async with b.engine.connect() as conn:
                await conn.execute(text("INSERT INTO t VALUES (3)"))
                await conn.rollback()
            async with b.sessionmaker() as session:
                rows = (await session.execute(text("SELECT n FROM t"))).scalars()
                assert list(rows) == [1]
            assert not lock_for(tmp_path / "three.db").locked
        finally:
            await a.dispose()
            await b.dispose()

    async def test_a_failed_transaction_releases_the_lock(self, tmp_path: Path) -> None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'two.db'}"
        db = Database(url)
        try:
            with pytest.raises(Exception, match="no such table"):
                async with db.transaction() as session:
                    await session.execute(text("INSERT INTO missing VALUES (1)"))
            assert not lock_for(tmp_path / "two.db").locked
            async with db.transaction() as session:  # and the next one gets it
                await session.execute(text("CREATE TABLE t (n INTEGER)"))
            assert not lock_for(tmp_path / "two.db").locked
        finally:
            await db.dispose()
