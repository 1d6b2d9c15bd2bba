"""Benchmark of ``POST /webhooks/shopify`` against two baselines measured in the same run.

    uv run python bench/ingest.py [--duration 10] [--connections 64] [--processes 1]
                                  [--processes 1,2] [--profile]

Self-contained: starts a throwaway PostgreSQL with durable commits (fsync, synchronous_commit and
full_page_writes on) and Redis (tests/support/services.py), migrates, creates a merchant,
pre-generates and pre-signs ~3 KB ``orders/create`` webhooks (unique ids, 10% re-sent duplicates,
bench/payloads.py), then starts the server as a subprocess the way production runs it
(bench/server.py: uvicorn factory, uvloop, httptools, access log off, WARNING logs,
DROPSHIP_ENV=production, DROPSHIP_REDIS_URL set so no workers run in the API process). The app is
``create_app()`` plus two bench-only routes: ``GET /bench/ping`` (ceiling) and
``POST /bench/naive`` (same verification, one ORM insert + commit per request).

Phases, per server process count:

1. closed loop at maximum throughput with ``wrk`` (``--connections`` keep-alive connections):
   ping, naive, ingest; req/s, accepted orders/s, p50/p99, non-2xx;
2. open loop at half the measured ingest request rate (bench/loadgen.py, latency from each
   request's scheduled send time, so queueing counts): p50/p99 at a steady, sustainable load.

The tables are truncated and checkpointed before each storing phase. After each one the rows are
counted: every accepted webhook must be stored exactly once with an outbox row, no duplicate
stored twice; the open-loop phase checks it exactly (every answer awaited, payload MD5s compared).
Figures are printed as ratios against the baselines of the same run and written to
``bench/results/ingest-<timestamp>.json``. Exit status 1 when a correctness check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/ingest.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from app import migrate  # noqa: E402
from app.db import Database  # noqa: E402
from app.merchants.service import create_merchant  # noqa: E402
from bench import loadgen  # noqa: E402
from bench.payloads import (  # noqa: E402
    SHOP,
    WebhookRequest,
    generate,
    mean_body_size,
    write_wrk_file,
)
from tests.support import services as svc  # noqa: E402

SECRET = "bench-shopify-webhook-secret"
LUA = Path(__file__).resolve().parent / "wrk_requests.lua"
#: Where results go; a run on a --code-ref snapshot still writes to this checkout's bench/results.
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Durable, production-like PostgreSQL; only WAL sizing differs from the defaults (fewer
#: checkpoints in the middle of a phase). Durability settings are printed from the server.
PG_EXTRA = ("-c max_wal_size=4GB", "-c checkpoint_timeout=30min")

PING, NAIVE, INGEST = "/bench/ping", "/bench/naive", "/webhooks/shopify"
BASELINE = "/bench/baseline"
# --lean: the bench/lean.py experiment, as a Litestar route, an @asgi route, a raw ASGI mount
LEAN, LEAN_ASGI, LEAN_RAW = "/bench/lean", "/bench/lean-asgi", "/bench/lean-raw"
PROFILE_RATE = 250  # py-spy samples per second
STATS_SETTLE = 1.5  # s: PostgreSQL backends flush their statistics at most once a second


# --------------------------------------------------------------------------------------- CPU


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            out[int(entry)] = int(fields[1])
    return out


def _tree(root: int) -> list[int]:
    parents = _ppid_map()
    tree, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        tree += frontier
    return tree


def _cpu(pids: Sequence[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def _machine() -> tuple[float, float, float]:
    """(busy, steal, total) jiffies of the whole machine (busy excludes idle, iowait, steal)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq, steal, sum(values[:8])


def wait_for_quiet(limit: float, max_wait: float = 60.0) -> float:
    """Wait (at most ``max_wait`` s) until the machine's CPU use over 1 s is below ``limit``
    (a fraction of all CPUs); returns the last measured use. Other tenants of a 2-core box
    (test suites, builds) would otherwise be measured as the server's slowness."""
    deadline = time.monotonic() + max_wait
    announced = False
    while True:
        b0, _, t0 = _machine()
        time.sleep(1.0)
        b1, _, t1 = _machine()
        use = (b1 - b0) / max(1, t1 - t0)
        if use <= limit or time.monotonic() > deadline:
            if announced:
                print(f"  machine CPU use now {use:.0%}", flush=True)
            return use
        if not announced:
            print(f"  waiting for other load to settle (machine CPU use {use:.0%}) ...", flush=True)
            announced = True


