"""Ingest benchmark: readings/s published to the broker, stored and rated with balances
updated — and, in the same run, the raw COPY rate of the same rows.

Not part of the test suite (no timed assertions). Run explicitly, against the real
PostgreSQL and broker:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    MQTT_URL=mqtt://127.0.0.1:1883 \\
    .venv/bin/python -m tests.bench.bench_ingest --seconds 300 --workers 2

It creates a scratch database (dropped at the end), seeds ``--gateways`` property groups of
``--meters`` meters each, starts ``--workers`` ingest processes on one shared subscription,
and publishes every gateway's polls (one message = one poll of all its meters, or
``--polls`` polls per message) as fast as the workers take them (at most ``--window``
messages ahead). A reading counts when its batch's transaction — stored, rated, wallets
updated, usage windows journaled, supply steered — has committed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import paho.mqtt.client as paho
import psycopg

from cloud.check import check
from cloud.control.service import CommandTiming
from cloud.db import Database, migrate
from cloud.ingest.consumer import IngestConsumer
from cloud.ingest.service import IngestService
from cloud.registry.service import GroupSpec, MeterSpec, seed_group
from contract.mqtt import BrokerAddress, Receipt, Topics, UpKind
from tests.bench.scratch import ScratchDatabase

T_STEP = timedelta(minutes=1)


async def _seed(url: str, gateways: int, meters: int) -> list[tuple[str, uuid.UUID, list[str]]]:
    db = Database.connect(url, None, "prepay_app")
    out = []
    try:
        for g in range(gateways):
            tag = uuid.uuid4().hex[:6]
            spec = GroupSpec(
                slug=f"bench{g}{tag}",
                name=f"Bench {g}",
                gateway_code=f"gw-bench-{g}-{tag}",
                unit_price=Decimal("0.8765"),
                meters=[
                    MeterSpec(f"m{i}", i, f"Shop {i}", Decimal("1000000.00"))
                    for i in range(1, meters + 1)
                ],
            )
            seeded = await seed_group(db, spec)
            out.append((spec.gateway_code, seeded.tenant_id, [m.key for m in spec.meters]))
    finally:
        await db.dispose()
    return out


def _payload(gw: str, keys: list[str], step0: int, polls: int, t0: datetime, seq: int) -> bytes:
    """A telemetry batch as the gateway agent writes it (decimals as strings). Meter ``n``'s
    register grows by ``(5 + n % 17)`` hundredths of a kWh per poll; integer arithmetic,
    so the publisher (on the same two cores) costs the run little."""
    parts = []
    for p in range(polls):
        step = step0 + p
        at = (t0 + step * T_STEP).isoformat()
        for n, key in enumerate(keys):
            hundredths = (1000 + n) * 100 + step * (5 + n % 17)
            parts.append(
                f'{{"device":"{key}","channel":1,"measured_at":"{at}",'
                f'"total":"{hundredths // 100}.{hundredths % 100:02d}",'
                f'"voltage":"229.8","current":"{_CURRENTS[n % 40]}","power":"1.250","supply":"on"}}'
            )
    return (
        f'{{"v":1,"gateway":"{gw}","boot_id":"bench","seq":{seq},"sent_at":"{t0.isoformat()}",'
        f'"readings":[{",".join(parts)}]}}'
    ).encode()


_CURRENTS = [f"{i / 10}" for i in range(40)]


def _worker(
    url: str, mqtt_url: str, prefix: str, group: str, name: str, done: object, ready: object
) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)

    async def run() -> None:
        db = Database.connect(url, None, "prepay_app")
        consumer = IngestConsumer(
            IngestService(db, CommandTiming()), mqtt_url, Topics(prefix), group, name
        )
        original = consumer.handle_many

        async def counted(messages: Sequence[tuple[str, bytes]]) -> list[Receipt | None]:
            receipts = await original(messages)
            with done.get_lock():  # type: ignore[attr-defined]
                done.value += len(messages)  # type: ignore[attr-defined]
            return receipts

        consumer.handle_many = counted  # type: ignore[method-assign]

        async def subscribed() -> None:
            await consumer.ready.wait()
            with ready.get_lock():  # type: ignore[attr-defined]
                ready.value += 1  # type: ignore[attr-defined]

        announce = asyncio.create_task(subscribed())
        try:
            await consumer.run()
        finally:
            announce.cancel()
            await db.dispose()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def _raw_copy_rate(url: str, rows: int) -> float:
    """COPY rows like the ingest's (every channel, a minute apart) into an empty twin of the
    reading table (its indexes, no RLS, no rating) from this Python client: the ceiling the
    ingest is measured against."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE reading_raw (LIKE reading INCLUDING ALL)")
        channels = [
            r[0] for r in conn.execute("SELECT id FROM channel ORDER BY tenant_id, id").fetchall()
        ]
        tenants = dict(conn.execute("SELECT id, tenant_id FROM channel").fetchall())
        conn.commit()
        t0 = datetime.now(UTC) - timedelta(days=30)
        now = datetime.now(UTC)
        batch, done, step = 10_000, 0, 0
        started = time.perf_counter()
        while done < rows:
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY reading_raw (channel_id, measured_at, tenant_id, received_at, total, "
                    "tou, voltage, current, power, supply_on, meter_balance) FROM STDIN"
                ) as copy,
            ):
                for _ in range(batch // len(channels) or 1):
                    at = t0 + step * T_STEP
                    for n, ch in enumerate(channels):
                        copy.write_row(
                            (
                                ch,
                                at,
                                tenants[ch],
                                now,
                                Decimal(1000 + n) + Decimal(step * 7) / 100,
                                None,
                                Decimal("229.8"),
                                Decimal(n % 40) / 10,
                                Decimal("1.250"),
                                True,
                                None,
                            )
                        )
                        done += 1
                    step += 1
            conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE reading_raw")
        conn.commit()
    return done / elapsed


def _settle(url: str) -> None:
    """Start a timed phase on the same footing as the others: no autovacuum of this
    database running (waited for, up to 2 minutes) and dirty buffers written out."""
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'autovacuum worker'"
            ).fetchone()
            if not row or not row[0]:
                break
            time.sleep(1)
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass


