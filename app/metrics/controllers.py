"""``GET /metrics``: Prometheus' text format, for the operators' scraper (not in OpenAPI).

No tenant data in it (see ``app.metrics``), so it may stay open on a private network like
``/health``; set ``DROPSHIP_METRICS_TOKEN`` to ask for ``Authorization: Bearer <token>`` when
the API is reachable from outside.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from litestar import Request, get
from litestar.exceptions import NotAuthorizedException
from litestar.response import Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.db import utcnow
from app.metrics import service
from app.services import Services

log = structlog.get_logger(__name__)

#: ``(queue, state) -> messages``, as ``app.state.queue_depths()`` reads them (the workers'
#: broker in-process, else Redis): set by ``dropship.asgi``, since ``app`` knows no broker.
QueueDepths = Callable[[], dict[tuple[str, str], int]]
#: A scrape waits this long for the database or Redis, then answers without those gauges.
SCRAPE_TIMEOUT_S = 5


class _Snapshot(Collector):
    """The gauges read for one scrape."""

    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self.families


def _process_registry() -> Any:
    # prometheus_client's own switch: ``dropship serve --workers N`` sets it so that every
    # process's counters add up whichever process answers the scrape.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


async def _gauges(request: Request[Any, Any, Any]) -> list[GaugeMetricFamily]:
    services: Services = request.app.state.services
    families: list[GaugeMetricFamily] = []
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT_S):
            async with services.db.sessionmaker() as session:
                g = await service.gauges(session, utcnow())
    except Exception as exc:
        log.warning("metrics.database_failed", error=repr(exc))
    else:
        families += [
            GaugeMetricFamily(
                "dropship_outbox_depth",
                f"Jobs committed, not yet relayed to the broker (counted up to "
                f"{service.OUTBOX_COUNT_CAP}).",
                value=g.outbox_depth,
            ),
            GaugeMetricFamily(
                "dropship_outbox_oldest_age_seconds",
                "How long the oldest due outbox job has waited for the relay.",
                value=g.outbox_oldest_age,
            ),
            GaugeMetricFamily(
                "dropship_tracking_poll_lag_seconds",
                "How long the most overdue shipment check has been due.",
                value=g.tracking_poll_lag,
            ),
        ]
        cases = GaugeMetricFamily(
            "dropship_exceptions_open",
            "Unresolved exception cases (the merchants' exceptions queue), by kind.",
            labels=["kind"],
        )
        for kind, n in sorted(g.exceptions_open.items()):
            cases.add_metric([kind], n)
        families.append(cases)
    depths: QueueDepths | None = getattr(request.app.state, "queue_depths", None)
    if depths is not None:
        try:
            async with asyncio.timeout(SCRAPE_TIMEOUT_S):
                read = await asyncio.to_thread(depths)
        except Exception as exc:
            log.warning("metrics.broker_failed", error=repr(exc))
        else:
            family = GaugeMetricFamily(
                "dropship_queue_depth",
                "Messages in each broker queue, by state (ready: waiting for a worker; "
                "delayed: a retry's backoff; dead: given up, Dramatiq's dead letters).",
                labels=["queue", "state"],
            )
            for (queue, state), n in sorted(read.items()):
                family.add_metric([queue, state], n)
            families.append(family)
    return families


def _authorize(request: Request[Any, Any, Any]) -> None:
    services: Services = request.app.state.services
    token = services.settings.metrics_token
    if token is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
        raise NotAuthorizedException("GET /metrics needs Authorization: Bearer <metrics token>")


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """This process's counters (every process's with ``--workers N``) and the gauges."""
    _authorize(request)
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_Snapshot(await _gauges(request)))
    body = generate_latest(_process_registry()) + generate_latest(snapshot)
    # The classic text format every Prometheus reads (Litestar adds the charset).
    return Response(body, media_type="text/plain; version=0.0.4")
