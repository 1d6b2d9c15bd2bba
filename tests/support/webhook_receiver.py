"""A merchant's webhook receiver over real HTTP on 127.0.0.1, in a thread: it records every
request and answers what the test set (a status per path, a failure per event type), else 200."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    #: path -> the status every request there gets (else 200, but for ``fail_once``).
    always: dict[str, int] = field(default_factory=dict)
    #: Event types whose first request is answered 500 (whatever order requests come in).
    fail_once: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def of_type(self, path: str, type_: str) -> list[Received]:
        return [r for r in self.at(path) if json.loads(r.body)["type"] == type_]

    def _answer(self, path: str, body: bytes) -> int:
        with self.lock:
            if path in self.always:
                return self.always[path]
            type_ = json.loads(body).get("type")
            if type_ in self.fail_once:
                self.fail_once.discard(type_)
                return 500
            return 200


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status = receiver._answer(self.path, body)
            with receiver.lock:
                receiver.requests.append(
                    Received(self.path, dict(self.headers.items()), body, status)
                )
            reply = b'{"ok":true}' if status < 300 else b"receiver is down"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
