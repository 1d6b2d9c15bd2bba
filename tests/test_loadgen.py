"""The benchmarks' C open-loop generator (bench/openloop.c through bench/loadgen.py) counts
exactly: every scheduled request answered once, classified by its body, a keep-alive connection
the server closes replaced (and a request it dropped unanswered sent once more), and the
schedule kept: the answers come in about ``count / rate`` seconds, not as fast as possible."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import loadgen

pytestmark = pytest.mark.skipif(loadgen.c_generator() is None, reason="no C compiler")


class Server:
    """HTTP/1.1 keep-alive: ``accepted`` or ``duplicate`` (by the body); every ``drop``-th
    request is not answered (its connection is closed before a byte), which a client must
    send again once."""

    def __init__(self, drop: int) -> None:
        self.drop = drop
        self.seen = 0
        self.bodies: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                self.seen += 1
                if self.seen % self.drop == 0:
                    writer.close()
                    return
                self.bodies.append(body)
                answer = b'{"status":"duplicate"}' if b"dup" in body else b'{"status":"accepted"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self.handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        server.close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(drop=37)
    thread = threading.Thread(target=s.run, daemon=True)
    thread.start()
    s.ready.wait(5)
    yield s
    s.loop.call_soon_threadsafe(s.loop.stop)
    thread.join(5)


def request(i: int) -> bytes:
    body = b'{"n":%d,"kind":"%s"}' % (i, b"dup" if i % 10 == 9 else b"new")
    return (
        b"POST /webhooks/shopify HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )


def test_every_scheduled_request_is_answered_once_and_classified(server: Server) -> None:
    binary = loadgen.c_generator()
    assert binary is not None
    requests = [request(i) for i in range(400)]
    res = loadgen.open_loop_c(
        binary, "127.0.0.1", server.port, requests, rate=200, duration=2, max_connections=16
    )
    s = res.summary()
    assert (s["requests"], s["accepted"], s["duplicate"]) == (400, 360, 40)
    assert (s["non_2xx"], s["errors"], s["late"], res.sent) == (0, 0, 0, 400)
    # Every 37th request the server saw was dropped unanswered and sent once more.
    assert s["resent_after_keepalive_close"] == server.seen - 400 > 0
    assert sorted(server.bodies) == sorted(r.split(b"\r\n\r\n")[1] for r in requests)
    assert sorted(res.outcomes) == list(range(400))
    # The schedule: 400 requests at 200/s take about 2 s (an unpaced client would take ms).
    assert 1.9 <= res.duration < 10
    assert 1 <= res.max_open_connections <= 16


def test_a_closed_port_is_errors_not_a_hang() -> None:
    binary = loadgen.c_generator()
    assert binary is not None
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    res = loadgen.open_loop_c(
        binary, "127.0.0.1", port, [request(i) for i in range(20)], rate=100, duration=0.2
    )
    assert (res.errors, res.summary()["requests"], len(res.outcomes)) == (20, 0, 20)
    assert set(res.outcomes.values()) == {loadgen.FAILED}


def test_processes_building_it_at_once_all_get_it(tmp_path: Path) -> None:
    """pytest-xdist collects this module in every worker at once: on a fresh machine they all
    build the generator together, and none may fail (one shared partial file made one worker's
    rename fail, and the whole run stopped at collection)."""
    code = "from bench import loadgen; print(loadgen.c_generator())"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(6)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err.decode()[-300:] for _, err in outs]
    built = {out.decode().strip() for out, _ in outs}
    assert len(built) == 1
    binary = Path(built.pop())
    assert binary.parent == tmp_path
    assert os.access(binary, os.X_OK)
    assert [p.name for p in tmp_path.iterdir()] == [binary.name]  # no partial left behind
