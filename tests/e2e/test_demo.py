"""`prepay demo` as a newcomer runs it: console up within 30 s, a reading and a deduction
within the following 60 s, clean shutdown on Ctrl-C; and the ingest fuzz corpus published
to its embedded broker stops nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from cloud.embedded import free_port
from cloud.mqtt import client
from contract.mqtt import (
    DownKind,
    Reading,
    Receipt,
    ReceiptStatus,
    TelemetryBatch,
    Topics,
    UpKind,
    dump,
)
from tests.conftest import _as_url
from tests.integration.test_ingest_fuzz import REJECTED_FIELDS, corpus

pytestmark = pytest.mark.e2e


@pytest.fixture
def demo_env(admin_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREPAY_")}
    env["PREPAY_DATA_DIR"] = str(tmp_path)
    real_db = os.environ.get("PREPAY_DATABASE_URL") or os.environ.get("DATABASE_URL")
    name = f"prepay_demo_{uuid.uuid4().hex[:8]}"
    if real_db:  # a database of its own on the real server
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        env["DATABASE_URL"] = _as_url(admin_url, name)
    yield env
    if real_db:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_demo_serves_console_then_deducts_and_stops_cleanly(demo_env: dict[str, str]) -> None:
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud.cli", "demo", "--port", str(port)],
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        console_s = _until(lambda: httpx.get(f"{base}/console/login").status_code == 200, 30)
        assert console_s is not None, "console not serving within 30 s"
        console_at = time.monotonic() - started
        tok = httpx.post(
            f"{base}/api/v1/auth/token",
            json={"tenant": "demo", "username": "admin", "password": "demo-admin"},
        ).json()["access_token"]
        auth = {"authorization": f"Bearer {tok}"}

        def deducted() -> bool:
            points = httpx.get(f"{base}/api/v1/service-points", headers=auth).json()
            noodles = next(p for p in points if p["account"] == "A000001")
            return noodles["last_reading_at"] is not None and Decimal(noodles["balance"]) < Decimal(
                "1.50"
            )

        deduction_s = _until(deducted, 60)
        assert deduction_s is not None, "no reading and deduction within 60 s of the console"
        print(
            f"\ndemo: console after {console_at:.1f} s, first deduction {deduction_s:.1f} s later"
        )
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Stopped cleanly." in out
    assert "property group: demo" in out


def _until(cond: object, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if cond():  # type: ignore[operator]
                return time.monotonic() - t0
        except (httpx.HTTPError, StopIteration, KeyError):
            pass
        time.sleep(0.5)
    return None


def test_demo_survives_the_fuzz_corpus_on_its_embedded_broker(demo_env: dict[str, str]) -> None:
    """Issue 22, item 5: the ingest fuzz corpus (tests/integration/test_ingest_fuzz.py)
    published to the demo's own broker (amqtt, embedded: no MQTT_URL) on the demo gateway's
    topics; afterwards the process is still running, a good batch behind the corpus is
    stored and receipted, the batches that named themselves got a rejected receipt, the
    simulated meters' readings are still stored, and the demo stops cleanly."""
    env = {k: v for k, v in demo_env.items() if k != "MQTT_URL"}  # the embedded broker
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud.cli", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    # drained in a thread: the rejections are logged, and a full pipe would stall the demo
    drain = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    drain.start()
    try:
        broker = _until(lambda: _broker_url(lines), 30)
        assert broker is not None, "the demo named no broker within 30 s:\n" + "".join(lines)
        url = _broker_url(lines)
        assert url is not None
        receipts = asyncio.run(_publish_corpus(url, "prepay", DEMO_GATEWAY))
        assert proc.poll() is None, "the demo stopped:\n" + "".join(lines)
        good = receipts[500]
        assert good.status is ReceiptStatus.STORED and good.quarantined == 1, good
        for seq, field in REJECTED_FIELDS.items():
            r = receipts.get(seq)
            assert r is not None and r.status is ReceiptStatus.REJECTED, (seq, r)
            assert r.detail.startswith(f"invalid: {field}"), r.detail
        base = f"http://127.0.0.1:{port}"
        tok = httpx.post(
            f"{base}/api/v1/auth/token",
            json={"tenant": "demo", "username": "admin", "password": "demo-admin"},
        ).json()["access_token"]
        auth = {"authorization": f"Bearer {tok}"}
        after = datetime.now(UTC)

        def meters_still_read() -> bool:  # the agent's own readings, behind the corpus
            points = httpx.get(f"{base}/api/v1/service-points", headers=auth).json()
            latest = [p["last_reading_at"] for p in points if p["last_reading_at"]]
            return any(datetime.fromisoformat(t) > after for t in latest)

        assert _until(meters_still_read, 20) is not None, "no reading stored after the corpus"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        drain.join(timeout=5)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "Stopped cleanly." in out
    assert "Traceback" not in out, out


DEMO_GATEWAY = "gw-demo-1"


def _broker_url(lines: list[str]) -> str | None:
    for line in list(lines):
        if line.strip().startswith("Broker") and "mqtt://" in line:
            return line.split()[-1]
    return None


async def _publish_corpus(url: str, prefix: str, gw: str) -> dict[int, Receipt]:
    """Publish the corpus and a good batch (a reading of a meter not registered: stored in
    quarantine, so the simulated meters' registers are left alone); the receipts by seq."""
    topics = Topics(prefix)
    receipts: dict[int, Receipt] = {}
    listening, good_receipted = asyncio.Event(), asyncio.Event()

    async def listen() -> None:
        async with client(url, "fz-demo-receipts") as mqtt:
            await mqtt.subscribe(topics.down(gw, DownKind.RECEIPT), qos=1)
            listening.set()
            async for m in mqtt.messages:
                r = Receipt.model_validate_json(bytes(m.payload))  # type: ignore[arg-type]
                if r.boot_id == "fz":
                    receipts[r.seq] = r
                    if r.seq == 500:
                        good_receipted.set()

    listener = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(listening.wait(), 10)
        async with client(url, "fz-demo-publisher") as pub:
            for kind, payload in corpus(gw):
                await pub.publish(f"{prefix}/gw/{gw}/up/{kind}", payload, qos=1)
            now = datetime.now(UTC)
            good = TelemetryBatch(
                gateway=gw,
                boot_id="fz",
                seq=500,
                sent_at=now,
                readings=(Reading(device="fz-meter", measured_at=now, total=None),),
            )
            await pub.publish(topics.up(gw, UpKind.TELEMETRY), dump(good), qos=1)
        await asyncio.wait_for(good_receipted.wait(), 30)
        return receipts
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
