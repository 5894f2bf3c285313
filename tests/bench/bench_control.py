"""Prepaid control latency: a gateway polling simulated meters, a local broker, and the cloud
in its own processes. Two figures, each over many samples:

(a) **top-up → close ack**: from the moment ``POST /api/v1/sales`` returned 201 to the
    moment the close command's ack is committed in the cloud; with ``--via wechat`` the
    top-up is a WeChat Pay payment instead: an order made through ``/miniapp/v1/orders``,
    paid at the WeChat Pay stand-in (run by this process), and the interval starts when the
    stand-in POSTs its signed notification to the API (issue 15: target p99 ≤ 150 ms);
(b) **exhausting reading → trip ack**: from the reading that took the balance to zero —
    its ``measured_at`` on the gateway, and separately its ``received_at`` in the cloud —
    to the moment the trip's ack is committed.

Not part of the test suite (no timed assertions). Run explicitly, against the real
PostgreSQL and broker:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    MQTT_URL=mqtt://127.0.0.1:1883 \\
    .venv/bin/python -m tests.bench.bench_control --meters 64 --buses 8 --rounds 4
    .venv/bin/python -m tests.bench.bench_control --via wechat --topup 1.00 --rounds 8

It creates a scratch database (dropped at the end) with one property group of ``--meters``
cloud-controlled points, and starts, each in its own process: the simulated meters
(``prepay-gateway sim``, Modbus TCP DDSY1352, ``--buses`` buses), the gateway agent
(``prepay-gateway run``), ``--ingest`` ingest workers (``prepay ingest``), the dispatcher
(``prepay worker``) and the API (``prepay api``). Every meter draws 3.6 kW at ``--speed``
times wall-clock time (¥0.10 of credit per wall-clock second at the default 100x and ¥1/kWh)
and goes round ``--rounds`` times: its credit runs out → the cloud trips it → once the trip
is acked, after a random pause, a counter sale of ``--topup`` → the cloud closes it.

"Committed" is observed, not inferred: a trigger added to the scratch database (not a
migration) sends ``NOTIFY`` when a command changes state, and PostgreSQL delivers it only
once the transaction that changed it has committed; this process timestamps it on arrival.
All processes run on this machine, so the gateway's clock (``measured_at``, an ack's ``at``)
and the cloud's agree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
import sqlalchemy as sa
import yaml
from cryptography.fernet import Fernet

from cloud.check import check
from cloud.db import Database, libpq_url, migrate
from cloud.mqtt import client as mqtt_client
from cloud.payments.wechat.merchant import MerchantSettings, set_merchant
from cloud.payments.wechat.secrets import SecretBox
from cloud.registry.service import GroupSpec, MeterSpec, seed_group
from contract.mqtt import EventKind, GatewayEvent, Topics, UpKind, dump
from standins.wechat import WeChatStandIn
from standins.wechatpay import MerchantKeys, WeChatPayStandIn
from tests.bench.scratch import ScratchDatabase

PROFILE = "acrel-ddsy1352-modbus"
BIN = Path(sys.executable).parent
# --via wechat: the group's sub-merchant, its tenant's phone (on every account)
SP_MCHID, SP_APPID, SP_SECRET, SUB_MCHID = "1900000100", "wx-bench", "bench-secret", "1900000199"
PHONE = "13800138000"


@dataclass
class WeChatPay:
    """The WeChat stand-ins this process runs for ``--via wechat``."""

    pay: WeChatPayStandIn
    wx: WeChatStandIn
    merchant_key: str
    pay_port: int
    wx_port: int
    keys: MerchantKeys

    @classmethod
    def make(cls) -> WeChatPay:
        pay = WeChatPayStandIn()
        keys = MerchantKeys.generate(SP_MCHID)
        pay.add_merchant(SP_MCHID, keys, [SP_APPID])
        pay.add_sub_merchant(SP_MCHID, SUB_MCHID)
        wx = WeChatStandIn(appid=SP_APPID, secret=SP_SECRET)
        return cls(pay, wx, Fernet.generate_key().decode(), _free_port(), _free_port(), keys)

    def env(self, api_port: int) -> dict[str, str]:
        return {
            "PREPAY_WECHATPAY_BASE_URL": f"http://127.0.0.1:{self.pay_port}",
            "PREPAY_WECHATPAY_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
            "PREPAY_WECHATPAY_WECHAT_API_BASE_URL": f"http://127.0.0.1:{self.wx_port}",
            "PREPAY_WECHATPAY_MERCHANT_KEY": self.merchant_key,
        }

    async def start(self, url: str, seeded: Any) -> None:
        await self.pay.start("127.0.0.1", self.pay_port)
        await self.wx.start("127.0.0.1", self.wx_port)
        db = Database.connect(url, None, "prepay_app")
        k = self.keys
        try:
            await set_merchant(
                db,
                SecretBox(self.merchant_key),
                seeded.tenant_id,
                MerchantSettings(
                    mode="partner",
                    mchid=SP_MCHID,
                    appid=SP_APPID,
                    cert_serial_no=k.cert_serial_no,
                    private_key=k.private_key_pem,
                    apiv3_key=k.apiv3_key,
                    sub_mchid=SUB_MCHID,
                    app_secret=SP_SECRET,
                    public_key=self.pay.public_key_pem,
                    public_key_id=self.pay.public_key_id,
                ),
                "bench",
                datetime.now(UTC),
            )
            async with db.tenant(seeded.tenant_id) as conn:  # one tenant holds every account
                await conn.execute(sa.text("UPDATE customer SET phone = :p"), {"p": PHONE})
                await conn.execute(sa.text("UPDATE site SET topup_min = 0.01"))
        finally:
            await db.dispose()

    async def stop(self) -> None:
        await self.pay.stop()
        await self.wx.stop()


_TRIGGER = """
CREATE FUNCTION bench_command_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('bench_command', json_build_object(
    'id', NEW.id, 'channel', NEW.channel_id, 'action', NEW.action, 'state', NEW.state,
    'origin', NEW.origin, 'created_at', NEW.created_at, 'sent_at', NEW.sent_at,
    'finished_at', NEW.finished_at, 'attempts', NEW.attempts)::text);
  RETURN NEW;
