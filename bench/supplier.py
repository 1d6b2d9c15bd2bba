"""A local supplier REST API for bench/route.py: a raw asyncio HTTP/1.1 keep-alive server.

    python -m bench.supplier --port N [--latency 0.05] [--auth "Bearer x"]

``POST /orders`` is what connectors/rest_json.py calls to place a purchase order. Every answer
takes ``--latency`` seconds (a real supplier API's response time; awaited, so requests overlap).
Orders are kept by ``Idempotency-Key``: the first request for a key makes an order and answers
``201 {"id": "SUP-<n>", "status": "accepted"}``; a repeat answers ``200`` with the same order.
A request without the key, or with the wrong ``Authorization``, gets ``400``/``401``.

``GET /stats`` answers at once with the counters: POSTs received, distinct keys, repeats, refusals,
the most requests in flight at one time, and per key the wall-clock time (``time.time()``) the
first request arrived. ``POST /reset`` clears everything. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any


class Supplier:
    def __init__(self, latency: float, auth: str | None) -> None:
        self.latency = latency
        self.auth = auth
        self.reset()

    def reset(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.first_seen: dict[str, float] = {}
        self.posts = 0
        self.repeats = 0
        self.refused = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def stats(self) -> dict[str, Any]:
        return {
            "posts": self.posts,
            "distinct_keys": len(self.orders),
            "repeats": self.repeats,
            "refused": self.refused,
            "max_in_flight": self.max_in_flight,
            "latency_s": self.latency,
            "first_seen": self.first_seen,
        }

    async def place(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        self.posts += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            arrived = time.time()
            await asyncio.sleep(self.latency)
            if self.auth is not None and headers.get("authorization") != self.auth:
                self.refused += 1
                return 401, {"error": "bad credentials"}
            key = headers.get("idempotency-key")
            if not key:
                self.refused += 1
                return 400, {"error": "Idempotency-Key required"}
            if key in self.orders:
                self.repeats += 1
                return 200, self.orders[key]
            try:
                request = json.loads(body)
            except ValueError:
                self.refused += 1
                return 400, {"error": "body is not JSON"}
            order = {
                "id": f"SUP-{len(self.orders) + 1}",
                "status": "accepted",
                "reference": request.get("reference"),
            }
            self.orders[key] = order
            self.first_seen[key] = arrived
            return 201, order
        finally:
            self.in_flight -= 1


_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


async def handle(
    supplier: Supplier, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length") or 0))
            path = target.split("?", 1)[0]
            if method == "POST" and path == "/orders":
                status, answer = await supplier.place(headers, body)
            elif method == "GET" and path == "/stats":
                status, answer = 200, supplier.stats()
            elif method == "POST" and path == "/reset":
                supplier.reset()
                status, answer = 200, {"ok": True}
            else:
                status, answer = 404, {"error": f"no route {method} {path}"}
            payload = json.dumps(answer).encode()
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return
    finally:
        writer.close()


async def serve(port: int, latency: float, auth: str | None) -> None:
    supplier = Supplier(latency, auth)
    server = await asyncio.start_server(
        lambda r, w: handle(supplier, r, w), "127.0.0.1", port, backlog=1024
    )
    print(f"supplier listening on 127.0.0.1:{port}, {latency * 1000:g} ms per order", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency", type=float, default=0.05, help="seconds per POST /orders")
    p.add_argument("--auth", default=None, help="required Authorization header value")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.port, args.latency, args.auth))
    except ImportError:
        asyncio.run(serve(args.port, args.latency, args.auth))


if __name__ == "__main__":
    main()
