"""The simulated supplier (``SupplierSim``) served over real HTTP, for tests where the caller is
another process (respx only intercepts this one)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.support import services as svc
from tests.support.supplier_sim import SupplierSim


class SupplierServer:
    """``sim`` at ``self.base_url``. ``before_reply`` runs after the supplier has recorded an
    order and before it answers: a test can hold the answer there (and kill the caller)."""

    def __init__(self, sim: SupplierSim) -> None:
        self.sim = sim
        self.before_reply: Callable[[], None] | None = None
        self.port = svc.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/api"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = httpx.Request(
                    method,
                    f"http://127.0.0.1:{server.port}{self.path}",
                    headers=dict(self.headers.items()),
                    content=self.rfile.read(length) if length else b"",
                )
                if method == "POST" and self.path.rstrip("/") == "/api/orders":
                    response = server.sim.place(request)
                    if server.before_reply is not None:
                        server.before_reply()
                else:
                    response = server.sim.get(request)
                try:
                    self.send_response(response.status_code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(response.content)))
                    self.end_headers()
                    self.wfile.write(response.content)
                except OSError:  # the caller is gone (killed while we held the answer)
                    pass

            def do_POST(self) -> None:
                self._serve("POST")

            def do_GET(self) -> None:
                self._serve("GET")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True

    @contextmanager
    def running(self) -> Iterator[SupplierServer]:
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()
