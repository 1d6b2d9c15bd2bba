"""Summarize a py-spy ``--format raw`` (collapsed stacks) profile of the server hot path.

    uv run python -m bench.profile_summary bench/results/profile-<stamp>.txt [--requests N]

Two views: *inclusive* time of the pieces of the webhook path (a stack counts once for every
piece it passes through, so pieces nest: the receiver includes the HMAC check), and *self* time
of the hottest leaf functions. With ``requests`` (answered during the profile) each line also
gets an estimated CPU µs per request (samples / sampling rate / requests).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


def _pkg(path: str, name: str) -> bool:
    return path.startswith(name + "/") or f"/{name}/" in path


def _in(path: str, func: str, file_suffix: str, name: str) -> bool:
    return path.endswith(file_suffix) and (func == name or func.endswith("." + name))


def _is_line(source: str, needle: str) -> bool:
    return needle in source


#: Inclusive view: (label, predicate on (func, file, source line)); printed in this order.
PIECES: list[tuple[str, Any]] = [
    (
        "request_id_middleware and everything inside",
        lambda f, p, s: _in(p, f, "main.py", "middleware"),
    ),
    (
        "ShopifyWebhookController.receive (total)",
        lambda f, p, s: _in(p, f, "webhooks/controllers.py", "receive"),
    ),
    ("  shopifyapp verify_webhook_req (total)", lambda f, p, s: _pkg(p, "shopify_app")),
    ("    shopifyapp redact_http_log", lambda f, p, s: "redact_http_log" in f),
    ("    shopifyapp HMAC (calculate_hmac)", lambda f, p, s: "calculate_hmac" in f),
    ("  msgspec.json.decode (body check)", lambda f, p, s: _is_line(s, "msgspec.json.decode")),
    ("  MerchantDirectory.lookup", lambda f, p, s: _in(p, f, "service.py", "lookup")),
    ("  IngestWriter.submit (queue + future)", lambda f, p, s: _in(p, f, "ingest.py", "submit")),
    ("IngestWriter._run (group-commit writer)", lambda f, p, s: _in(p, f, "ingest.py", "_run")),
    ("  SQLAlchemy under the writer", lambda f, p, s: False),  # filled in below
    ("bench naive handler (total)", lambda f, p, s: _in(p, f, "bench/server.py", "naive")),
    ("bench ping handler", lambda f, p, s: _in(p, f, "bench/server.py", "ping")),
    ("bench lean handler (total)", lambda f, p, s: _in(p, f, "bench/lean.py", "handle")),
    ("  LeanWriter._run (one round trip per batch)", lambda f, p, s: _in(p, f, "lean.py", "_run")),
]

#: Exclusive view: each sample goes to the innermost frame matching one of these (in this
#: order of precedence for a frame); samples matching none are the event loop's own C code.
COMPONENTS: list[tuple[str, Any]] = [
    ("shopifyapp redact_http_log (json.loads+dumps, regex)", lambda f, p, s: "redact" in p),
    (
        "HMAC-SHA256 (shopifyapp or hmac.digest)",
        lambda f, p, s: "calculate_hmac" in f or p == "hmac.py" or "hmac.digest" in s,
    ),
    ("shopifyapp other", lambda f, p, s: _pkg(p, "shopify_app")),
    ("msgspec.json.decode (body is a JSON object)", lambda f, p, s: "msgspec.json" in s),
    ("asyncpg (protocol, codecs)", lambda f, p, s: _pkg(p, "asyncpg")),
    ("SQLAlchemy (session, engine, pool, ORM)", lambda f, p, s: _pkg(p, "sqlalchemy")),
    ("app/webhooks/ingest.py (writer, submit, IncomingWebhook)", lambda f, p, s: "ingest" in p),
    ("app/webhooks/controllers.py (own lines)", lambda f, p, s: p.endswith("controllers.py")),
    ("app merchants lookup", lambda f, p, s: "merchants/" in p),
    ("app/db.py (uuid7, utcnow)", lambda f, p, s: p.endswith("app/db.py")),
    ("structlog (contextvars bind/unbind, logging)", lambda f, p, s: _pkg(p, "structlog")),
    ("request_id_middleware (app/main.py, own lines)", lambda f, p, s: p.endswith("main.py")),
    ("idempotency_middleware (own lines)", lambda f, p, s: "idempotency" in p),
    ("bench/server.py handlers (own lines)", lambda f, p, s: p.endswith("bench/server.py")),
    ("bench/lean.py experiment (own lines)", lambda f, p, s: p.endswith("bench/lean.py")),
    ("Litestar (router, Request, Response, middleware)", lambda f, p, s: _pkg(p, "litestar")),
    ("uvicorn httptools protocol + proxy headers", lambda f, p, s: _pkg(p, "uvicorn")),
    ("uuid (uuid4 request ids)", lambda f, p, s: p == "uuid.py"),
    ("asyncio (queues, futures, tasks) in Python", lambda f, p, s: p.startswith("asyncio/")),
]
EVENT_LOOP = "uvloop C code / GC / other (epoll, sockets, no Python frame)"

_source_cache: dict[str, list[str]] = {}


def _source(path: str, line: int) -> str:
    lines = _source_cache.get(path)
    if lines is None:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            lines = []
        _source_cache[path] = lines
    return lines[line - 1] if 0 < line <= len(lines) else ""


def parse(text: str) -> list[tuple[list[tuple[str, str, int]], int]]:
    stacks = []
    for raw_line in text.splitlines():
        stack_text, _, count = raw_line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        frames = []
        for part in stack_text.split(";"):
            m = _FRAME.match(part)
            if m:
                frames.append((m["func"], m["file"], int(m["line"])))
        stacks.append((frames, int(count)))
    return stacks


def summarize_collapsed(text: str, *, requests: int = 0, rate: int = 250) -> dict[str, Any]:
    stacks = parse(text)
    total = sum(c for _, c in stacks) or 1
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, count in stacks:
        resolved = [(f, p, _source(p, ln)) for f, p, ln in frames]
        hit = {label for label, pred in PIECES for f, p, s in resolved if pred(f, p, s)}
        if any(_in(p, f, "ingest.py", "_run") for f, p, _ in resolved) and any(
            _pkg(p, "sqlalchemy") or _pkg(p, "asyncpg") for _, p, _ in resolved
        ):
            hit.add("  SQLAlchemy under the writer")
        for label in hit:
            inclusive[label] += count
        component = EVENT_LOOP
        for f, p, s in reversed(resolved):
            match = next((label for label, pred in COMPONENTS if pred(f, p, s)), None)
            if match:
                component = match
                break
        exclusive[component] += count
        if frames:
            func, path, line = frames[-1]
            leaf[f"{func} ({path}:{line})"] += count

    def us(samples: int) -> str:
        if not requests:
            return ""
        return f"{samples / rate / requests * 1e6:7.0f} µs/req"

    lines = [f"profile: {total} samples at {rate} Hz, {requests} requests answered", ""]
    lines.append("where the server's CPU goes (each sample to its innermost known component):")
    for label, count in exclusive.most_common():
        lines.append(f"  {label:<58}{count / total:6.1%} {us(count)}")
    lines.append("")
    lines.append("inclusive (pieces nest):")
    for label, _ in PIECES:
        if inclusive[label]:
            lines.append(f"  {label:<58}{inclusive[label] / total:6.1%} {us(inclusive[label])}")
    lines.append("")
    lines.append("self time, top 20 leaf lines:")
    for name, count in leaf.most_common(20):
        lines.append(f"  {count / total:6.1%} {us(count)}  {name}")
    return {
        "samples": total,
        "requests": requests,
        "rate_hz": rate,
        "components": {k: v / total for k, v in exclusive.most_common()},
        "inclusive": {k: inclusive[k] / total for k, _ in PIECES if inclusive[k]},
        "self_top": {k: v / total for k, v in leaf.most_common(40)},
        "text": "\n".join(lines),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("file", type=Path)
    p.add_argument("--requests", type=int, default=0)
    p.add_argument("--rate", type=int, default=250)
    a = p.parse_args()
    print(summarize_collapsed(a.file.read_text(), requests=a.requests, rate=a.rate)["text"])


if __name__ == "__main__":
    main()