@dataclass
class CpuMeter:
    """CPU seconds over one phase: the server (all its processes), PostgreSQL (postmaster and
    backends), the load generator, and everything else on the machine ("other": other tenants of
    the box; a large value means the run was disturbed)."""

    server_pid: int
    pg_pid: int
    _start: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self._start = {
            "server": _cpu(_tree(self.server_pid)),
            "pg": _cpu(_tree(self.pg_pid)),
            "machine": _machine(),
            "self": time.process_time(),
            "wall": time.monotonic(),
        }

    def stop(self, generator_cpu: float) -> dict[str, Any]:
        """``generator_cpu``: CPU seconds of an external generator (wrk) over the phase; the
        in-process Python generator is counted as this process's own time."""

        by_pid: dict[str, float] = {}

        def delta(name: str, root: int) -> float:
            now = _cpu(_tree(root))
            if name == "server":
                by_pid.update(
                    {
                        str(pid): round(v - self._start[name].get(pid, 0.0), 2)
                        for pid, v in now.items()
                    }
                )
            return sum(v - self._start[name].get(pid, 0.0) for pid, v in now.items())

        busy0, steal0, total0 = self._start["machine"]
        busy1, steal1, total1 = _machine()
        server, pg = delta("server", self.server_pid), delta("pg", self.pg_pid)
        own = time.process_time() - self._start["self"]
        busy_s = (busy1 - busy0) / CLK_TCK
        return {
            "wall_s": time.monotonic() - self._start["wall"],
            "server_s": server,
            "postgres_s": pg,
            "generator_s": generator_cpu + own,
            "other_s": max(0.0, busy_s - server - pg - generator_cpu - own),
            "machine_busy": (busy1 - busy0) / max(1, total1 - total0),
            "steal": (steal1 - steal0) / max(1, total1 - total0),
            "server_by_pid": by_pid,  # type: ignore[dict-item]
        }


# --------------------------------------------------------------------------------- servers


@contextmanager
def bench_server(
    port: int, processes: int, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.server",
                "--port",
                str(port),
                "--processes",
                str(processes),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(port, proc, log, processes)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, processes: int) -> None:
    deadline = time.monotonic() + 60
    ok = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                if r.status == 200:
                    ok += 1
                    if ok >= 3 * processes:  # each worker process has answered, most likely
                        return
                    continue
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after 60 s:\n{log.read_text()[-3000:]}")


def server_env(
    database_url: str, redis_url: str, var_dir: Path, port: int, extra: dict[str, str]
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DROPSHIP_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        DROPSHIP_ENV="production",
        DROPSHIP_DATABASE_URL=database_url,
        DROPSHIP_REDIS_URL=redis_url,
        DROPSHIP_SECRET_KEY=secrets.token_urlsafe(32),
        DROPSHIP_SHOPIFY_API_KEY="bench-client-id",
        DROPSHIP_SHOPIFY_API_SECRET=SECRET,
        DROPSHIP_LOG_LEVEL="WARNING",
        DROPSHIP_LOG_FORMAT="json",
        DROPSHIP_VAR_DIR=str(var_dir),
        DROPSHIP_PUBLIC_URL=f"http://127.0.0.1:{port}",
        # Bytecode cached once for every process the benches start, outside the tree: the venv
        # ships no .pyc (uv does not compile on install), and with PYTHONDONTWRITEBYTECODE (set
        # on this box, dropped above) every server, worker and uvicorn child compiled SQLAlchemy,
        # Litestar & co. from source at each start (tens of CPU seconds on a busy box; uvicorn's
        # `--processes 2` children then took minutes to serve).
        PYTHONPYCACHEPREFIX=str(Path(tempfile.gettempdir()) / "dropship-bench-pycache"),
    )
    env.update(extra)
    return env


# ------------------------------------------------------------------------------- load runs


def run_wrk(
    wrk: str,
    port: int,
    path: str,
    request_file: Path | None,
    *,
    duration: float,
    connections: int,
    threads: int,
    meter: CpuMeter | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One wrk run; the meter covers the load only (not wrk's loading of the request file)."""
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}",
        "--",
        str(request_file) if request_file else "-",
        path,
        f"127.0.0.1:{port}",
        str(threads),
    ]
    before = os.times()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    ready = 0
    wrk_cpu_at_start = 0.0
    err_lines: list[str] = []
    while ready < threads:  # each wrk thread's init() prints READY once its requests are built
        line = proc.stderr.readline()
        if not line:
            break
        if line.strip() == "READY":
            ready += 1
        else:
            err_lines.append(line)
    if meter is not None:
        meter.start()
        wrk_cpu_at_start = sum(_cpu([proc.pid]).values())
    try:
        stdout, stderr = proc.communicate(timeout=duration + 180)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    after = os.times()
    cpu = None
    if meter is not None:
        wrk_cpu = (after.children_user + after.children_system) - (
            before.children_user + before.children_system
        )
        cpu = meter.stop(generator_cpu=max(0.0, wrk_cpu - wrk_cpu_at_start))
    for line in stdout.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line[len("WRKJSON ") :])
            break
    else:
        raise RuntimeError(
            f"wrk failed ({proc.returncode}):\n{stdout}\n{''.join(err_lines)}{stderr}"
        )
    secs = raw["duration_us"] / 1e6
    statuses = {str(k): v for k, v in raw["statuses"].items()}
    e = raw["errors"]
    return {
        "generator": "wrk",
        "duration_s": round(secs, 3),
        "requests": raw["requests"],
        "rps": raw["requests"] / secs,
        "accepted": raw["accepted"],
        "accepted_per_s": raw["accepted"] / secs,
        "duplicate": raw["duplicate"],
        "non_2xx": sum(v for k, v in statuses.items() if not k.startswith("2")),
        "errors": e["connect"] + e["read"] + e["write"] + e["timeout"],
        "statuses": statuses,
        "sent_per_thread": raw["sent_per_thread"],
        "wrapped": raw["wrapped"],
        "latency_ms": {k: v / 1e3 for k, v in raw["latency_us"].items()},
    }, cpu


