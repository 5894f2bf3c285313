"""`prepay ingest` and `prepay worker` serve their own Prometheus /metrics (issue 17 item 8,
issue 20): real processes, a real telemetry batch through the broker, the counters read
back over HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from cloud.db import Database
from cloud.mqtt import client
from cloud.registry.service import seed_group
from contract.mqtt import Reading, TelemetryBatch, Topics, UpKind, dump
from tests.conftest import group_spec, wait_for
from tests.e2e.test_gateway_resilience import free_port

pytestmark = pytest.mark.e2e

PREPAY = str(Path(sys.executable).with_name("prepay"))


async def _metrics(port: int) -> str:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            r = await http.get(f"http://127.0.0.1:{port}/metrics")
            return r.text if r.status_code == 200 else ""
    except httpx.HTTPError:
        return ""


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


async def test_ingest_and_worker_serve_their_own_metrics(
    db: Database, db_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    spec = group_spec(meters=1, balance="10.00")
    await seed_group(db, spec)
    ingest_port, worker_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "MQTT_URL": mqtt_url,
        "PREPAY_MQTT_PREFIX": topic_prefix,
        "PREPAY_INGEST_METRICS_PORT": str(ingest_port),
        "PREPAY_WORKER_METRICS_PORT": str(worker_port),
        "PREPAY_DATA_DIR": str(tmp_path),
    }
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 - daemons, not awaited
            [PREPAY, cmd],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"{cmd}.log").open("wb"),
        )
        for cmd in ("ingest", "worker")
    ]
    try:

        async def up() -> bool:
            return "prepay_ingest_readings_total" in await _metrics(
                ingest_port
            ) and "prepay_commands_total" in await _metrics(worker_port)

        try:  # (slow under a loaded full run: both processes import and connect first)
            await wait_for(up, 90, "both metrics endpoints")
        except AssertionError:
            for cmd in ("ingest", "worker"):
                print(cmd, (tmp_path / f"{cmd}.log").read_text()[-3000:])
            raise
        topics = Topics(topic_prefix)
        now = datetime.now(UTC)
        reading = Reading(device="m1", measured_at=now, total=Decimal("1.00"))
        batch = TelemetryBatch(
            gateway=spec.gateway_code, boot_id="b", seq=1, sent_at=now, readings=(reading,)
        )

        async def counted() -> bool:
            # (re-sent until counted: the metrics endpoint is up before the subscription;
            # a duplicate batch is a no-op)
            async with client(mqtt_url, f"metrics-test-{topic_prefix}") as mqtt:
                await mqtt.publish(
                    topics.up(spec.gateway_code, UpKind.TELEMETRY), dump(batch), qos=1
                )
            await asyncio.sleep(0.5)
            text = await _metrics(ingest_port)
            return _value(text, 'prepay_ingest_readings_total{outcome="stored"}') >= 1

        await wait_for(counted, 30, "the stored reading counted by ingest")
        text = await _metrics(ingest_port)
        assert _value(text, "prepay_ingest_lag_seconds_count") >= 1

        async def sampled() -> bool:  # (the worker samples the open commands on its start)
            return 'prepay_commands_open{state="queued"}' in await _metrics(worker_port)

        await wait_for(sampled, 60, "the worker's sample of the open commands")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        await asyncio.sleep(0)


def test_the_dashboard_queries_only_metrics_the_processes_export() -> None:
    import json
    import re

    from prometheus_client import REGISTRY

    from cloud import metrics  # noqa: F401 - registers the metrics
    from cloud.control import dispatcher  # noqa: F401
    from cloud.ingest import consumer  # noqa: F401
    from notifications import worker  # noqa: F401

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names = {m.name + suffix for m in REGISTRY.collect() for suffix in suffixes.get(m.type, ("",))}
    root = Path(__file__).resolve().parents[2]
    dash = json.loads((root / "infra" / "grafana" / "prepaycloud.json").read_text())
    used = {
        n
        for p in dash["panels"]
        for t in p["targets"]
        for n in re.findall(r"prepay_[a-z_]+", t["expr"])
    }
    assert used and used <= names, used - names