END $$;
CREATE TRIGGER bench_command_state AFTER UPDATE OF state ON device_command FOR EACH ROW
WHEN (NEW.state IS DISTINCT FROM OLD.state) EXECUTE FUNCTION bench_command_state();
"""


def _ts(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Done:
    """A command's final state as committed, and when this process heard of the commit."""

    id: uuid.UUID
    channel: uuid.UUID
    action: str
    state: str
    origin: str
    created_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None  # the ack's ``at`` (gateway clock)
    attempts: int
    committed: datetime  # NOTIFY received here: the commit had happened


@dataclass
class Samples:
    trips: list[Done] = field(default_factory=list)
    # (201 received, request sent, close command)
    closes: list[tuple[datetime, datetime, Done]] = field(default_factory=list)
    sale_ms: list[float] = field(default_factory=list)  # the sale, or notification → 204
    missing: list[str] = field(default_factory=list)
    other: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Commands:
    """LISTENs for command state changes; one queue of final states per channel."""

    def __init__(self, libpq: str) -> None:
        self.libpq = libpq
        self.queues: dict[uuid.UUID, asyncio.Queue[Done]] = defaultdict(asyncio.Queue)
        self.sent_seen: dict[uuid.UUID, datetime] = {}
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.libpq, autocommit=True) as conn:
            await conn.execute("LISTEN bench_command")
            self.ready.set()
            async for note in conn.notifies():
                seen = _now()
                d = json.loads(note.payload)
                if d["state"] == "sent":
                    self.sent_seen.setdefault(uuid.UUID(d["id"]), seen)
                    continue
                if d["state"] == "queued":
                    continue
                done = Done(
                    uuid.UUID(d["id"]),
                    uuid.UUID(d["channel"]),
                    d["action"],
                    d["state"],
                    d["origin"],
                    datetime.fromisoformat(d["created_at"]),
                    _ts(d["sent_at"]),
                    _ts(d["finished_at"]),
                    int(d["attempts"]),
                    seen,
                )
                self.queues[done.channel].put_nowait(done)

    async def next(
        self, channel: uuid.UUID, want: Callable[[Done], bool], timeout: float, s: Samples
    ) -> Done | None:
        q = self.queues[channel]
        try:
            async with asyncio.timeout(timeout):
                while True:
                    d = await q.get()
                    if want(d):
                        return d
                    s.other[f"{d.action}:{d.state}"] += 1
        except TimeoutError:
            return None