def run_python_closed(
    port: int, requests: Sequence[bytes], *, duration: float, connections: int
) -> tuple[dict[str, Any], loadgen.Result]:
    import uvloop

    res = uvloop.run(
        loadgen.closed_loop("127.0.0.1", port, requests, connections=connections, duration=duration)
    )
    return _from_loadgen(res), res


def run_open(
    port: int, requests: Sequence[bytes], *, rate: float, duration: float
) -> tuple[dict[str, Any], loadgen.Result]:
    """The C generator (bench/openloop.c) when a compiler is there: it leaves the cores to the
    server; otherwise the Python one (up to a core of its own at these rates)."""
    binary = loadgen.c_generator()
    if binary is not None:
        res = loadgen.open_loop_c(binary, "127.0.0.1", port, requests, rate=rate, duration=duration)
        return {**_from_loadgen(res), "generator": "c-open-loop"}, res
    import uvloop

    res = uvloop.run(loadgen.open_loop("127.0.0.1", port, requests, rate=rate, duration=duration))
    return _from_loadgen(res), res


def _from_loadgen(res: loadgen.Result) -> dict[str, Any]:
    s = res.summary()
    secs = float(s["duration_s"])  # type: ignore[arg-type]
    return {
        "generator": f"python-{res.mode}-loop",
        "target_rate": res.target_rate,
        "duration_s": secs,
        "requests": s["requests"],
        "rps": int(s["requests"]) / secs,  # type: ignore[call-overload]
        "accepted": s["accepted"],
        "accepted_per_s": int(s["accepted"]) / secs,  # type: ignore[call-overload]
        "duplicate": s["duplicate"],
        "non_2xx": s["non_2xx"],
        "errors": int(s["errors"]) + int(s["late"]),  # type: ignore[call-overload]
        "statuses": s["statuses"],
        "latency_ms": s["latency_ms"],
        "max_open_connections": s["max_open_connections"],
        "sent_per_thread": [res.sent],
    }


# ---------------------------------------------------------------------------- verification


def reset_tables(pg: svc.Postgres, db: str) -> None:
    pg.psql("TRUNCATE webhook_deliveries, outbox", db)
    pg.psql("CHECKPOINT", db)


PG_COUNTERS = ("sessions", "commits", "rollbacks", "wal_fsyncs", "wal_bytes")


def pg_counters(pg: svc.Postgres, db: str) -> dict[str, float]:
    """Cumulative counters (read from the ``postgres`` database, so reading them does not
    count): sessions opened and transactions of the bench database, WAL fsyncs and bytes."""
    out = pg.psql(
        "SELECT d.sessions, d.xact_commit, d.xact_rollback, w.wal_sync, w.wal_bytes "
        f"FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = '{db}'"
    )
    return dict(zip(PG_COUNTERS, (float(v) for v in out.strip().split("|")), strict=True))


def pg_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in PG_COUNTERS}


def stored(pg: svc.Postgres, db: str) -> tuple[dict[str, str], int]:
    """(webhook id -> md5 of the stored payload, outbox rows)."""
    rows = pg.psql("SELECT webhook_id, md5(payload) FROM webhook_deliveries", db)
    by_id: dict[str, str] = {}
    dup_rows = 0
    for line in rows.splitlines():
        wid, _, digest = line.partition("|")
        if wid in by_id:
            dup_rows += 1
        by_id[wid] = digest
    if dup_rows:
        by_id["__duplicate_rows__"] = str(dup_rows)
    outbox = int(pg.psql("SELECT count(*) FROM outbox", db).strip())
    return by_id, outbox


def verify_closed(
    pg: svc.Postgres,
    db: str,
    reqs: Sequence[WebhookRequest],
    run: dict[str, Any],
    *,
    connections: int,
    outbox_expected: bool,
) -> dict[str, Any]:
    """After a closed-loop run: the deadline cuts up to ``connections`` answers, so
    ``accepted <= stored <= accepted + connections``; everything stored was sent, once,
    intact, with an outbox row (ingest)."""
    rows, outbox = stored(pg, db)
    threads = len(run.get("sent_per_thread") or [1])
    sent: dict[str, WebhookRequest] = {}
    for k, n_sent in enumerate(run.get("sent_per_thread") or [run["requests"]]):
        mine = reqs[k::threads]
        for i in range(min(n_sent, len(mine))):
            sent.setdefault(mine[i].webhook_id, mine[i])
    dup_rows = int(rows.pop("__duplicate_rows__", "0"))
    unknown = [w for w in rows if w not in sent]
    corrupt = [w for w, d in rows.items() if w in sent and sent[w].body_md5 != d]
    cut = len(rows) - run["accepted"]
    checks = {
        "answered_non_2xx": run["non_2xx"] + run["errors"],
        "stored_rows": len(rows),
        "accepted": run["accepted"],
        "stored_minus_accepted": cut,
        "outbox_rows": outbox,
        "distinct_sent": len(sent),
        "rows_stored_twice": dup_rows,
        "stored_but_never_sent": len(unknown),
        "payload_mismatch": len(corrupt),
    }
    ok = (
        run["non_2xx"] + run["errors"] == 0
        and 0 <= cut <= connections
        and dup_rows == 0
        and not unknown
        and not corrupt
        and (outbox == len(rows) if outbox_expected else outbox == 0)
        and run.get("wrapped", 0) == 0
    )
    checks["ok"] = ok
    return checks


