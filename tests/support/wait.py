from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Long enough for a busy CI box (a pipeline of several jobs, each possibly retried once); a
#: passing test never waits for it, only a failing one does.
DEFAULT_TIMEOUT = 30.0


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (a polling deadline, not a cancel scope)
    interval: float = 0.05,
) -> T:
    """Poll ``probe`` until it returns a truthy value (workers are asynchronous); fail on timeout
    with the last value seen, after printing where every thread and task is (to stderr, which
    pytest shows with the failure), so a stall can be told from a slow box."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    dump_stacks(f"eventually: condition not met within {timeout}s")
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


def dump_stacks(title: str) -> None:
    """Every thread's stack and every pending task of every running event loop (the workers'
    loop runs on its own thread), to stderr."""
    out = [f"==== {title}: threads and tasks ===="]
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.append(f"--- thread {names.get(ident, '?')} ({ident})")
        out.extend(line.rstrip() for line in traceback.format_stack(frame, limit=12))
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
    for loop in loops:
        if loop.is_closed() or not loop.is_running():
            continue
        try:
            tasks = list(asyncio.all_tasks(loop))
        except RuntimeError:  # the set changed under us: another thread runs that loop
            continue
        for task in tasks:
            out.append(f"--- task {task.get_name()} on loop {id(loop):x}")
            for frame in task.get_stack(limit=8):
                out.extend(line.rstrip() for line in traceback.format_stack(frame, limit=1))
    print("\n".join(out), file=sys.stderr)