def _wal_lsn(url: str) -> int:
    """The server's WAL position in bytes (all databases: a quiet server is assumed)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="publishing time (default 60)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--gateways", type=int, default=4)
    ap.add_argument("--meters", type=int, default=1000, help="meters per gateway")
    ap.add_argument("--polls", type=int, default=1, help="polls per message")
    ap.add_argument("--window", type=int, default=16, help="messages in flight at most")
    ap.add_argument(
        "--copy-rows",
        type=int,
        default=1_000_000,
        help="rows of the raw COPY before the ingest (default 1,000,000); after it, as many "
        "rows as the ingest stored are copied raw too, and the ratio is to that rate",
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args(argv)

    scratch = ScratchDatabase.create()
    url, mqtt_url = scratch.url, scratch.mqtt_url
    procs: list[mp.Process] = []
    try:
        migrate(url)
        t = time.perf_counter()
        seeded = asyncio.run(_seed(url, args.gateways, args.meters))
        print(f"seeded {args.gateways} x {args.meters} meters in {time.perf_counter() - t:.1f}s")

        copy_before = _raw_copy_rate(url, args.copy_rows)
        print(f"raw COPY: {copy_before:,.0f} rows/s ({args.copy_rows:,} rows)")

        prefix = f"bench{uuid.uuid4().hex[:6]}"
        topics = Topics(prefix)
        ctx = mp.get_context("spawn")
        done = ctx.Value("q", 0)
        ready = ctx.Value("q", 0)
        for w in range(args.workers):
            p = ctx.Process(
                target=_worker, args=(url, mqtt_url, prefix, "bench", f"{prefix}-w{w}", done, ready)
            )
            p.start()
            procs.append(p)
        # A shared subscription with no subscriber yet drops what is published to it.
        deadline = time.monotonic() + 120
        while ready.value < args.workers:
            if time.monotonic() > deadline or not all(p.is_alive() for p in procs):
                raise SystemExit("ingest workers did not subscribe")
            time.sleep(0.1)

        _settle(url)
        addr = BrokerAddress.parse(mqtt_url)
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-pub")
        if addr.username:
            pub.username_pw_set(addr.username, addr.password)
        pub.max_inflight_messages_set(args.window * 2)
        pub.connect(addr.host, addr.port)
        pub.loop_start()

        per_msg = args.meters * args.polls
        steps_needed = int(args.seconds * 200_000 / (per_msg * args.gateways) + 10) * args.polls
        t0 = (datetime.now(UTC) - steps_needed * T_STEP).replace(second=0, microsecond=0)
        wal0 = _wal_lsn(url)
        published = 0
        step = 0
        samples: list[tuple[float, int]] = []
        started = time.perf_counter()
        stop_at = started + args.seconds
        last_sample = started
        while time.perf_counter() < stop_at:
            for gw, _tenant, keys in seeded:
                while published - done.value >= args.window:
                    time.sleep(0.0005)
                payload = _payload(gw, keys, step, args.polls, t0, step)
                pub.publish(topics.up(gw, UpKind.TELEMETRY), payload, qos=1)
                published += 1
            step += args.polls
            now = time.perf_counter()
            if now - last_sample >= 5:
                samples.append((now - started, done.value * per_msg))
                rate = (samples[-1][1] - (samples[-2][1] if len(samples) > 1 else 0)) / (
                    now - last_sample
                )
                print(
                    f"  t={now - started:6.1f}s  readings done {samples[-1][1]:>10,}  {rate:,.0f}/s"
                )
                last_sample = now
        while done.value < published:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        total = published * per_msg
        wal = _wal_lsn(url) - wal0
        rate = total / elapsed
        pub.loop_stop()
        pub.disconnect()
        rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(samples)]
        print(
            f"ingest: {total:,} readings in {elapsed:.1f}s = {rate:,.0f} readings/s "
            f"(workers={args.workers}, {args.gateways} gateways x {args.meters} meters, "
            f"{per_msg} readings/message)"
        )
        if rates:
            print(
                f"  5s-interval rates: min {min(rates):,.0f}  "
                f"median {statistics.median(rates):,.0f}  max {max(rates):,.0f}"
            )
        print(f"WAL: {wal / total:,.0f} bytes/reading ({wal / elapsed / 2**20:.1f} MiB/s)")
        # The same number of rows as the ingest stored, into a table as empty as `reading`
        # was, over about as long: the ratio's ceiling. (The short COPY above varies by a
        # quarter from run to run on a shared machine.)
        _settle(url)
        copy_rate = _raw_copy_rate(url, total)
        print(f"raw COPY of as many rows after the ingest: {copy_rate:,.0f} rows/s")
        print(
            f"ratio to raw COPY: {rate / copy_rate:.2f} "
            f"(to the {args.copy_rows:,}-row COPY before the ingest: {rate / copy_before:.2f})"
        )

        async def verify() -> None:
            db = Database.connect(url, None, "prepay_app")
            try:
                report = await check(db, [s[1] for s in seeded])
                print(
                    f"prepay check: {'OK' if report.ok else report.breaches[:5]} "
                    f"({report.entries} entries)"
                )
            finally:
                await db.dispose()

        asyncio.run(verify())
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM reading").fetchone()
            print(f"readings stored: {stored[0] if stored else 0:,}")
    finally:
        for p in procs:
            p.terminate()
            p.join(5)
        if args.keep:
            print(f"kept database {scratch.name}")
        else:
            scratch.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