def verify_open(
    pg: svc.Postgres, db: str, reqs: Sequence[WebhookRequest], res: loadgen.Result
) -> dict[str, Any]:
    """Exact: every request was answered; the accepted set is exactly the stored set; each
    distinct webhook accepted exactly once; payloads intact; one outbox row per stored row."""
    rows, outbox = stored(pg, db)
    dup_rows = int(rows.pop("__duplicate_rows__", "0"))
    accepted_ids: dict[str, int] = {}
    failed = 0
    for i, outcome in res.outcomes.items():
        if outcome == loadgen.ACCEPTED:
            accepted_ids[reqs[i].webhook_id] = accepted_ids.get(reqs[i].webhook_id, 0) + 1
        elif outcome == loadgen.FAILED:
            failed += 1
    sent = {reqs[i].webhook_id: reqs[i] for i in res.outcomes}
    accepted_twice = sum(1 for v in accepted_ids.values() if v > 1)
    corrupt = sum(1 for w, d in rows.items() if w in sent and sent[w].body_md5 != d)
    checks = {
        "stored_rows": len(rows),
        "accepted": sum(accepted_ids.values()),
        "outbox_rows": outbox,
        "distinct_sent": len(sent),
        "duplicates_sent": sum(1 for i in res.outcomes if reqs[i].duplicate),
        "duplicate_answers": sum(1 for o in res.outcomes.values() if o == loadgen.DUPLICATE),
        "accepted_twice": accepted_twice,
        "rows_stored_twice": dup_rows,
        "accepted_not_stored": len(set(accepted_ids) - set(rows)),
        "stored_not_accepted": len(set(rows) - set(accepted_ids)),
        "payload_mismatch": corrupt,
        "failed_or_unanswered": failed + res.late,
    }
    checks["ok"] = (
        failed == 0
        and res.late == 0
        and accepted_twice == 0
        and dup_rows == 0
        and set(rows) == set(accepted_ids) == set(sent)
        and outbox == len(rows)
        and corrupt == 0
    )
    return checks


# ----------------------------------------------------------------------------------- output


def _fmt_row(name: str, r: dict[str, Any], cpu: dict[str, Any] | None) -> str:
    lat = r["latency_ms"]
    acc = f"{r['accepted_per_s']:>10.0f}" if r.get("accepted") else f"{'-':>10}"
    n = max(1, r["requests"])
    cols = ""
    if cpu:
        cols = (
            f"{cpu['server_s'] / n * 1e6:>8.0f}{cpu['postgres_s'] / n * 1e6:>7.0f}"
            f"{cpu['generator_s'] / n * 1e6:>7.0f}{cpu['machine_busy'] * 100:>6.0f}%"
            f"{cpu['other_s'] / max(1e-9, cpu['wall_s']):>7.2f}"
        )
    return (
        f"{name:<30}{r['rps']:>8.0f}{acc}{lat['p50']:>8.1f}{lat['p99']:>8.1f}"
        f"{r['non_2xx'] + r['errors']:>8}{cols}"
    )


HEADER = (
    f"{'phase':<30}{'req/s':>8}{'orders/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'non-2xx':>8}"
    f"{'srv µs':>8}{'pg µs':>7}{'gen µs':>7}{'busy':>7}{'other':>7}"
)
LEGEND = (
    "orders/s: accepted (new, stored) orders per second; srv/pg/gen µs: CPU time per answered\n"
    "request in the server, PostgreSQL and the load generator; busy: whole-machine CPU use;\n"
    "other: CPU cores used by unrelated processes during the phase (noise; should be ~0)."
)


def print_table(title: str, phases: dict[str, Any]) -> None:
    print(f"\n{title}")
    print(HEADER)
    print("-" * len(HEADER))
    labels = {
        "ping": "ping (ceiling)",
        "baseline": "baseline (asyncpg INSERT/req)",
        "naive": "naive (ORM insert/request)",
        "ingest": "ingest (group commit)",
        "lean": "lean experiment (Litestar)",
        "lean_asgi": "lean experiment (@asgi)",
        "lean_raw": "lean experiment (raw ASGI)",
        "ingest_open": "ingest open loop @ 1/2 rate",
        "lean_raw_open": "lean raw open loop, same rate",
    }
    for key, label in labels.items():
        if key in phases:
            p = phases[key]
            name = label
            if key.endswith("_open"):
                name = f"{key.removesuffix('_open')} open loop {p['run']['target_rate']:.0f}/s"
            print(_fmt_row(name, p["run"], p.get("cpu")))
    print(LEGEND)
    print(
        f"\n{'PostgreSQL per phase':<30}{'sessions':>9}{'commits':>9}{'fsyncs':>8}"
        f"{'orders/commit':>14}{'orders/fsync':>13}{'WAL KB/order':>13}"
    )
    for key, label in labels.items():
        if key not in phases or key == "ping":
            continue
        c, n = phases[key]["pg"], max(1, phases[key]["run"]["accepted"])
        print(
            f"{label:<30}{c['sessions']:>9.0f}{c['commits']:>9.0f}{c['wal_fsyncs']:>8.0f}"
            f"{n / max(1, c['commits']):>14.1f}{n / max(1, c['wal_fsyncs']):>13.1f}"
            f"{c['wal_bytes'] / n / 1024:>13.1f}"
        )


