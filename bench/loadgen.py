"""A lean HTTP/1.1 keep-alive load generator on raw asyncio sockets (uvloop when available).

Two modes:

* ``open_loop``: requests are *scheduled* at a fixed rate (request ``i`` is due at
  ``t0 + i / rate``) whatever the server does; a request that finds no idle connection opens one
  (up to ``max_connections``) or waits for one. Latency is measured from the *scheduled* time, so
  server stalls and queueing count in full (no coordinated omission).
* ``closed_loop``: ``connections`` clients each send the next request as soon as the previous
  answer arrived (the fallback when ``wrk`` is not installed).

Requests are complete pre-built byte strings; responses are parsed just enough for the status,
``Content-Length`` and body (no chunked encoding: the service always sends a length).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ACCEPTED = 1
DUPLICATE = 2
OTHER_2XX = 3
FAILED = 4  # non-2xx or connection error


#: The server closes keep-alive connections idle this long (uvicorn's default is 5 s); idle
#: connections older than this are not reused, so a request never races the server's close.
KEEPALIVE_REUSE = 4.0


class ClosedBeforeAnswer(ConnectionError):
    """The server closed the connection before a byte of the answer: it did not take the request
    (a keep-alive close racing our write), so sending it again on a new connection is safe."""


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self.last_used = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        pos = head.find(b"\r\ncontent-length:")
        length = 0
        if pos >= 0:
            stop = head.find(b"\r\n", pos + 2)
            length = int(head[pos + 17 : stop if stop >= 0 else None])
        total = end + 4 + length
        if len(self.buf) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buf[end + 4 : total])
        del self.buf[:total]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            kind = ConnectionError if self.buf else ClosedBeforeAnswer
            self.waiter.set_exception(kind(f"connection lost: {exc!r}"))

    async def send(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.transport.write(data)
        try:
            return await self.waiter
        finally:
            self.last_used = loop.time()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _classify(status: int, body: bytes) -> int:
    if 200 <= status < 300:
        if b"accepted" in body:
            return ACCEPTED
        if b"duplicate" in body:
            return DUPLICATE
        return OTHER_2XX
    return FAILED


@dataclass
class Result:
    mode: str
    duration: float  # seconds from first scheduled send to last answer (or the deadline)
    latencies: list[float] = field(default_factory=list)  # seconds, one per answered request
    outcomes: dict[int, int] = field(default_factory=dict)  # request index -> ACCEPTED/...
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    late: int = 0  # open loop: requests still unanswered at the drain deadline
    client_cpu: float = 0.0  # CPU seconds the generator itself used
    max_open_connections: int = 0
    target_rate: float | None = None
    sent: int = 0  # requests written (closed loop: includes those cut off at the deadline)
    resent: int = 0  # sent again after a keep-alive close raced the first write

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies)
        counts = Counter(self.outcomes.values())
        n = len(lat)
        return {
            "mode": self.mode,
            "target_rate": self.target_rate,
            "duration_s": round(self.duration, 3),
            "requests": n,
            "accepted": counts[ACCEPTED],
            "duplicate": counts[DUPLICATE],
            "non_2xx": sum(v for k, v in self.statuses.items() if not 200 <= k < 300),
            "errors": self.errors,
            "late": self.late,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency_ms": {
                "p50": _pct(lat, 50) * 1e3,
                "p90": _pct(lat, 90) * 1e3,
                "p99": _pct(lat, 99) * 1e3,
                "p999": _pct(lat, 99.9) * 1e3,
                "max": (lat[-1] * 1e3) if lat else 0.0,
            },
            "resent_after_keepalive_close": self.resent,
            "client_cpu_s": round(self.client_cpu, 3),
            "max_open_connections": self.max_open_connections,
        }


def _pct(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


async def _connect(host: str, port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(_Conn, host, port)
    proto.transport = transport  # uvloop may call connection_made after returning
    return proto


async def open_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float,
    duration: float,
    max_connections: int = 512,
    drain_timeout: float = 30.0,
) -> Result:
    """Send ``rate * duration`` requests (at most ``len(requests)``) on schedule; await all."""
    loop = asyncio.get_running_loop()
    total = min(len(requests), int(rate * duration))
    result = Result(mode="open", duration=0.0, target_rate=rate)
    idle: list[_Conn] = []
    waiting: deque[asyncio.Future[_Conn]] = deque()
    n_open = 0
    conns: list[_Conn] = []

    async def acquire() -> _Conn:
        nonlocal n_open
        while idle:
            c = idle.pop()
            if not c.closed and loop.time() - c.last_used < KEEPALIVE_REUSE:
                return c
            c.close()
            n_open -= 1
        if n_open < max_connections:
            n_open += 1
            result.max_open_connections = max(result.max_open_connections, n_open)
            try:
                c = await _connect(host, port)
            except OSError:
                n_open -= 1
                raise
            conns.append(c)
            return c
        fut: asyncio.Future[_Conn] = loop.create_future()
        waiting.append(fut)
        return await fut

    def release(c: _Conn) -> None:
        nonlocal n_open
        if c.closed:
            n_open -= 1
            if waiting:  # a slot is free again: open a connection for the oldest waiter
                asyncio.get_running_loop().create_task(replace())
            return
        hand_over(c)

    def hand_over(c: _Conn) -> None:
        while waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(c)
                return
        idle.append(c)

    async def replace() -> None:
        nonlocal n_open
        n_open += 1
        try:
            c = await _connect(host, port)
        except OSError:
            n_open -= 1
            return
        conns.append(c)
        hand_over(c)

    async def one(i: int, due: float) -> None:
        for attempt in (0, 1):
            try:
                c = await acquire()
            except OSError:
                result.errors += 1
                result.outcomes[i] = FAILED
                return
            try:
                status, body = await c.send(requests[i])
            except ClosedBeforeAnswer:
                release(c)
                if attempt == 0:
                    result.resent += 1
                    continue
                result.errors += 1
                result.outcomes[i] = FAILED
                return
            except ConnectionError:
                release(c)
                result.errors += 1
                result.outcomes[i] = FAILED
                return
            break
        result.latencies.append(loop.time() - due)
        result.statuses[status] += 1
        result.outcomes[i] = _classify(status, body)
        release(c)

    cpu0 = time.process_time()
    tasks: list[asyncio.Task[None]] = []
    t0 = loop.time() + 0.05
    i = 0
    while i < total:
        due_now = min(total, int((loop.time() - t0) * rate) + 1)
        while i < due_now:
            tasks.append(asyncio.create_task(one(i, t0 + i / rate)))
            i += 1
        await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
    _, pending = await asyncio.wait(tasks, timeout=drain_timeout) if tasks else (set(), set())
    result.late = len(pending)
    result.sent = total
    for t in pending:
        t.cancel()
    result.duration = loop.time() - t0
    result.client_cpu = time.process_time() - cpu0
    for c in conns:
        c.close()
    return result


async def closed_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    connections: int,
    duration: float,
) -> Result:
    """``connections`` keep-alive clients, each back to back, for ``duration`` seconds."""
    loop = asyncio.get_running_loop()
    result = Result(mode="closed", duration=duration)
    counter = 0
    n = len(requests)
    cpu0 = time.process_time()
    deadline = loop.time() + duration

    async def client() -> None:
        nonlocal counter
        c = await _connect(host, port)
        try:
            while loop.time() < deadline:
                i = counter
                counter += 1
                start = loop.time()
                try:
                    status, body = await c.send(requests[i % n])
                except ConnectionError:
                    result.errors += 1
                    result.outcomes[i] = FAILED
                    c = await _connect(host, port)
                    continue
                if loop.time() > deadline:
                    break  # like wrk: answers after the deadline are not counted
                result.latencies.append(loop.time() - start)
                result.statuses[status] += 1
                result.outcomes[i] = _classify(status, body)
        finally:
            c.close()

    start = loop.time()
    await asyncio.gather(*(client() for _ in range(connections)))
    result.duration = min(duration, loop.time() - start)
    result.sent = counter
    result.client_cpu = time.process_time() - cpu0
    result.max_open_connections = connections
    return result


# ------------------------------------------------------------------ the C open loop


def c_generator() -> Path | None:
    """bench/openloop.c compiled (once per source version, with the system's gcc), or None
    when there is no compiler."""
    source = Path(__file__).with_name("openloop.c")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    binary = Path(tempfile.gettempdir()) / f"dropship-openloop-{digest}"
    if not binary.exists():
        # Several processes may build it at once (pytest-xdist collects in each worker): each
        # builds its own file, and the last rename wins with the same binary.
        partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
        subprocess.run([cc, "-O2", "-o", str(partial), str(source)], check=True)
        partial.replace(binary)
    return binary


def open_loop_c(
    binary: Path,
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float,
    duration: float,
    max_connections: int = 512,
    drain_timeout: float = 30.0,
) -> Result:
    """:func:`open_loop`'s schedule and accounting, sent by bench/openloop.c: a single C thread
    on epoll, so the generator takes a few percent of a core instead of up to a whole one."""
    total = min(len(requests), int(rate * duration))
    result = Result(mode="open", duration=0.0, target_rate=rate)
    with tempfile.TemporaryDirectory(prefix="openloop-") as tmp:
        reqfile, outfile = Path(tmp) / "requests.bin", Path(tmp) / "answers.txt"
        with reqfile.open("wb") as f:
            for raw in requests[:total]:
                f.write(struct.pack("<I", len(raw)))
                f.write(raw)
        args = [str(binary), host, str(port), repr(rate), repr(duration)]
        args += [str(max_connections), repr(drain_timeout), str(reqfile), str(outfile)]
        subprocess.run(args, check=True)
        lines = outfile.read_text().splitlines()
    summary = lines.pop().split()
    assert summary[0] == "#summary", summary
    for line in lines:
        i, status, outcome, latency_us = (int(x) for x in line.split())
        result.outcomes[i] = outcome
        if status < 0:
            continue
        result.statuses[status] += 1
        result.latencies.append(latency_us / 1e6)
    result.duration = float(summary[1])
    result.client_cpu = float(summary[2])
    result.max_open_connections = int(summary[3])
    result.resent = int(summary[4])
    result.errors = int(summary[5])
    result.late = int(summary[6])
    result.sent = int(summary[7])
    return result
