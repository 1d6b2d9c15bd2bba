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
import sqlite3
import threading
from collections import deque
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import await_only


class WriterLockTimeout(TimeoutError):
    """The writer lock was not granted in time (a transaction left open, or a runaway one)."""


Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class WriterLock:
    """A FIFO lock usable from any thread and any event loop.

    ``acquire`` suspends the calling coroutine, never its thread; ``release`` may run on any
    thread and hands the lock to the oldest waiter on that waiter's own loop, without waiting.

    ``release`` can be reached from a garbage collection (SQLAlchemy terminating an abandoned
    connection), which may run at any allocation on a thread that is inside ``acquire``. So the
    sections under ``_mutex`` allocate nothing the collector tracks, and the mutex is reentrant:
    a collection there can never deadlock on it.
    """

    def __init__(self) -> None:
        self._mutex = threading.RLock()
        self._held = False
        #: ``id()`` of the DBAPI connection whose transaction holds the lock (set by its user).
        self.owner: int | None = None
        self._waiters: deque[Waiter] = deque()
        #: The waiter the lock is being handed to (its grant is queued on its loop).
        self._handoff: Waiter | None = None

    @property
    def locked(self) -> bool:
        return self._held

    async def acquire(self, timeout: float) -> None:  # noqa: ASYNC109 (the lock's own deadline)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiter: Waiter = (loop, fut)  # allocated before taking the mutex (see the class doc)
        with self._mutex:
            if not self._held:
                self._held = True
                return
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except BaseException as exc:
            if loop.is_closed():  # discarded with its loop: release() skips this waiter
                raise
            # Timed out or cancelled. The grant and this handler both run on this loop, so
            # the lock is either ours (pass it on) or will be passed on when granted.
            if fut.done() and not fut.cancelled():
                self.release()
            else:
                fut.cancel()
                self._reclaim_lost_handoff()
            if isinstance(exc, TimeoutError):
                raise WriterLockTimeout(
                    f"database is locked: waited {timeout:g}s for the write lock"
                ) from None
            raise

    def release(self) -> None:
        while True:
            with self._mutex:
                self._handoff = None
                if not self._waiters:
                    self._held = False
                    return
                waiter = self._waiters.popleft()
                self._handoff = waiter
            loop, fut = waiter
            try:
                loop.call_soon_threadsafe(self._grant, fut)
                return
            except RuntimeError:  # that waiter's loop is closed: next one
                continue

    def _grant(self, fut: asyncio.Future[None]) -> None:
        with self._mutex:
            if self._handoff is not None and self._handoff[1] is fut:
                self._handoff = None
        if fut.done():  # the waiter gave up meanwhile: pass the lock on
            self.release()
        else:
            fut.set_result(None)

    def _reclaim_lost_handoff(self) -> None:
        """A grant queued on a loop that stopped before running it is lost, and with it the
        lock. A waiter that gives up notices and passes the lock on."""
        with self._mutex:
            handoff = self._handoff
            lost = handoff is not None and (handoff[0].is_closed() or not handoff[0].is_running())
            if lost:
                self._handoff = None
        if lost:
            self.release()


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


def _raw(conn: Any) -> Any:
    """The DBAPI connection: SQLAlchemy passes its pool proxy to begin, commit and reset."""
    return conn.dbapi_connection if isinstance(conn, PoolProxiedConnection) else conn


def serialize_writers(engine: AsyncEngine, path: Path, *, timeout: float) -> None:
    """Make every transaction of ``engine`` hold ``path``'s writer lock from BEGIN to its end."""
    lock = lock_for(path)
    dialect = engine.sync_engine.dialect

    def do_begin(dbapi_conn: Any) -> None:
        # Inside SQLAlchemy's own begin (not a "begin" event): a failure here leaves the
        # connection as if BEGIN had failed, and is wrapped like any database error.
        try:
            await_only(lock.acquire(timeout))
        except WriterLockTimeout as exc:
            raise sqlite3.OperationalError(str(exc)) from exc
        lock.owner = id(_raw(dbapi_conn))
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            cursor.close()
        except BaseException:
            _release(dbapi_conn)
            raise

    dialect.do_begin = do_begin  # type: ignore[method-assign,assignment]

    def _release(conn: Any) -> None:
        if lock.owner == id(_raw(conn)):
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