# ------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark POST /webhooks/shopify against ping and naive-insert baselines."
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    p.add_argument("--connections", type=int, default=64, help="closed-loop connections")
    p.add_argument(
        "--processes",
        default="1",
        help="uvicorn processes; a comma list (e.g. 1,2) runs every phase for each",
    )
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per endpoint")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument(
        "--requests",
        type=int,
        default=0,
        help="pre-generated webhooks (default: enough for 7,000/s over --duration)",
    )
    p.add_argument(
        "--open-rate",
        type=float,
        default=0.0,
        help="open-loop rate (default: half the measured ingest req/s)",
    )
    p.add_argument(
        "--profile",
        nargs="?",
        const="ingest",
        default="",
        metavar="ENDPOINTS",
        help="after the measured phases, profile the server under closed-loop load with py-spy "
        "(default: ingest; or a comma list of ping,naive,ingest,lean,lean_asgi,lean_raw)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the server (e.g. DROPSHIP_INGEST_BATCH_MAX=128)",
    )
    p.add_argument("--python-generator", action="store_true", help="do not use wrk")
    p.add_argument(
        "--code-ref",
        default="",
        metavar="REV",
        help="benchmark this git revision (a clean export) instead of the working tree",
    )
    p.add_argument(
        "--lean",
        action="store_true",
        help="also measure the bench/lean.py experiment (the suggested hot-path changes)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=45.0,
        help="before each phase wait up to this many seconds for other CPU load to settle (0: off)",
    )
    p.add_argument(
        "--quiet-limit",
        type=float,
        default=0.15,
        help="machine CPU use (fraction of all CPUs) counted as settled",
    )
    return p.parse_args(argv)


def _shown(path: Path) -> str:
    for base in (REPO, RESULTS.parent.parent):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return str(path)


