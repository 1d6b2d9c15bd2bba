"""One writer at a time per SQLite file, queued in Python rather than inside SQLite.

SQLite allows one write transaction per database. Left to itself, a second connection waits in
SQLite's busy handler, *inside* ``sqlite3_step`` and holding that connection's mutex. That is
fine across processes, but within one process it can deadlock: the thread whose transaction holds
the write lock may, at any allocation, run the cyclic garbage collector, which finalizes a
cursor of the waiting connection, which needs the waiting connection's mutex. Both then wait for
each other until the busy timeout fails one of them with "database is locked" (seen in the
embedded server: a 30 s stall of every worker, then failed tasks).

So every engine on the same file shares one :class:`WriterLock`, taken (without blocking any
event loop) before ``BEGIN IMMEDIATE`` and released after ``COMMIT``/``ROLLBACK``. Within a
process no connection ever busy-waits inside SQLite; waiters are served first come, first served,
which is also fairer and faster than SQLite's sleep-and-retry busy handler.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import await_only


class WriterLockTimeout(TimeoutError):
    """The writer lock was not granted in time (a transaction left open, or a runaway one)."""


class WriterLock:
    """A FIFO lock usable from any thread and any event loop.

    ``acquire`` suspends the calling coroutine, never its thread; ``release`` may run on any
    thread and hands the lock to the oldest waiter on that waiter's own loop, without waiting.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        #: ``id()`` of the DBAPI connection whose transaction holds the lock (set by its user).
        self.owner: int | None = None
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def locked(self) -> bool:
        return self._held

    async def acquire(self, timeout: float) -> None:  # noqa: ASYNC109 (the lock's own deadline)
        loop = asyncio.get_running_loop()
        with self._mutex:
            if not self._held:
                self._held = True
                return
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            async with asyncio.timeout(timeout):
                await fut
        except BaseException as exc:
            # Timed out or cancelled. The grant and this handler both run on this loop, so
            # the lock is either ours (pass it on) or will be passed on when granted.
            if fut.done() and not fut.cancelled():
                self.release()
            else:
                fut.cancel()
            if isinstance(exc, TimeoutError):
                raise WriterLockTimeout(
                    f"database is locked: waited {timeout:g}s for the write lock"
                ) from None
            raise

    def release(self) -> None:
        while True:
            with self._mutex:
                if not self._waiters:
                    self._held = False
                    return
                loop, fut = self._waiters.popleft()
            try:
                loop.call_soon_threadsafe(self._grant, fut)
                return
            except RuntimeError:  # that waiter's loop is closed: next one
                continue

    def _grant(self, fut: asyncio.Future[None]) -> None:
        if fut.done():  # the waiter gave up meanwhile: pass the lock on
            self.release()
        else:
            fut.set_result(None)


_locks: dict[str, WriterLock] = {}
_locks_guard = threading.Lock()


def lock_for(path: Path) -> WriterLock:
    """The process-wide writer lock of one database file."""
    key = str(path.resolve())
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = WriterLock()
        return lock


def serialize_writers(engine: AsyncEngine, path: Path, *, timeout: float) -> None:
    """Make every transaction of ``engine`` hold ``path``'s writer lock from BEGIN to its end."""
    lock = lock_for(path)
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        dbapi_conn = conn.connection.dbapi_connection
        await_only(lock.acquire(timeout))
        lock.owner = id(dbapi_conn)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(dbapi_conn)
            raise

    def _release(conn: Any) -> None:
        # The pool passes its proxy (a ``_ConnectionFairy``) when it resets a connection.
        dbapi_conn = conn.dbapi_connection if isinstance(conn, PoolProxiedConnection) else conn
        if lock.owner == id(dbapi_conn):
            lock.owner = None
            lock.release()

    def _wrap(name: str) -> None:
        original = getattr(dialect, name)

        def wrapped(dbapi_conn: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(dbapi_conn, *args, **kwargs)
            finally:
                _release(dbapi_conn)

        setattr(dialect, name, wrapped)

    # Every way a transaction ends: commit, rollback (also the pool's reset on checkin), close.
    for name in ("do_commit", "do_rollback", "do_close", "do_terminate"):
        _wrap(name)
