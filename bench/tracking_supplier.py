"""A local supplier tracking API for bench/tracking.py: a raw asyncio HTTP/1.1 keep-alive server.

    python -m bench.tracking_supplier --port N [--latency 0.05] [--rate 20] [--batch 100]

``POST /tracking`` with ``{"numbers": [...]}`` (at most ``--batch``; more is ``400``) answers
after ``--latency`` seconds (awaited, so requests overlap) with ``{"trackings": [...]}``: every
number ``TN<i>`` has its ``in_transit`` event of ``T0``; every tenth (``i % 10 == 0``) also has
an ``out_for_delivery`` event, the change a poll cycle has to pick up. The rate limit is
enforced: more than ``--rate`` requests in one second of the clock get ``429`` with
``Retry-After: 1``, at once.

``GET /stats`` answers at once with the counters: requests, numbers asked, distinct numbers,
429s, the most requests answered in one clock second, first and last request (``time.time()``).
Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any

T0 = "2026-11-30T08:00:00+00:00"
MOVED = "2026-12-01T07:30:00+00:00"


class TrackingSupplier:
    def __init__(self, latency: float, rate: int, batch: int) -> None:
        self.latency, self.rate, self.batch = latency, rate, batch
        self.per_second: Counter[int] = Counter()
        self.answered_per_second: Counter[int] = Counter()
        self.requests = self.numbers = self.limited = 0
        self.distinct: set[str] = set()
        self.first = self.last = 0.0

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "numbers": self.numbers,
            "distinct_numbers": len(self.distinct),
            "limited_429": self.limited,
            "max_answered_per_second": max(self.answered_per_second.values(), default=0),
            "first": self.first,
            "last": self.last,
            "latency_s": self.latency,
            "rate": self.rate,
            "batch": self.batch,
        }

    async def track(self, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        now = time.time()
        second = int(now)
        self.per_second[second] += 1
        if self.per_second[second] > self.rate:
            self.limited += 1
            return 429, {"error": "rate limit"}, {"Retry-After": "1"}
        self.answered_per_second[second] += 1
        self.requests += 1
        self.first = self.first or now
        self.last = now
        try:
            numbers = json.loads(body)["numbers"]
        except (ValueError, KeyError, TypeError):
            return 400, {"error": 'body must be {"numbers": [...]}'}, {}
        if not isinstance(numbers, list) or len(numbers) > self.batch:
            return 400, {"error": f"at most {self.batch} numbers"}, {}
        await asyncio.sleep(self.latency)
        self.numbers += len(numbers)
        self.distinct.update(numbers)
        out = []
        for n in numbers:
            events = [{"status": "in_transit", "occurred_at": T0, "location": "Memphis, US"}]
            if n.startswith("TN") and n[2:].isdigit() and int(n[2:]) % 10 == 0:
                events.append({"status": "out_for_delivery", "occurred_at": MOVED})
            out.append({"tracking_number": n, "status": events[-1]["status"], "events": events})
        return 200, {"trackings": out}, {}


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}


async def handle(
    supplier: TrackingSupplier, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
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
            extra: dict[str, str] = {}
            if method == "POST" and path == "/tracking":
                status, answer, extra = await supplier.track(body)
            elif method == "GET" and path == "/stats":
                status, answer = 200, supplier.stats()
            else:
                status, answer = 404, {"error": f"no route {method} {path}"}
            payload = json.dumps(answer).encode()
            more = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
            head_out = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{more}\r\n"
            )
            writer.write(head_out.encode() + payload)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return
    finally:
        writer.close()


async def serve(port: int, latency: float, rate: int, batch: int) -> None:
    supplier = TrackingSupplier(latency, rate, batch)
    server = await asyncio.start_server(
        lambda r, w: handle(supplier, r, w), "127.0.0.1", port, backlog=1024
    )
    print(
        f"tracking supplier listening on 127.0.0.1:{port}, {latency * 1000:g} ms, "
        f"{rate} requests/s, {batch} numbers per request",
        flush=True,
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--rate", type=int, default=20)
    p.add_argument("--batch", type=int, default=100)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.port, args.latency, args.rate, args.batch))
    except ImportError:
        asyncio.run(serve(args.port, args.latency, args.rate, args.batch))


if __name__ == "__main__":
    main()