def run_on_snapshot(ref: str, argv: Sequence[str], script: str = "ingest.py") -> int:
    """Benchmark a committed revision: export it (``git archive``, the checkout is not touched)
    with this bench/ copied in, and run ``bench/<script>`` there. Useful to compare revisions,
    or when the working tree is mid-edit."""
    import io
    import tarfile

    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tar = subprocess.run(["git", "archive", "--format=tar", sha], cwd=REPO, capture_output=True)
    tar.check_returncode()
    snapshot = Path(tempfile.mkdtemp(prefix="dropship-bench-src-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as archive:
            archive.extractall(snapshot, filter="data")
        shutil.rmtree(snapshot / "bench", ignore_errors=True)
        shutil.copytree(
            REPO / "bench",
            snapshot / "bench",
            ignore=shutil.ignore_patterns("results", "__pycache__"),
        )
        from tests.support.shopify import FIXTURES

        env = dict(
            os.environ,
            PYTHONPATH=str(snapshot),
            BENCH_RESULTS_DIR=str(RESULTS),
            BENCH_CODE_REF=f"{ref} {sha}",
            DROPSHIP_FIXTURES=str(FIXTURES),
        )
        print(f"benchmarking {ref} ({sha[:10]}) from a clean export in {snapshot}", flush=True)
        return subprocess.run(
            [sys.executable, str(snapshot / "bench" / script), *argv], cwd=snapshot, env=env
        ).returncode
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)


def _without_code_ref(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--code-ref":
            skip = True
        elif not a.startswith("--code-ref="):
            out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.code_ref:
        return run_on_snapshot(args.code_ref, _without_code_ref(list(argv or sys.argv[1:])))
    process_counts = [int(x) for x in str(args.processes).split(",") if x.strip()]
    wrk = None if args.python_generator else shutil.which("wrk")
    n_requests = args.requests or int(max(20_000, 7_000 * args.duration))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    extra_env = dict(kv.split("=", 1) for kv in args.server_env)
    report: dict[str, Any] = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["bench/ingest.py", *(argv or sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
        },
        "code": _git_state(),
        "config": {
            "duration_s": args.duration,
            "connections": args.connections,
            "warmup_s": args.warmup,
            "processes": process_counts,
            "generator": "wrk" if wrk else "python",
            "wrk_threads": args.wrk_threads,
            "requests_generated": n_requests,
            "server_env": extra_env,
            "naive_baseline": "shopifyapp HMAC verification + JSON check + cached shop lookup "
            "(same as the receiver), then one ORM session.add + commit per request, no outbox",
        },
        "runs": {},
    }
    all_ok = True
    with tempfile.TemporaryDirectory(prefix="dropship-bench-") as tmp_name:
        tmp = Path(tmp_name)
        code = report["code"]
        print(
            f"code: commit {code['commit']}"
            + (f", uncommitted changes in {len(code['dirty'])} file(s)" if code["dirty"] else ""),
            flush=True,
        )
        print(f"generating {n_requests} signed orders/create webhooks ...", flush=True)
        t = time.perf_counter()
        reqs = generate(n_requests, secret=SECRET)
        request_file = tmp / "requests.bin"
        write_wrk_file(request_file, reqs)
        print(
            f"  {time.perf_counter() - t:.1f} s; mean body {mean_body_size(reqs):.0f} bytes, "
            f"{sum(r.duplicate for r in reqs) / len(reqs):.0%} re-sent duplicates",
            flush=True,
        )
        report["config"]["mean_body_bytes"] = round(mean_body_size(reqs))

        with svc.postgres(durable=True, extra=PG_EXTRA) as pg, svc.redis() as rds:
            db_name = "dropship_bench"
            pg.psql(f"CREATE DATABASE {db_name}")
            url = pg.url(db_name)
            migrate.upgrade(url)
            asyncio.run(_create_merchant(url))
            pg_settings = {
                name: pg.psql(f"SHOW {name}").strip()
                for name in (
                    "server_version",
                    "fsync",
                    "synchronous_commit",
                    "full_page_writes",
                    "wal_sync_method",
                    "shared_buffers",
                    "max_wal_size",
                )
            }
            report["postgres"] = pg_settings
            pg_pid = int((pg.datadir / "postmaster.pid").read_text().split()[0])
            print(
                "PostgreSQL {server_version}: fsync={fsync} synchronous_commit="
                "{synchronous_commit} full_page_writes={full_page_writes} "
                "wal_sync_method={wal_sync_method}".format(**pg_settings),
                flush=True,
            )
            for processes in process_counts:
                port = svc.free_port()
                env = server_env(url, rds.url, tmp / "var", port, extra_env)
                if args.lean:
                    env["BENCH_LEAN"] = "1"
                log = tmp / f"server-{processes}.log"
                print(f"\n== server: {processes} uvicorn process(es) on :{port}", flush=True)
                with bench_server(port, processes, env, log) as proc:
                    run = run_phases(
                        args, wrk, port, proc.pid, pg, pg_pid, db_name, reqs, request_file
                    )
                kept = RESULTS / f"server-{stamp}-{processes}p.log"
                RESULTS.mkdir(parents=True, exist_ok=True)
                shutil.copy(log, kept)
                run["server_log"] = _shown(kept)
                run["server_log_errors"] = count_log_errors(log)
                if run["server_log_errors"]:
                    print(f"server logged errors: {run['server_log_errors']} (see {kept})")
                report["runs"][str(processes)] = run
                all_ok = all_ok and run["ok"]
                print_table(
                    f"{processes} server process(es), {args.connections} connections, "
                    f"{args.duration:g} s per phase",
                    run["phases"],
                )
                print_ratios(run)

    summarize(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"ingest-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults: {_shown(out)}")
    if not all_ok:
        print("CORRECTNESS CHECK FAILED (see 'verification' above)")
    return 0 if all_ok else 1


async def _create_merchant(url: str) -> None:
    db = Database(url)
    try:
        async with db.transaction() as session:
            await create_merchant(session, SHOP, "owner@example.com")
    finally:
        await db.dispose()


def run_phases(
    args: argparse.Namespace,
    wrk: str | None,
    port: int,
    server_pid: int,
    pg: svc.Postgres,
    pg_pid: int,
    db: str,
    reqs: Sequence[WebhookRequest],
    request_file: Path,
) -> dict[str, Any]:
    host = f"127.0.0.1:{port}"
    raw_cache: dict[str, list[bytes]] = {}

    def raw(path: str, n: int) -> list[bytes]:
        cached = raw_cache.get(path)
        if cached is None or len(cached) < n:
            if path == PING:
                cached = [f"GET {PING} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()]
            else:
                cached = [r.raw(path, host) for r in reqs[:n]]
            raw_cache[path] = cached
        return cached

    meter = CpuMeter(server_pid, pg_pid)

    def closed(
        path: str, duration: float, *, measure: bool = True
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        if wrk:
            return run_wrk(
                wrk,
                port,
                path,
                None if path == PING else request_file,
                duration=duration,
                connections=args.connections,
                threads=args.wrk_threads,
                meter=meter if measure else None,
            )
        requests = raw(path, len(reqs))
        meter.start()
        result, _ = run_python_closed(
            port, requests, duration=duration, connections=args.connections
        )
        return result, meter.stop(generator_cpu=0.0)

    phases: dict[str, Any] = {}
    ok = True

    def quiet() -> float | None:
        if args.quiet_wait <= 0:
            return None
        return wait_for_quiet(args.quiet_limit, args.quiet_wait)

    closed_phases = [("ping", PING), ("baseline", BASELINE), ("naive", NAIVE), ("ingest", INGEST)]
    if args.lean:
        closed_phases += [("lean", LEAN), ("lean_asgi", LEAN_ASGI), ("lean_raw", LEAN_RAW)]

    if args.warmup > 0:
        print(f"warm-up {args.warmup:g} s per endpoint ...", flush=True)
        for _, path in closed_phases:
            closed(path, args.warmup, measure=False)
        reset_tables(pg, db)

    for key, path in closed_phases:
        if path != PING:
            reset_tables(pg, db)
        print(f"closed loop: {key} ({path}) {args.duration:g} s ...", flush=True)
        idle_use = quiet()
        counters = pg_counters(pg, db)
        result, cpu = closed(path, args.duration)
        time.sleep(STATS_SETTLE)  # requests cut at the deadline finish; backends flush stats
        phase: dict[str, Any] = {
            "run": result,
            "cpu": cpu,
            "pg": pg_delta(counters, pg_counters(pg, db)),
            "machine_use_before": idle_use,
        }
        if path != PING:
            phase["verification"] = verify_closed(
                pg,
                db,
                reqs,
                result,
                connections=args.connections,
                outbox_expected=path not in (NAIVE, BASELINE),
            )
            ok = ok and phase["verification"]["ok"]
            print(f"  verification: {_fmt_checks(phase['verification'])}", flush=True)
        print(
            f"  {result['rps']:.0f} req/s, {result['accepted_per_s']:.0f} accepted/s, "
            f"p50 {result['latency_ms']['p50']:.1f} ms, p99 {result['latency_ms']['p99']:.1f} ms",
            flush=True,
        )
        phases[key] = phase

    # Open loop at half the measured ingest maximum (the lean variant at the same rate).
    rate = args.open_rate or phases["ingest"]["run"]["rps"] / 2
    open_phases = [("ingest_open", INGEST)]
    if args.lean:
        open_phases.append(("lean_raw_open", LEAN_RAW))
    for key, path in open_phases:
        reset_tables(pg, db)
        requests = raw(path, min(len(reqs), int(rate * args.duration)))
        print(f"open loop: {path} at {rate:.0f} req/s for {args.duration:g} s ...", flush=True)
        idle_use = quiet()
        counters = pg_counters(pg, db)
        meter.start()
        summary, res = run_open(port, requests, rate=rate, duration=args.duration)
        own = summary["generator"] == "c-open-loop"
        cpu = meter.stop(generator_cpu=res.client_cpu if own else 0.0)
        time.sleep(STATS_SETTLE)
        phases[key] = {
            "run": summary,
            "cpu": cpu,
            "pg": pg_delta(counters, pg_counters(pg, db)),
            "machine_use_before": idle_use,
            "verification": verify_open(pg, db, reqs, res),
        }
        ok = ok and phases[key]["verification"]["ok"]
        print(f"  verification: {_fmt_checks(phases[key]['verification'])}", flush=True)
        print(
            f"  p50 {summary['latency_ms']['p50']:.1f} ms, "
            f"p99 {summary['latency_ms']['p99']:.1f} ms, max {summary['latency_ms']['max']:.1f} ms,"
            f" {summary['max_open_connections']} connections used",
            flush=True,
        )

    out: dict[str, Any] = {"phases": phases, "ok": ok}
    out["ratios"] = ratios(phases)
    if args.profile:
        out["profile"] = {}
        for key in args.profile.split(","):
            reset_tables(pg, db)
            quiet()
            out["profile"][key] = profile_phase(args, port, server_pid, key.strip(), closed)
    return out


def ratios(phases: dict[str, Any]) -> dict[str, float]:
    ping, naive, ingest = (phases[k]["run"] for k in ("ping", "naive", "ingest"))
    baseline = phases["baseline"]["run"]
    out = {
        "ingest_vs_baseline_accepted_per_s": ingest["accepted_per_s"]
        / max(1e-9, baseline["accepted_per_s"]),
        "baseline_vs_ping_req_per_s": baseline["rps"] / ping["rps"],
        "ingest_vs_naive_accepted_per_s": ingest["accepted_per_s"] / naive["accepted_per_s"],
        "ingest_vs_ping_req_per_s": ingest["rps"] / ping["rps"],
        "naive_vs_ping_req_per_s": naive["rps"] / ping["rps"],
        "open_loop_rate_vs_ingest_max": (phases["ingest_open"]["run"]["target_rate"] or 0)
        / ingest["rps"],
    }
    for key in ("lean", "lean_asgi", "lean_raw"):
        if key in phases:
            r = phases[key]["run"]
            out[f"{key}_vs_ingest_accepted_per_s"] = r["accepted_per_s"] / ingest["accepted_per_s"]
            out[f"{key}_vs_naive_accepted_per_s"] = r["accepted_per_s"] / naive["accepted_per_s"]
    return out


def print_ratios(run: dict[str, Any]) -> None:
    r = run["ratios"]
    open_run = run["phases"]["ingest_open"]["run"]
    print(
        f"ratios: ingest/baseline accepted orders/s = "
        f"{r['ingest_vs_baseline_accepted_per_s']:.2f}x (goal >= 2x); "
        f"baseline/ping req/s = {r['baseline_vs_ping_req_per_s']:.2f}x"
    )
    print(
        f"ratios: ingest/naive accepted orders/s = {r['ingest_vs_naive_accepted_per_s']:.2f}x "
        f"(goal >= 1.5x); ingest/ping req/s = {r['ingest_vs_ping_req_per_s']:.2f}x (goal >= 0.5x); "
        f"naive/ping = {r['naive_vs_ping_req_per_s']:.2f}x"
    )
    print(
        f"open loop at {r['open_loop_rate_vs_ingest_max']:.2f}x the ingest maximum: "
        f"p50 {open_run['latency_ms']['p50']:.1f} ms, p99 {open_run['latency_ms']['p99']:.1f} ms"
        " (goal: p99 < 50 ms)"
    )
    for key in ("lean", "lean_asgi", "lean_raw"):
        if f"{key}_vs_ingest_accepted_per_s" in r:
            print(
                f"experiment {key}: {r[f'{key}_vs_ingest_accepted_per_s']:.2f}x ingest, "
                f"{r[f'{key}_vs_naive_accepted_per_s']:.2f}x naive (accepted orders/s)"
            )
    for key, phase in run["phases"].items():
        if "verification" not in phase:
            continue
        v = phase["verification"]
        print(f"verification {key}: {'OK' if v['ok'] else 'FAILED'} ({_fmt_checks(v)})")


def _fmt_checks(checks: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in checks.items() if k != "ok")


def summarize(report: dict[str, Any]) -> None:
    runs = report["runs"]
    if len(runs) < 2:
        return
    best = max(runs, key=lambda p: runs[p]["phases"]["ingest"]["run"]["accepted_per_s"])
    lines = []
    for p, run in runs.items():
        ing = run["phases"]["ingest"]["run"]
        op = run["phases"]["ingest_open"]["run"]
        lines.append(
            f"  {p} process(es): ingest {ing['accepted_per_s']:.0f} accepted/s "
            f"({run['ratios']['ingest_vs_naive_accepted_per_s']:.2f}x naive), "
            f"open-loop p99 {op['latency_ms']['p99']:.1f} ms at {op['target_rate']:.0f}/s"
        )
    print("\nprocess counts compared:\n" + "\n".join(lines))
    print(f"  best ingest throughput here: {best} process(es)")
    report["best_processes"] = int(best)


def count_log_errors(log: Path) -> dict[str, int]:
    """Error lines in the server log by event (and PostgreSQL error class when there is one)."""
    counts: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line or "ERROR" in line:
                counts["unstructured"] = counts.get("unstructured", 0) + 1
            continue
        if not isinstance(entry, dict) or entry.get("level") not in ("error", "critical"):
            continue
        key = str(entry.get("event"))
        text = json.dumps(entry)
        for marker in ("DeadlockDetected", "deadlock detected", "TooManyConnections", "Timeout"):
            if marker in text:
                key += f" ({marker})"
                break
        counts[key] = counts.get(key, 0) + 1
    return counts


def _git_state() -> dict[str, Any]:
    """The commit measured, and any uncommitted change to the code the server runs."""
    if os.environ.get("BENCH_CODE_REF"):
        ref, sha = os.environ["BENCH_CODE_REF"].split()
        return {"commit": sha[:7], "ref": ref, "dirty": [], "clean_export": True}

    def git(*cmd: str) -> str:
        out = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    dirty = git(
        "status", "--porcelain", "--", "dropship", "app", "connectors", "workers", "migrations"
    )
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": dirty.splitlines()}


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


# ---------------------------------------------------------------------------------- profile


def profile_phase(
    args: argparse.Namespace, port: int, server_pid: int, key: str, closed: Any
) -> dict[str, Any]:
    """Closed-loop load on one endpoint with py-spy attached to the server (all its processes).

    Not a measured phase (sampling slows the server a little); py-spy skips idle threads, so the
    samples are the server's CPU time, divided by the requests answered for a per-request cost.
    """
    path = {
        "ping": PING,
        "naive": NAIVE,
        "baseline": BASELINE,
        "ingest": INGEST,
        "lean": LEAN,
        "lean_asgi": LEAN_ASGI,
        "lean_raw": LEAN_RAW,
    }[key]
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy not found: `uv pip install py-spy` to profile", flush=True)
        return {"error": "py-spy not installed"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    collapsed = RESULTS / f"profile-{key}-{stamp}.txt"
    cmd = [
        py_spy,
        "record",
        "--pid",
        str(server_pid),
        "--subprocesses",
        "--rate",
        str(PROFILE_RATE),
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(collapsed),
    ]
    print(f"profiling {key} ({path}) with py-spy for {args.duration:g} s ...", flush=True)
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.5)  # attach
    result, _ = closed(path, args.duration, measure=False)
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        _, err = spy.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    if not collapsed.exists():
        return {"error": err.decode(errors="replace")[-2000:]}
    from bench.profile_summary import summarize_collapsed

    summary = summarize_collapsed(
        collapsed.read_text(), requests=result["requests"], rate=PROFILE_RATE
    )
    print(summary["text"], flush=True)
    return {"file": _shown(collapsed), "run": result, "summary": summary}


if __name__ == "__main__":
    sys.exit(main())
