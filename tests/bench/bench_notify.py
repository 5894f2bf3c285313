"""Notification delivery: low-balance events written through the real control path
(``record_events``: the ``control_event`` rows and their outbox rows in one transaction),
delivered to the Twilio stand-in (its own process, no status callbacks) by two
``prepay notify`` worker processes.

Phase 1, throughput: ``--events`` events committed as fast as 100-event transactions go,
the workers running throughout: messages/s from the first commit to the last message
the stand-in accepted. Phase 2, latency: ``--paced`` events at ``--rate`` a second
(below capacity, as events arrive in life): event committed → provider accepted, p50/p99.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_notify --events 10000 --paced 3000 --rate 150
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa

from cloud.control.policy import EventKind, PolicyEvent
from cloud.control.service import record_events
from cloud.db import Database, migrate
from cloud.embedded import free_port
from cloud.registry.service import GroupSpec, MeterSpec, seed_group
from tests.bench.scratch import ScratchDatabase

TOKEN = "bench-auth-token-0123456789abcdef"


async def _points(db: Database, tenant: uuid.UUID, n: int) -> list[tuple[uuid.UUID, str]]:
    """``n`` customers, each with an account, a wallet and a point at the seeded site,
    made in bulk (set-based SQL); returns (point, phone)."""
    async with db.tenant(tenant) as conn:
        tmpl = (
            await conn.execute(sa.text("SELECT site_id, tariff_id FROM service_point LIMIT 1"))
        ).one()
        await conn.execute(
            sa.text(
                "CREATE TEMP TABLE bench_ids ON COMMIT DROP AS SELECT g AS i, "
                "gen_random_uuid() AS c, gen_random_uuid() AS a, gen_random_uuid() AS w, "
                "gen_random_uuid() AS p FROM generate_series(1, :n) g"
            ),
            {"n": n},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO customer (id, tenant_id, name, phone, created_at) "
                "SELECT c, :t, '商户' || i, '+86139' || lpad(i::text, 8, '0'), now() FROM bench_ids"
            ),
            {"t": tenant},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO ledger_account (id, tenant_id, code, kind, name, normal_side, "
                "balance, unposted) SELECT w, :t, 'wallet:' || a, 'wallet', 'Wallet B' || i, "
                "'credit', 4.50, 0 FROM bench_ids"
            ),
            {"t": tenant},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO account (id, tenant_id, customer_id, number, wallet_id, status, "
                "opened_at) SELECT a, :t, c, 'B' || lpad(i::text, 7, '0'), w, 'active', now() "
                "FROM bench_ids"
            ),
            {"t": tenant},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO service_point (id, tenant_id, site_id, account_id, tariff_id, name, "
                "utility, control_mode, credit_limit, emergency_credit, alarm1, alarm2, "
                "common_area) SELECT p, :t, :s, a, :tariff, 'B栋-' || i || ' 电', "
                "'electricity', 'cloud', 0, 0, 5, 2, false FROM bench_ids"
            ),
            {"t": tenant, "s": tmpl.site_id, "tariff": tmpl.tariff_id},
        )
        rows = await conn.execute(
            sa.text("SELECT p, '+86139' || lpad(i::text, 8, '0') FROM bench_ids ORDER BY i")
        )
        return [(r[0], r[1]) for r in rows]


async def _events(
    db: Database,
    tenant: uuid.UUID,
    points: list[tuple[uuid.UUID, str]],
    rate: float | None,
    committed: dict[str, float],
) -> float:
    """Record one low_balance_1 event per point, 100 (or rate/10) per transaction; keeps
    each phone's commit time. Returns the first commit's time."""
    chunk = 100 if rate is None else max(1, int(rate / 10))
    first = 0.0
    start = time.time()
    event = PolicyEvent(EventKind.LOW_BALANCE_1, "¥4.50 below ¥5.00")
    for k in range(0, len(points), chunk):
        part = points[k : k + chunk]
        if rate is not None:  # paced: this chunk's turn
            wait = start + k / rate - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        async with db.tenant(tenant) as conn:
            await record_events(
                conn,
                tenant,
                [(p, event, Decimal("4.50")) for p, _ in part],
                datetime.now(UTC),
                "policy",
            )
        t = time.time()
        first = first or t
        for _, phone in part:
            committed[phone] = t
    return first


def _accepted(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/_standin/messages", timeout=60) as resp:
        body = json.load(resp)
    out: dict[str, float] = {}
    for m in body["messages"]:
        if m["to"] in out:
            raise AssertionError(f"{m['to']} got two messages")
        out[m["to"]] = datetime.fromisoformat(m["at"]).timestamp()
    return out


async def _wait_for(url: str, phones: set[str], timeout: float) -> dict[str, float]:
    deadline = time.time() + timeout
    while True:
        got = await asyncio.to_thread(_accepted, url)
        if phones <= set(got) or time.time() > deadline:
            return got
        await asyncio.sleep(0.5)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(events: int, paced: int, rate: float, workers: int) -> None:
    scratch = ScratchDatabase.create()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        migrate(scratch.url)
        db = Database.connect(scratch.url, None, "prepay_app")
        tag = uuid.uuid4().hex[:8]
        g = await seed_group(
            db,
            GroupSpec(
                slug=f"n{tag}",
                name="滨江物业集团",
                gateway_code=f"gw-{tag}",
                meters=[MeterSpec("m1", 1, "商铺", Decimal("10"))],
            ),
        )
        async with db.tenant(g.tenant_id) as conn:  # outside quiet hours, no hourly limit
            await conn.execute(sa.text("UPDATE site SET quiet_start = NULL, quiet_end = NULL"))
        points = await _points(db, g.tenant_id, events + paced)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREPAY_")}
        procs.append(
            subprocess.Popen(  # noqa: ASYNC220 - started once, before the run
                [
                    sys.executable,
                    "-m",
                    "standins.twilio",
                    "--port",
                    str(port),
                    "--token",
                    TOKEN,
                    "--no-callbacks",
                ],
                env=env,
            )
        )
        env.update(
            DATABASE_URL=scratch.url,
            PREPAY_NOTIFY_SMS_PROVIDER="twilio",
            PREPAY_NOTIFY_TWILIO_AUTH_TOKEN=TOKEN,
            PREPAY_NOTIFY_TWILIO_BASE_URL=url,
        )
        for _ in range(workers):
            procs.append(
                subprocess.Popen(  # noqa: ASYNC220 - started once, before the run
                    [sys.executable, "-m", "cloud.cli", "notify"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        await asyncio.sleep(3)  # the workers connect and LISTEN
        committed: dict[str, float] = {}
        load0 = os.getloadavg()
        first = await _events(db, g.tenant_id, points[:events], None, committed)
        written = time.time()
        phones = {p for _, p in points[:events]}
        got = await _wait_for(url, phones, 600)
        done = [got[p] for p in phones if p in got]
        span = max(done) - first
        lat = [got[p] - committed[p] for p in phones if p in got]
        print(
            f"phase 1: {len(done)}/{events} delivered, events written in "
            f"{written - first:.1f} s; first commit → last accepted {span:.1f} s = "
            f"{len(done) / span:.0f} messages/s with {workers} workers; latency under that "
            f"backlog p50 {statistics.median(lat):.2f} s, p99 {_pct(lat, 0.99):.2f} s"
        )
        if paced:
            committed2: dict[str, float] = {}
            await _events(db, g.tenant_id, points[events:], rate, committed2)
            phones2 = {p for _, p in points[events:]}
            got = await _wait_for(url, phones | phones2, 120)
            lat2 = [got[p] - committed2[p] for p in phones2 if p in got]
            print(
                f"phase 2: {len(lat2)}/{paced} delivered at {rate:.0f} events/s; "
                f"event committed → provider accepted p50 {statistics.median(lat2) * 1000:.0f} ms, "
                f"p99 {_pct(lat2, 0.99) * 1000:.0f} ms, max {max(lat2) * 1000:.0f} ms"
            )
        async with db.tenant(g.tenant_id) as conn:
            counts = dict(
                (
                    await conn.execute(
                        sa.text("SELECT status, count(*) FROM notification GROUP BY status")
                    )
                ).all()
            )
        print(f"notification rows by status: {counts}; total accepted by the stand-in: {len(got)}")
        print(f"load average before {load0}, after {os.getloadavg()}")
        await db.dispose()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        scratch.drop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--paced", type=int, default=3_000)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.paced, args.rate, args.workers))
