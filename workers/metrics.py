"""The workers' Prometheus metrics: job outcomes and durations per task, and queue depths.

Jobs are counted by a Dramatiq middleware (every actor, whatever its body does). Queue depths
are read when scraped: ``LLEN`` of each Dramatiq list in Redis (ready, delayed) and ``ZCARD`` of
its dead letters, or the in-process stub's queue sizes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from prometheus_client import Counter, Histogram
from redis import Redis

from app.jobs.task import all_queues

JOBS = Counter(
    "dropship_jobs",
    "Jobs run, by task and outcome (ok; error: raised, retried if transient; retry: asked "
    "to run again later; dead: given up by the broker, in its dead letters; skipped).",
    ["task", "outcome"],
)
JOB_SECONDS = Histogram(
    "dropship_job_duration_seconds",
    "How long a job ran, by task.",
    ["task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

#: ``(queue, state) -> messages``; state: ``ready`` (waiting), ``delayed`` (a retry's backoff,
#: an eta), ``dead`` (Dramatiq's dead letters, kept 7 days).
Depths = dict[tuple[str, str], int]


class JobMetrics(dramatiq.Middleware):
    """Count and time every job (per task: the registry bounds the labels)."""

    def __init__(self) -> None:
        # By delivery, not by message id: a job the relay sent twice keeps its outbox id.
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()

    def before_process_message(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._started[id(message)] = time.perf_counter()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        with self._lock:
            started = self._started.pop(id(message), None)
        if started is not None:
            JOB_SECONDS.labels(message.actor_name).observe(time.perf_counter() - started)
        if exception is None:
            outcome = "ok"
        elif isinstance(exception, dramatiq.Retry):
            outcome = "retry"
        else:
            outcome = "error"
        JOBS.labels(message.actor_name, outcome).inc()

    def after_skip_message(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._started.pop(id(message), None)
        JOBS.labels(message.actor_name, "skipped").inc()

    def after_nack(self, broker: Any, message: Any) -> None:
        JOBS.labels(message.actor_name, "dead").inc()


def broker_depths(broker: dramatiq.Broker, queues: Iterable[str] | None = None) -> Depths:
    """The depth of each queue of ``broker`` (every queue a task can be on by default)."""
    names = list(queues or all_queues())
    if isinstance(broker, StubBroker):
        out: Depths = {}
        for q in names:
            ready = broker.queues.get(q)
            delayed = broker.queues.get(f"{q}.DQ")
            out[(q, "ready")] = ready.qsize() if ready is not None else 0
            out[(q, "delayed")] = delayed.qsize() if delayed is not None else 0
            out[(q, "dead")] = len(broker.dead_letters_by_queue.get(q, ()))
        return out
    if isinstance(broker, RedisBroker):
        return redis_depths(broker.client, names, namespace=broker.namespace)
    return {}


def redis_depths(client: Redis, queues: Iterable[str], *, namespace: str = "dramatiq") -> Depths:
    """One pipelined round trip: ``LLEN`` of each queue and of its delay queue, ``ZCARD`` of
    its dead letters."""
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for q in names:
        pipe.llen(f"{namespace}:{q}")
        pipe.llen(f"{namespace}:{q}.DQ")
        pipe.zcard(f"{namespace}:{q}.XQ")
    answers = iter(pipe.execute())
    out: Depths = {}
    for q in names:
        out[(q, "ready")] = int(next(answers))
        out[(q, "delayed")] = int(next(answers))
        out[(q, "dead")] = int(next(answers))
    return out


def depth_reader(broker: dramatiq.Broker | None, redis_url: str | None) -> Callable[[], Depths]:
    """What the API's ``/metrics`` calls for queue depths: the in-process broker's, or Redis's
    (an API process without workers has no broker of its own)."""
    if broker is not None:
        return lambda: broker_depths(broker)
    if redis_url is None:
        return dict
    client = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    return lambda: redis_depths(client, all_queues())
