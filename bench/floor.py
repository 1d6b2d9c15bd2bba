"""The floor: what one worker process does with jobs that do (almost) nothing.

    uv run python bench/floor.py [--jobs 4000] [--worker-threads 8]
                                 [--kinds noop,update,update_core]

The worker is the one ``dropship worker`` runs (``workers.runtime.run_worker``: Dramatiq on
Redis, ``DROPSHIP_WORKER_THREADS`` threads, the same middleware, the outbox relay and the
scheduler idling beside it) with three more actors declared on its broker, on their own queue
(``floor``):

* ``noop``: an async actor that returns at once (the cost of Dramatiq, Redis and the asyncio
  bridge per message);
* ``update``: one ``UPDATE bench_floor SET n = n + 1 WHERE id = $1`` on a pooled connection of
  the project's SQLAlchemy engine, sent through the asyncpg driver (autocommit: the statement is
  its own transaction, one round trip);
* ``update_core``: the same UPDATE through a session of the project's ``Database.transaction()``
  (SQLAlchemy Core ``text()``: BEGIN, UPDATE, COMMIT), how the app's tasks talk to the database.

Per kind, ``--jobs`` messages (each on its own row) are written into the queue atomically (one
Redis MULTI), so the worker sees the whole batch at once and the enqueue costs nothing in the
measured window. The bench then polls the queue's message hash (Dramatiq deletes a message from
it on ack) and the worker's CPU (/proc): jobs/s and CPU per job are taken between 10 % and 90 %
of the batch acknowledged (the worker's fetch back-off at the start and the last stragglers are
outside the window). A warm-up batch of each kind runs first.

Standalone it starts its own durable PostgreSQL and Redis (tests/support/services.py) and
migrates (the worker refuses an out-of-date schema); ``bench/route.py`` calls ``measure()`` with
its own servers, in the same run as the pipeline it compares against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/floor.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

QUEUE = "floor"
NAMESPACE = "dramatiq"  # Dramatiq's Redis key prefix (RedisBroker's default namespace)
KINDS = ("noop", "update", "update_core")
TABLE = "bench_floor"
UPDATE_SQL = f"UPDATE {TABLE} SET n = n + 1 WHERE id = $1"
DB_NAME = "dropship_floor"


# ------------------------------------------------------------------------ pure helpers


@dataclass(frozen=True)
class Sample:
    """One poll: seconds (monotonic), messages not yet acknowledged, worker CPU seconds."""

    t: float
    left: int
    cpu: float


def window(samples: Sequence[Sample], n: int, lo: float = 0.1, hi: float = 0.9) -> dict[str, Any]:
    """Jobs/s and CPU per job between the first polls at which ``lo`` and ``hi`` of the ``n``
    jobs were acknowledged. Falls back to the first and last poll when the window holds fewer
    than two polls (a batch done between two polls)."""
    done = [(s.t, n - s.left, s.cpu) for s in samples]
    a = next((i for i, d in enumerate(done) if d[1] >= lo * n), 0)
    b = next((i for i, d in enumerate(done) if d[1] >= hi * n), len(done) - 1)
    if b <= a:
        a, b = 0, len(done) - 1
    (t0, d0, c0), (t1, d1, c1) = done[a], done[b]
    jobs = d1 - d0
    return {
        "jobs_in_window": jobs,
        "window_s": round(t1 - t0, 4),
        "jobs_per_s": jobs / (t1 - t0) if t1 > t0 else 0.0,
        "cpu_us_per_job": (c1 - c0) / jobs * 1e6 if jobs else 0.0,
        "cores": (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0,
    }


# ----------------------------------------------------------------- the worker process


def _declare_floor_actors(broker: Any) -> None:
    import dramatiq
    from sqlalchemy import text

    from workers.broker import RUNTIME

    async def noop(i: int) -> None:
        return None

    async def update(i: int) -> None:
        ctx = RUNTIME.context()
        async with ctx.db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(UPDATE_SQL, i)  # type: ignore[union-attr]

    core_sql = text(f"UPDATE {TABLE} SET n = n + 1 WHERE id = :id")

    async def update_core(i: int) -> None:
        ctx = RUNTIME.context()
        async with ctx.db.transaction() as session:
            await session.execute(core_sql, {"id": i})

    for fn in (noop, update, update_core):
        dramatiq.actor(fn, actor_name=f"floor.{fn.__name__}", queue_name=QUEUE, broker=broker)


def worker_main() -> None:
    """``python -m bench.floor --worker``: ``dropship worker``'s own ``run_worker`` with the
    floor actors declared on the broker it builds (and the configuration from the environment,
    as ``dropship worker`` reads it)."""
    import workers.runtime as runtime
    from app.logging import configure_logging
    from app.settings import Settings
    from workers.broker import build_broker

    def build_with_floor(settings: Settings) -> Any:
        broker = build_broker(settings)
        _declare_floor_actors(broker)
        return broker

    runtime.build_broker = build_with_floor  # type: ignore[assignment]
    settings = Settings()
    configure_logging(settings)
    print(f"floor worker: {settings.worker_threads} threads", flush=True)
    asyncio.run(runtime.run_worker(settings))


# -------------------------------------------------------------------------- measuring


def _push(client: Any, kind: str, ids: range) -> None:
    """Write the messages exactly as RedisBroker.enqueue does (message in the queue's hash,
    its id on the list), all in one MULTI: the worker sees the whole batch at once."""
    from dramatiq import Message

    pipe = client.pipeline(transaction=True)
    for i in ids:
        rid = str(uuid.uuid4())
        msg: Message[Any] = Message(
            queue_name=QUEUE,
            actor_name=f"floor.{kind}",
            args=(i,),
            kwargs={},
            options={"redis_message_id": rid},
        )
        pipe.hset(f"{NAMESPACE}:{QUEUE}.msgs", rid, msg.encode())
        pipe.rpush(f"{NAMESPACE}:{QUEUE}", rid)
    pipe.execute()


def _worker_cpu(pid: int) -> float:
    from bench.ingest import _cpu, _tree

    return sum(_cpu(_tree(pid)).values())


def run_batch(
    client: Any, proc: subprocess.Popen[bytes], kind: str, n: int, timeout: float = 120.0
) -> dict[str, Any]:
    """Push ``n`` jobs of ``kind`` and poll until the worker acknowledged every one."""
    key = f"{NAMESPACE}:{QUEUE}.msgs"
    _push(client, kind, range(1, n + 1))
    t_start = time.monotonic()
    samples = []
    while True:
        left = int(client.hlen(key))
        samples.append(Sample(time.monotonic(), left, _worker_cpu(proc.pid)))
        if left == 0:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"floor worker exited with {proc.returncode}")
        if time.monotonic() - t_start > timeout:
            raise RuntimeError(f"floor {kind}: {left} of {n} jobs left after {timeout:g} s")
        time.sleep(0.01)
    out = window(samples, n)
    out["total_s"] = round(samples[-1].t - t_start, 3)
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def measure(
    psql: Any,
    env: dict[str, str],
    redis_url: str,
    *,
    threads: int,
    jobs: int,
    log: Path,
    kinds: Sequence[str] = KINDS,
    warmup: int = 300,
) -> dict[str, Any]:
    """Start a floor worker with ``env`` (the project's DROPSHIP_* settings), run each kind, stop
    it. ``psql(sql)`` runs SQL in the worker's database (creates the table it updates)."""
    import redis

    psql(
        f"DROP TABLE IF EXISTS {TABLE};"
        f" CREATE TABLE {TABLE} (id int PRIMARY KEY, n bigint NOT NULL);"
        f" INSERT INTO {TABLE} SELECT g, 0 FROM generate_series(1, {max(jobs, warmup)}) g"
    )
    psql(f"VACUUM ANALYZE {TABLE}")
    client = redis.Redis.from_url(redis_url)
    client.delete(f"{NAMESPACE}:{QUEUE}", f"{NAMESPACE}:{QUEUE}.msgs")
    wenv = dict(env, DROPSHIP_WORKER_THREADS=str(threads))
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--worker"],
            cwd=REPO,
            env=dict(wenv, PYTHONPATH=str(REPO)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    results: dict[str, Any] = {"threads": threads, "jobs": jobs}
    try:
        for kind in kinds:
            # The first warm-up batch also waits for the worker to start.
            run_batch(client, proc, kind, warmup)
            if "idle_cores" not in results:
                # What the worker burns with nothing to do (consumers polling every queue, the
                # relay's and the scheduler's polls): part of every job's CPU in the window.
                c0, t0 = _worker_cpu(proc.pid), time.monotonic()
                time.sleep(2.0)
                results["idle_cores"] = (_worker_cpu(proc.pid) - c0) / (time.monotonic() - t0)
            results[kind] = run_batch(client, proc, kind, jobs)
            print(
                f"  floor {kind:<12} {results[kind]['jobs_per_s']:8.0f} jobs/s "
                f"{results[kind]['cpu_us_per_job']:8.0f} µs CPU/job",
                flush=True,
            )
    finally:
        _stop(proc)
        client.close()
    return results


def print_floor(results: dict[str, Any]) -> None:
    print(f"\nfloor: one worker process, {results['threads']} threads, {results['jobs']} jobs/kind")
    print(f"  idle worker: {results.get('idle_cores', 0):.3f} cores")
    print(f"  {'job':<14}{'jobs/s':>10}{'µs CPU/job':>12}{'worker cores':>14}")
    for kind in KINDS:
        if kind in results:
            r = results[kind]
            print(
                f"  {kind:<14}{r['jobs_per_s']:>10.0f}{r['cpu_us_per_job']:>12.0f}"
                f"{r['cores']:>14.2f}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--jobs", type=int, default=4000, help="jobs per kind (measured batch)")
    p.add_argument("--worker-threads", type=int, default=8)
    p.add_argument("--kinds", default=",".join(KINDS))
    args = p.parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    from app import migrate
    from bench.ingest import PG_EXTRA, RESULTS, _git_state, _shown, server_env
    from tests.support import services as svc

    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        p.error(f"unknown kind(s) {', '.join(sorted(unknown))}; one of {', '.join(KINDS)}")
    code = _git_state()
    print(f"code: commit {code['commit']}", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="dropship-floor-") as tmp_name,
        svc.postgres(durable=True, extra=PG_EXTRA) as pg,
        svc.redis() as rds,
    ):
        tmp = Path(tmp_name)
        pg.psql(f"CREATE DATABASE {DB_NAME}")
        url = pg.url(DB_NAME)
        migrate.upgrade(url)
        env = server_env(url, rds.url, tmp / "var", 0, {})
        results = measure(
            lambda sql: pg.psql(sql, DB_NAME),
            env,
            rds.url,
            threads=args.worker_threads,
            jobs=args.jobs,
            log=tmp / "floor-worker.log",
            kinds=kinds,
        )
    print_floor(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"floor-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"code": code, "cpus": os.cpu_count(), **results}, indent=2))
    print(f"results: {_shown(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