async def _seed(url: str, meters: int, buses: int, topup: Decimal) -> tuple[GroupSpec, Any]:
    db = Database.connect(url, None, "prepay_app")
    tag = uuid.uuid4().hex[:6]
    per_bus = -(-meters // buses)
    rng = random.Random(1)
    spec = GroupSpec(
        slug=f"benchctl{tag}",
        name="Control bench",
        gateway_code=f"gw-benchctl-{tag}",
        unit_price=Decimal("1.0000"),
        max_rate=Decimal(1000),  # the meters run 100x faster than the wall clock
        friendly_hours=False,
        meters=[
            MeterSpec(
                f"m{i}",
                (i - 1) % per_bus + 1,
                f"Shop {i}",
                # staggered so the first exhaustions do not all land at once
                (topup * Decimal(rng.uniform(0.6, 2.0))).quantize(Decimal("0.01")),
                PROFILE,
            )
            for i in range(1, meters + 1)
        ],
    )
    try:
        seeded = await seed_group(db, spec)
    finally:
        await db.dispose()
    return spec, seeded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Procs:
    """The processes this bench started, each stopped by its own handle."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        p = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, p, log))
        return p

    def check_alive(self) -> None:
        for name, p, _ in self.procs:
            if p.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{name} exited with {p.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, p, _ in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for _, p, log in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.close()


def _sim_ports(log: Path, buses: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(r"at 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if len(found) >= buses:
            return [int(p) for p in found[:buses]]
        time.sleep(0.1)
    raise SystemExit(f"the simulator did not start its buses:\n{log.read_text()[-2000:]}")


async def _wait_for_ingest(
    url: str, mqtt_url: str, prefix: str, gateway: str, procs: Procs
) -> None:
    """Publish heartbeats for the gateway until an ingest worker has stored one."""
    topic = Topics(prefix).up(gateway, UpKind.EVENT)
    deadline = time.monotonic() + 90
    async with (
        mqtt_client(mqtt_url, f"{prefix}-probe") as mqtt,
        await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True) as conn,
    ):
        while time.monotonic() < deadline:
            procs.check_alive()
            beat = GatewayEvent(
                gateway=gateway, boot_id="bench", kind=EventKind.HEARTBEAT, at=_now()
            )
            await mqtt.publish(topic, dump(beat), qos=1)
            await asyncio.sleep(0.5)
            cur = await conn.execute("SELECT last_seen_at FROM gateway WHERE code = %s", (gateway,))
            r = await cur.fetchone()
            if r is not None and r[0] is not None:
                await asyncio.sleep(1.0)  # let any other worker finish subscribing
                return
    raise SystemExit("no ingest worker took the gateway's heartbeat")


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def row(name: str, ms: list[float]) -> str:
    if not ms:
        return f"| {name} | 0 | | | | | |"
    return (
        f"| {name} | {len(ms)} | {pct(ms, 50):.1f} | {pct(ms, 95):.1f} | {pct(ms, 99):.1f} "
        f"| {max(ms):.1f} | {min(ms):.1f} |"
    )


def _ms(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds() * 1000.0


@dataclass
class WeChatTenant:
    auth: dict[str, str]
    sub_mchid: str


async def _wechat_tenant(
    http: httpx.AsyncClient, spec: GroupSpec, seeded: Any, pay: WeChatPay
) -> WeChatTenant:
    """One tenant logged in from the mini-program with every account bound to them."""
    code = pay.wx.issue_code(f"o-bench-{uuid.uuid4().hex[:12]}")
    r = await http.post("/miniapp/v1/login/wechat", json={"tenant": spec.slug, "code": code})
    assert r.status_code == 200, r.text
    auth = {"authorization": f"Bearer {r.json()['token']}"}
    for account in seeded.accounts.values():
        r = await http.post(
            "/miniapp/v1/bindings", json={"account": account, "phone": PHONE}, headers=auth
        )
        assert r.status_code == 201, r.text
    return WeChatTenant(auth, SUB_MCHID)


async def _wechat_topup(
    http: httpx.AsyncClient, pay: WeChatPay, t: WeChatTenant, account: str, amount: Decimal
) -> tuple[datetime, datetime] | str:
    """An order, paid at the stand-in; returns (notification POSTed, its 204 received)."""
    r = await http.post(
        "/miniapp/v1/orders", json={"account": account, "amount": str(amount)}, headers=t.auth
    )
    if r.status_code != 201:
        return f"order {r.status_code} {r.text}"
    no = r.json()["out_trade_no"]
    await pay.pay.pay(no, notify=False, mchid=t.sub_mchid)
    (note,) = pay.pay.signed_notifications(no, 1, mchid=t.sub_mchid)
    sent = _now()
    await pay.pay.post(note)
    answered = _now()
    if note.status != 204:
        return f"notification {note.status} {note.error or note.answer}"
    return sent, answered


async def _drive(
    args: argparse.Namespace,
    api: str,
    spec: GroupSpec,
    seeded: Any,
    cmds: Commands,
    procs: Procs,
    pay: WeChatPay | None = None,
) -> Samples:
    s = Samples()
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        deadline = time.monotonic() + 60
        while True:
            procs.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/healthz")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the API did not come up")
            await asyncio.sleep(0.2)
        tok = (
            await http.post(
                "/api/v1/auth/token",
                json={"tenant": spec.slug, "username": "admin", "password": spec.admin_password},
            )
        ).json()["access_token"]
        auth = {"authorization": f"Bearer {tok}"}
        rng = random.Random(7)
        wechat = await _wechat_tenant(http, spec, seeded, pay) if pay is not None else None

        async def meter(key: str) -> None:
            channel = seeded.channels[key]
            account = seeded.accounts[key]
            for r in range(args.rounds):
                trip = await cmds.next(channel, lambda d: d.action == "trip", args.round_timeout, s)
                if trip is None or trip.state != "acked":
                    s.missing.append(f"{key} round {r}: trip {trip.state if trip else 'missing'}")
                    return
                s.trips.append(trip)
                await asyncio.sleep(rng.uniform(0.1, 1.0))
                if pay is not None and wechat is not None:
                    got = await _wechat_topup(http, pay, wechat, account, args.topup)
                    if isinstance(got, str):
                        s.missing.append(f"{key} round {r}: {got}")
                        return
                    sent, accepted = got
                else:
                    sent = _now()
                    resp = await http.post(
                        "/api/v1/sales",
                        json={"account": account, "amount": str(args.topup), "method": "cash"},
                        headers={**auth, "Idempotency-Key": f"bench-{uuid.uuid4().hex}"},
                    )
                    accepted = _now()
                    if resp.status_code != 201:
                        s.missing.append(f"{key} round {r}: sale {resp.status_code} {resp.text}")
                        return
                s.sale_ms.append(_ms(sent, accepted))

                def topup_close(d: Done, since: datetime = sent) -> bool:
                    return d.action == "close" and d.created_at >= since

                close = await cmds.next(channel, topup_close, args.round_timeout, s)
                if close is None or close.state != "acked":
                    s.missing.append(
                        f"{key} round {r}: close {close.state if close else 'missing'}"
                    )
                    return
                s.closes.append((accepted, sent, close))

        started = time.monotonic()
        progress = asyncio.create_task(_progress(s, args, started))
        try:
            await asyncio.gather(*(meter(m.key) for m in spec.meters))
        finally:
            progress.cancel()
    return s


async def _progress(s: Samples, args: argparse.Namespace, started: float) -> None:
    while True:
        await asyncio.sleep(5)
        print(
            f"  t={time.monotonic() - started:5.0f}s  trips {len(s.trips)}  "
            f"closes {len(s.closes)}  of {args.meters * args.rounds} each",
            flush=True,
        )


async def _exhausting_readings(
    libpq: str, trips: list[Done]
) -> tuple[dict[uuid.UUID, tuple[datetime, datetime, int]], int]:
    """Per trip: (measured_at, received_at, readings of that channel in the batch) of the
    reading that exhausted the credit — the batch whose rating queued the trip (the trip is
    created at the batch's ``received_at``)."""
    out: dict[uuid.UUID, tuple[datetime, datetime, int]] = {}
    async with await psycopg.AsyncConnection.connect(libpq) as conn:
        for t in trips:
            cur = await conn.execute(
                "SELECT max(measured_at), max(received_at), count(*) FROM reading "
                "WHERE channel_id = %s AND received_at = %s",
                (t.channel, t.created_at),
            )
            r = await cur.fetchone()
            if r is not None and r[2]:
                out[t.id] = (r[0], r[1], int(r[2]))
    return out, sum(1 for v in out.values() if v[2] > 1)


def _report(args: argparse.Namespace, s: Samples, cmds: Commands, exhausting: Any) -> None:
    head = (
        "| interval | n | p50 ms | p95 ms | p99 ms | max ms | min ms |\n"
        "|---|---|---|---|---|---|---|"
    )
    if args.via == "wechat":
        print("\n(a) WeChat Pay notification -> close acked")
        print(head)
        total = [_ms(sent, c.committed) for _, sent, c in s.closes]
        print(row("**notification POSTed → close ack committed**", total))
        print(row("notification POSTed → 204 received (verify, credit, control)", s.sale_ms))
        _report_close(s)
    else:
        print("\n(a) top-up accepted -> close acked")
        print(head)
        a_total = [_ms(acc, c.committed) for acc, _, c in s.closes]
        print(row("**201 received → close ack committed**", a_total))
        print(row("request sent → 201 received (the sale itself)", s.sale_ms))
        _report_close(s)
    _report_trips(s, exhausting, head)


def _report_close(s: Samples) -> None:
    print(
        row(
            "close created (top-up txn `now`) → answered",
            [_ms(c.created_at, acc) for acc, _, c in s.closes],
        )
    )
    print(
        row(
            "close created → sent (dispatcher)",
            [_ms(c.created_at, c.sent_at) for _, _, c in s.closes if c.sent_at],
        )
    )
    print(
        row(
            "sent → ack `at` (broker, agent, bus, meter write + read-back)",
            [_ms(c.sent_at, c.finished_at) for _, _, c in s.closes if c.sent_at and c.finished_at],
        )
    )
    print(
        row(
            "ack `at` → ack committed (broker, ingest)",
            [_ms(c.finished_at, c.committed) for _, _, c in s.closes if c.finished_at],
        )
    )


def _report_trips(s: Samples, exhausting: Any, head: str) -> None:
    readings, ambiguous = exhausting
    print("\n(b) exhausting reading -> trip acked")
    print(head)
    b = [(t, readings[t.id]) for t in s.trips if t.id in readings]
    print(
        row(
            "**reading measured_at (gateway) → trip ack committed**",
            [_ms(m, t.committed) for t, (m, _, _) in b],
        )
    )
    print(
        row(
            "**reading received_at (cloud) → trip ack committed**",
            [_ms(rc, t.committed) for t, (_, rc, _) in b],
        )
    )
    print(
        row(
            "measured_at → received_at (agent outbox, broker, ingest queue)",
            [_ms(m, rc) for _, (m, rc, _) in b],
        )
    )
    print(
        row(
            "received_at → sent (rating txn, NOTIFY, dispatcher)",
            [_ms(rc, t.sent_at) for t, (_, rc, _) in b if t.sent_at],
        )
    )
    print(
        row(
            "sent → ack `at` (broker, agent, bus, meter write + read-back)",
            [_ms(t.sent_at, t.finished_at) for t, _ in b if t.sent_at and t.finished_at],
        )
    )
    print(
        row(
            "ack `at` → ack committed (broker, ingest)",
            [_ms(t.finished_at, t.committed) for t, _ in b if t.finished_at],
        )
    )
    resent = sum(1 for t in s.trips if t.attempts > 1) + sum(
        1 for *_, c in s.closes if c.attempts > 1
    )
    print(
        f"\ntrips without their reading found: {len(s.trips) - len(b)}; batches with more than "
        f"one reading of the tripped meter (measured_at = the latest): {ambiguous}; "
        f"commands sent more than once: {resent}"
    )
    if s.other:
        print(f"other command outcomes seen: {dict(s.other)}")
    if s.missing:
        print(f"incomplete rounds ({len(s.missing)}): {s.missing[:10]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--meters", type=int, default=64)
    ap.add_argument("--buses", type=int, default=8, help="Modbus TCP buses the meters share")
    ap.add_argument("--rounds", type=int, default=4, help="trip + top-up cycles per meter")
    ap.add_argument("--poll-interval", type=float, default=1.0, help="gateway poll, seconds")
    ap.add_argument("--speed", type=float, default=100.0, help="simulated time per wall second")
    ap.add_argument("--topup", type=Decimal, default=Decimal("0.50"), help="yuan per sale")
    ap.add_argument("--ingest", type=int, default=1, help="ingest worker processes")
    ap.add_argument("--round-timeout", type=float, default=60.0)
    ap.add_argument("--keep", action="store_true", help="keep the scratch database and logs")
    ap.add_argument(
        "--via", choices=("counter", "wechat"), default="counter", help="how tenants top up"
    )
    args = ap.parse_args(argv)

    scratch = ScratchDatabase.create()
    name, url, mqtt_url = scratch.name, scratch.url, scratch.mqtt_url
    work = Path(tempfile.mkdtemp(prefix="bench-control-"))
    procs = Procs(work)
    try:
        migrate(url)
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute(_TRIGGER)
        spec, seeded = asyncio.run(_seed(url, args.meters, args.buses, args.topup))
        per_bus = -(-args.meters // args.buses)
        groups = [spec.meters[i : i + per_bus] for i in range(0, args.meters, per_bus)]

        sim_cfg = {
            "speed": args.speed,
            "buses": [
                {
                    "name": f"bus{b + 1}",
                    "transport": "modbus_tcp",
                    "port": 0,
                    "meters": [
                        {
                            "profile": PROFILE,
                            "unit": m.unit,
                            "start_total": 50.0,
                            "base": 3.6,
                            "peak": 3.6,
                        }
                        for m in ms
                    ],
                }
                for b, ms in enumerate(groups)
            ],
        }
        (work / "sim.yaml").write_text(yaml.safe_dump(sim_cfg))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs.start(
            "sim", [str(BIN / "prepay-gateway"), "sim", "--config", str(work / "sim.yaml")], env
        )
        ports = _sim_ports(work / "sim.log", len(groups))

        prefix = f"benchctl{uuid.uuid4().hex[:6]}"
        api_port = _free_port()
        cloud_env = {
            **env,
            "DATABASE_URL": url,
            "PREPAY_DATABASE_URL": url,
            "MQTT_URL": mqtt_url,
            "PREPAY_MQTT_URL": mqtt_url,
            "PREPAY_MQTT_PREFIX": prefix,
            "PREPAY_API_PORT": str(api_port),
            "PREPAY_SECRET_KEY": os.environ.get("PREPAY_SECRET_KEY") or secrets.token_urlsafe(48),
        }
        pay = WeChatPay.make() if args.via == "wechat" else None
        if pay is not None:
            cloud_env.update(pay.env(api_port))
        for w in range(args.ingest):
            procs.start(f"ingest{w}", [str(BIN / "prepay"), "ingest"], cloud_env)
        procs.start("worker", [str(BIN / "prepay"), "worker"], cloud_env)
        procs.start("api", [str(BIN / "prepay"), "api"], cloud_env)
        # Telemetry published before an ingest worker subscribes is lost (the agent re-sends
        # it after its receipt timeout, by when the meters would be deep in arrears).
        asyncio.run(_wait_for_ingest(url, mqtt_url, prefix, spec.gateway_code, procs))

        agent_cfg = {
            "gateway": spec.gateway_code,
            "mqtt_url": mqtt_url,
            "mqtt_prefix": prefix,
            "data_dir": str(work / "gw"),
            "poll_interval_s": args.poll_interval,
            "buses": [
                {
                    "name": f"bus{b + 1}",
                    "transport": "modbus_tcp",
                    "port": port,
                    "timeout_s": 1.0,
                    "devices": [{"key": m.key, "profile": PROFILE, "unit": m.unit} for m in ms],
                }
                for b, (ms, port) in enumerate(zip(groups, ports, strict=True))
            ],
        }
        (work / "agent.yaml").write_text(yaml.safe_dump(agent_cfg))

        async def run() -> tuple[Samples, Commands, Any]:
            cmds = Commands(libpq_url(url))
            listener = asyncio.create_task(cmds.run())
            await asyncio.wait_for(cmds.ready.wait(), 10)
            if pay is not None:
                await pay.start(url, seeded)
            procs.start(
                "agent",
                [str(BIN / "prepay-gateway"), "run", "--config", str(work / "agent.yaml")],
                env,
            )
            try:
                s = await _drive(
                    args, f"http://127.0.0.1:{api_port}", spec, seeded, cmds, procs, pay
                )
            finally:
                if pay is not None:
                    await pay.stop()
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            return s, cmds, await _exhausting_readings(libpq_url(url), s.trips)

        t0 = time.monotonic()
        s, cmds, exhausting = asyncio.run(run())
        print(
            f"{args.meters} meters on {len(groups)} Modbus TCP buses, poll {args.poll_interval}s, "
            f"{args.ingest} ingest worker(s), {args.rounds} rounds, {time.monotonic() - t0:.0f}s; "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        _report(args, s, cmds, exhausting)

        async def verify() -> None:
            db = Database.connect(url, None, "prepay_app")
            try:
                report = await check(db, [seeded.tenant_id])
                print(f"prepay check: {'OK' if report.ok else report.breaches[:5]}")
            finally:
                await db.dispose()

        asyncio.run(verify())
    finally:
        procs.stop()
        if args.keep:
            print(f"kept database {name} and logs in {work}")
        else:
            scratch.drop()
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
