"""Prometheus metrics of the cloud processes, and the endpoint of those without HTTP.

``prepay api`` serves ``/metrics`` itself; ``prepay ingest`` and ``prepay worker`` start a
small HTTP server of their own (``PREPAY_INGEST_METRICS_PORT``, default 9101;
``PREPAY_WORKER_METRICS_PORT``, default 9102; 0 turns it off). The dashboard over them is
``infra/grafana/prepaycloud.json``."""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from cloud.aio import raise_if_cancelled
from cloud.db import Database

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)

INGEST_LAG = Histogram(
    "prepay_ingest_lag_seconds",
    "From a telemetry batch's newest reading to its commit",
    buckets=_LATENCY_BUCKETS,
)
COMMAND_LATENCY = Histogram(
    "prepay_command_latency_seconds",
    "From a command's creation to the gateway's answer, by the state it ended in",
    ["state"],
    buckets=_LATENCY_BUCKETS,
)
COMMANDS_OPEN = Gauge("prepay_commands_open", "Commands not finished yet, by state", ["state"])
BUS_UTILISATION = Gauge(
    "prepay_bus_utilisation",
    "Share of the last heartbeat interval a gateway's bus was busy",
    ["gateway", "bus"],
)
BUS_TRANSACTIONS = Counter(
    "prepay_bus_transactions_total", "Bus transactions reported by gateways", ["outcome"]
)
GATEWAY_BACKLOG = Gauge(
    "prepay_gateway_queue_depth", "Readings and events waiting in a gateway's outbox", ["gateway"]
)


def serve(port: int, host: str, process: str) -> bool:
    """Start the process's ``/metrics`` endpoint on ``port`` (0: none). A port already in
    use is logged and the process carries on without it (its work matters more)."""
    if port == 0:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.error("%s: metrics endpoint on %s:%d not started: %s", process, host, port, exc)
        return False
    log.info("%s: metrics on http://%s:%d/metrics", process, host, port)
    return True


_OPEN = sa.text(
    "SELECT state, count(*) FROM device_command WHERE state IN ('queued', 'sent') GROUP BY state"
)


async def sample_open_commands(db: Database) -> dict[str, int]:
    """The open commands of every tenant by state, into :data:`COMMANDS_OPEN`."""
    totals = {"queued": 0, "sent": 0}
    for tenant in await db.tenant_ids():
        async with db.tenant(tenant) as conn:
            for state, n in (await conn.execute(_OPEN)).all():
                totals[state] += n
    for state, n in totals.items():
        COMMANDS_OPEN.labels(state).set(n)
    return totals


async def sample_forever(db: Database, every_s: float = 15.0) -> None:
    while True:
        try:
            await sample_open_commands(db)
        except Exception:
            raise_if_cancelled()
            log.exception("sampling the open commands failed")
        await asyncio.sleep(every_s)
