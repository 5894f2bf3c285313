"""`prepay demo` as a newcomer runs it: console up within 30 s, a reading and a deduction
within the following 60 s, clean shutdown on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from cloud.embedded import free_port
from tests.conftest import _as_url

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
