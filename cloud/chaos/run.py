"""Run a seed's schedule over the real processes and check the invariants after it.

Processes: a Mosquitto of the run's own (restartable, persistent), two ``prepay ingest``,
``prepay worker``, ``prepay api`` and one ``prepay-gateway run`` per tenant, each a real
subprocess that a fault may SIGKILL; the simulated meters (Modbus TCP, one bus per
gateway) run in this process so they can be muted and can count what they carried out.
The database is a fresh one per seed (dropped afterwards unless ``keep``).

After the schedule the faults stop, every process is (re)started, the workload's
unanswered requests are sent again with their keys, the meters stop drawing, and the run
waits (bounded) for supply to converge to the policy and the gateways' outboxes to drain;
then the invariants are checked over the database, the meters and the workload's log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa
import yaml
from cryptography.fernet import Fernet
from psycopg import sql
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from cloud.chaos.schedule import METERS, TENANTS, Schedule, Step, make_schedule
from cloud.check import check
from cloud.db import Database, libpq_url, migrate
from cloud.money import to_fen
from cloud.mqtt import client
from cloud.payments.wechat.merchant import MerchantSettings, set_merchant
from cloud.payments.wechat.settings import PaySettings
from cloud.registry.service import GroupSpec, MeterSpec, Seeded, seed_group
from cloud.runtime import Wiring
from cloud.settings import CloudSettings
from contract.mqtt import Reading, TelemetryBatch, Topics, UpKind, dump
from meter_profiles.loader import load_profiles
from meter_profiles.simulators.meter import LoadCurve, SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator
from standins.wechat import WeChatStandIn
from standins.wechatpay import MerchantKeys, WeChatPayStandIn

PROFILE = "acrel-ddsy1352-modbus"
PRICE = Decimal("1.0000")
BIN = Path(sys.executable).parent
CONVERGE_S = 60.0  # supply must match the policy this long after the faults stop
SPEED = 50.0  # simulated seconds per second: 3.6 kW draws ¥0.05 a second
SP_MCHID, SP_APPID, SP_SECRET = "1900000100", "wx-sp-chaos", "sp-chaos-secret"
FORGED = ("forged_signature", "tampered_body", "other_key", "stale_timestamp", "probe")
SUPPLY = ("trip", "close", "close_allowed", "valve_open", "valve_close")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A subprocess a fault may SIGKILL and the run restarts."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.down = False  # a fault holds it down (or swapped)

    def start(self, argv: list[str] | None = None) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - our own executables
            argv or self.argv,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exited_by_itself(self) -> int | None:
        """The exit code of a process nobody stopped (None while it runs)."""
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def tail(self, n: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def _mosquitto(root: Path) -> tuple[Proc, int]:
    port = free_port()
    store = root / "mosquitto"
    store.mkdir(parents=True, exist_ok=True)
    conf = store / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n"
        f"persistence_location {store}/\nautosave_interval 1\nmax_queued_messages 50000\n"
        "max_packet_size 8388608\n"
    )
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return Proc("broker", [exe, "-c", str(conf)], dict(os.environ), store / "log"), port


async def _listening(port: int, proc: Proc, what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {proc.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


@dataclass
class Request:
    """One workload request and what it got (``status`` None: no answer, sent again)."""

    kind: str
    tenant: int
    key: str = ""
    status: int | None = None
    body: Any = None
    tries: int = 0
    sale_key: str = ""  # a reversal: the sale it reverses
    account: str = ""  # a sale's
    amount: str = ""
    receipt: str = ""  # a reversal's
    outlet: str = ""  # a sale's, when it names one


@dataclass
class Report:
    seed: int
    seconds: float
    faults: Counter[str] = field(default_factory=Counter)
    workload: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    converged_s: float | None = None

    def violate(self, what: str, evidence: object) -> None:
        self.violations.append(f"{what}: {evidence}")


class Run:
    def __init__(self, schedule: Schedule, root: Path, admin_url: str, log: Any) -> None:
        self.schedule = schedule
        self.root = root
        self.admin_url = libpq_url(admin_url)
        self.say = log
        self.report = Report(schedule.seed, schedule.seconds)
        self.dbname = f"prepay_chaos_{schedule.seed}_{uuid.uuid4().hex[:6]}"
        self.url = make_url(self.admin_url).set(database=self.dbname).render_as_string(False)
        self.prefix = f"c{schedule.seed}x{uuid.uuid4().hex[:4]}"
        self.topics = Topics(self.prefix)
        self.procs: dict[str, Proc] = {}
        self.sims: list[ModbusTcpSimulator] = []
        self.groups: list[Seeded] = []
        self.specs: list[GroupSpec] = []
        self.requests: list[Request] = []
        self.tokens: dict[int, str] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.db: Database | None = None
        self.agents_stopped_at = datetime.now(UTC)
        self.pay = WeChatPayStandIn()
        self.wx = WeChatStandIn(appid=SP_APPID, secret=SP_SECRET)
        self.subs: list[str] = []
        self.app_auth: dict[int, dict[str, str]] = {}
        self.wiring: Wiring | None = None

    # -- set-up ---------------------------------------------------------------------------
    async def setup(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        await asyncio.to_thread(migrate, self.url)
        self.db = Database.connect(self.url, None, "prepay_app")
        for t in range(TENANTS):
            tag = f"{self.schedule.seed}t{t}{uuid.uuid4().hex[:4]}"
            spec = GroupSpec(
                slug=f"chaos{tag}",
                name=f"Chaos {tag}",
                gateway_code=f"gw-{tag}",
                unit_price=PRICE,
                max_rate=Decimal(1000),
                friendly_hours=False,
                reading_max_age_days=3650,
                meters=[
                    MeterSpec(f"m{u}", u, f"Shop {u}", Decimal("1.00" if u == 1 else "4.00"))
                    for u in range(1, METERS + 1)
                ],
            )
            seeded = await seed_group(self.db, spec)
            async with self.db.tenant(seeded.tenant_id) as conn:
                await conn.execute(sa.text("UPDATE site SET quiet_start = NULL, quiet_end = NULL"))
            self.specs.append(spec)
            self.groups.append(seeded)
        profile = load_profiles()[PROFILE]
        for _ in range(TENANTS):
            meters = [
                SimulatedMeter(
                    profile,
                    u,
                    curve=LoadCurve(base=3.6, peak=3.6, noise=0.0),
                    speed=SPEED,
                    start_total=50.0,
                )
                for u in range(1, METERS + 1)
            ]
            sim = ModbusTcpSimulator(meters)
            await sim.start()
            self.sims.append(sim)
        self.api_port = free_port()
        pay_env = await self._wechat()
        broker, self.mqtt_port = _mosquitto(self.root)
        self.procs["broker"] = broker
        broker.start()
        await _listening(self.mqtt_port, broker, "mosquitto")
        env = {
            **pay_env,
            **os.environ,
            "DATABASE_URL": self.url,
            "MQTT_URL": self.mqtt_url,
            "PREPAY_MQTT_PREFIX": self.prefix,
            "PREPAY_SECRET_KEY": secrets.token_urlsafe(48),
            "PREPAY_DATA_DIR": str(self.root / "data"),
            "PREPAY_DRAW_RECEIPTS_AHEAD": "false",
            "PREPAY_COMMAND_DEADLINE_S": "60",
            "PREPAY_COMMAND_RETRY_S": "2",
            "PYTHONUNBUFFERED": "1",
        }
        prepay = str(BIN / "prepay")
        for name in ("ingest-1", "ingest-2"):
            e = {**env, "PREPAY_INGEST_METRICS_PORT": str(free_port())}
            self.procs[name] = Proc(name, [prepay, "ingest"], e, self.root / f"{name}.log")
        e = {**env, "PREPAY_WORKER_METRICS_PORT": str(free_port())}
        self.procs["worker"] = Proc("worker", [prepay, "worker"], e, self.root / "worker.log")
        self.procs["api"] = Proc(
            "api", [prepay, "api", "--port", str(self.api_port)], env, self.root / "api.log"
        )
        for t in range(TENANTS):
            good = self._agent_yaml(t, self.mqtt_url, "agent")
            self._agent_yaml(t, f"mqtt://127.0.0.1:{free_port()}", "agent-offline")
            name = f"gateway-{t + 1}"
            argv = [str(BIN / "prepay-gateway"), "run", "--config", str(good)]
            self.procs[name] = Proc(name, argv, env, self.root / f"{name}.log")
        for name, p in self.procs.items():
            if name != "broker":
                p.start()
        await _listening(self.api_port, self.procs["api"], "prepay api")
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.api_port}", timeout=10)
        for t, spec in enumerate(self.specs):
            self.tokens[t] = await self._login(spec)

    async def _wechat(self) -> dict[str, str]:
        """WeChat's stand-ins (in this process) and each tenant's sub-merchant; the env the
        API and the worker reach them with."""
        keys = MerchantKeys.generate(SP_MCHID)
        self.pay.add_merchant(SP_MCHID, keys, [SP_APPID])
        pay_url, wx_url = await self.pay.start(), await self.wx.start()
        merchant_key = Fernet.generate_key().decode()
        base = f"http://127.0.0.1:{self.api_port}"
        settings = PaySettings(
            base_url=pay_url,
            public_base_url=base,
            wechat_api_base_url=wx_url,
            merchant_key=SecretStr(merchant_key),
        )
        self.wiring = Wiring.build(CloudSettings(database_url=self.url), self.url, pay=settings)
        box = self.wiring.services.wechat_pay.box
        assert self.db is not None
        for n, g in enumerate(self.groups, 1):
            sub = f"19000001{n:02d}"
            self.subs.append(sub)
            self.pay.add_sub_merchant(SP_MCHID, sub)
            async with self.db.tenant(g.tenant_id) as conn:
                await conn.execute(
                    sa.text("UPDATE customer SET phone = :p"), {"p": f"1380013{n:04d}"}
                )
            merchant = MerchantSettings(
                mode="partner",
                mchid=SP_MCHID,
                appid=SP_APPID,
                cert_serial_no=keys.cert_serial_no,
                private_key=keys.private_key_pem,
                apiv3_key=keys.apiv3_key,
                sub_mchid=sub,
                app_secret=SP_SECRET,
                public_key=self.pay.public_key_pem,
                public_key_id=self.pay.public_key_id,
            )
            await set_merchant(self.db, box, g.tenant_id, merchant, "chaos", datetime.now(UTC))
        return {
            "PREPAY_WECHATPAY_BASE_URL": pay_url,
            "PREPAY_WECHATPAY_PUBLIC_BASE_URL": base,
            "PREPAY_WECHATPAY_WECHAT_API_BASE_URL": wx_url,
            "PREPAY_WECHATPAY_MERCHANT_KEY": merchant_key,
            "PREPAY_WECHATPAY_QUERY_AFTER_S": "10",
            "PREPAY_WECHATPAY_QUERY_EVERY_S": "5",
        }

    async def _tenant_app(self, t: int) -> dict[str, str] | None:
        """A tenant logged in to the mini-program (by phone) with the account bound."""
        if t in self.app_auth:
            return self.app_auth[t]
        phone, slug = f"1380013{t + 1:04d}", self.specs[t].slug
        try:
            r = await self.http.post("/miniapp/v1/login/sms", json={"tenant": slug, "phone": phone})
            code = r.json()["dev_code"]
            r = await self.http.post(
                "/miniapp/v1/login/phone", json={"tenant": slug, "phone": phone, "code": code}
            )
            auth = {"authorization": f"Bearer {r.json()['token']}"}
            for u in range(1, METERS + 1):
                await self.http.post(
                    "/miniapp/v1/bindings",
                    json={"account": self.groups[t].accounts[f"m{u}"], "phone": phone},
                    headers=auth,
                )
        except (httpx.HTTPError, KeyError, ValueError):
            return None
        self.app_auth[t] = auth
        return auth

    async def _wechat_pay(self, s: Step) -> None:
        t = s.tenant
        auth = await self._tenant_app(t)
        req = Request("wechat_pay", t)
        self.requests.append(req)
        if auth is None:
            return
        body = {"account": self.groups[t].accounts[f"m{s.meter}"], "amount": s.amount}
        try:
            r = await self.http.post("/miniapp/v1/orders", json=body, headers=auth)
        except httpx.HTTPError:
            return
        req.status = r.status_code
        if r.status_code != 201:
            return
        req.key = r.json()["out_trade_no"]
        how = s.variant % 4  # once, a storm of copies, late, never (the query job finds it)
        await self.pay.pay(
            req.key,
            mchid=self.subs[t],
            notify=how != 3,
            duplicates=4 if how == 1 else 0,
            concurrent=how == 1,
            delay_s=3.0 if how == 2 else 0,
        )

    async def _forged(self, s: Step) -> None:
        paid = [
            r for r in self.requests if r.kind == "wechat_pay" and r.key and r.tenant == s.tenant
        ]
        if not paid:
            return
        order = paid[s.variant % len(paid)]
        req = Request("forged_notification", s.tenant, key=order.key)
        self.requests.append(req)
        with contextlib.suppress(Exception):
            kind = FORGED[s.variant % len(FORGED)]
            d = await self.pay.send_bad(order.key, kind, mchid=self.subs[s.tenant])
            req.status, req.body = d.status, kind

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def _agent_yaml(self, t: int, mqtt_url: str, stem: str) -> Path:
        path = self.root / f"{stem}-{t + 1}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "gateway": self.specs[t].gateway_code,
                    "mqtt_url": mqtt_url,
                    "mqtt_prefix": self.prefix,
                    "data_dir": str(self.root / f"gw-{t + 1}"),
                    "poll_interval_s": 0.5,
                    "publish_batch": 20,
                    "heartbeat_s": 5,
                    "reconnect_min_s": 0.2,
                    "reconnect_max_s": 1.0,
                    "buses": [
                        {
                            "name": "bus1",
                            "transport": "modbus_tcp",
                            "port": self.sims[t].port,
                            "timeout_s": 0.3,
                            "devices": [
                                {"key": f"m{u}", "profile": PROFILE, "unit": u}
                                for u in range(1, METERS + 1)
                            ],
                        }
                    ],
                }
            )
        )
        return path

    async def _login(self, spec: GroupSpec) -> str:
        body = {"tenant": spec.slug, "username": "admin", "password": "demo-admin"}
        for _ in range(100):
            with contextlib.suppress(httpx.HTTPError):
                r = await self.http.post("/api/v1/auth/token", json=body)
                if r.status_code == 200:
                    return str(r.json()["access_token"])
            await asyncio.sleep(0.2)
        raise RuntimeError("cannot log in to the chaos API")

    # -- the workload -----------------------------------------------------------------------
    async def _call(
        self, tenant: int, method: str, path: str, body: object, key: str = ""
    ) -> tuple[int | None, Any]:
        headers = {"authorization": f"Bearer {self.tokens[tenant]}"}
        if key:
            headers["Idempotency-Key"] = key
        try:
            r = await self.http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError:
            return None, None
        if r.status_code == 401:
            self.tokens[tenant] = await self._login(self.specs[tenant])
            return None, None
        if r.status_code >= 500:
            return None, r.text[:300]
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text[:300]

    async def _send(self, req: Request, method: str, path: str, body: object) -> None:
        req.tries += 1
        req.status, req.body = await self._call(req.tenant, method, path, body, req.key)

    def _sale_body(self, req: Request) -> dict[str, str]:
        body = {"account": req.account, "amount": req.amount}
        return {**body, "outlet_id": req.outlet} if req.outlet else body

    async def workload(self, s: Step) -> None:
        self.report.workload[s.kind] += 1
        t, other = s.tenant, (s.tenant + 1) % TENANTS
        g, o = self.groups[t], self.groups[other]
        if s.kind == "sale":
            key = f"chaos-{self.schedule.seed}-{len(self.requests)}"
            req = Request("sale", t, key=key, account=g.accounts[f"m{s.meter}"], amount=s.amount)
            self.requests.append(req)
            await self._send(req, "POST", "/api/v1/sales", self._sale_body(req))
        elif s.kind == "sale_replay":
            sales = [r for r in self.requests if r.kind == "sale" and r.tenant == t]
            if sales:
                first = sales[s.variant % len(sales)]
                req = Request(
                    "sale_replay", t, key=first.key, account=first.account, amount=first.amount
                )
                self.requests.append(req)
                await self._send(req, "POST", "/api/v1/sales", self._sale_body(req))
        elif s.kind == "reversal":
            done = [
                r
                for r in self.requests
                if r.kind == "sale" and r.tenant == t and r.status in (200, 201)
            ]
            if done:
                sale = done[s.variant % len(done)]
                req = Request("reversal", t, sale_key=sale.key, receipt=sale.body["receipt_no"])
                self.requests.append(req)
                await self._reverse(req)
        elif s.kind in ("trip", "foreign_trip"):
            point = (g if s.kind == "trip" else o).points[f"m{s.meter}"]
            req = Request(s.kind, t)
            self.requests.append(req)
            body = {"action": "trip", "reason": "chaos: operator trip"}
            await self._send(req, "POST", f"/api/v1/service-points/{point}/control", body)
        elif s.kind == "foreign_sale":
            # (account numbers are per tenant: the other tenant's id is its outlet's)
            key = f"chaos-f-{self.schedule.seed}-{len(self.requests)}"
            req = Request("foreign_sale", t, key, account=g.accounts[f"m{s.meter}"], amount="5.00")
            req.outlet = str(o.outlet_id)
            self.requests.append(req)
            await self._send(req, "POST", "/api/v1/sales", self._sale_body(req))
        elif s.kind == "bad_sale":
            amount = ["-5.00", "abc", "1e9", "0", "0.001", "NaN"][s.variant % 6]
            key = f"chaos-b-{self.schedule.seed}-{len(self.requests)}"
            req = Request("bad_sale", t, key, account=g.accounts["m1"], amount=amount)
            self.requests.append(req)
            await self._send(req, "POST", "/api/v1/sales", self._sale_body(req))
        elif s.kind in ("bad_payload", "forged_telemetry"):
            await self._publish_bad(s)
        elif s.kind == "wechat_pay":
            await self._wechat_pay(s)
        elif s.kind == "forged_notification":
            await self._forged(s)

    async def _reverse(self, req: Request) -> None:
        body = {"reason": "chaos: reversal"}
        await self._send(req, "POST", f"/api/v1/sales/{req.receipt}/reverse", body)

    async def _publish_bad(self, s: Step) -> None:
        gw = self.specs[s.tenant].gateway_code
        topic = self.topics.up(gw, UpKind.TELEMETRY)
        if s.kind == "bad_payload":
            payload = [
                b"\x00\xff\xfe",
                b'{"v":1,"gateway":',
                b'{"v":1,"gateway":"%s","boot_id":"x","seq":1,"readings":[{"total":NaN}]}'
                % gw.encode(),
                b"[]" * 1000,
            ][s.variant % 4]
        else:  # a batch naming the other tenant's gateway, with an absurd register
            other = self.specs[(s.tenant + 1) % TENANTS].gateway_code
            now = datetime.now(UTC)
            r = Reading(device="m1", measured_at=now, total=Decimal("999999.00"))
            batch = TelemetryBatch(
                gateway=other, boot_id="forged", seq=1, sent_at=now, readings=(r,)
            )
            payload = dump(batch)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                async with client(self.mqtt_url, f"chaos-bad-{uuid.uuid4().hex[:6]}") as mqtt:
                    await mqtt.publish(topic, payload, qos=1)

    # -- faults -------------------------------------------------------------------------------
    async def fault(self, s: Step) -> None:
        self.report.faults[s.kind] += 1
        if s.kind == "kill":
            p = self.procs[s.target]
            if p.down:
                self.report.faults["kill_skipped"] += 1
                return
            p.down = True
            p.kill()
            await asyncio.sleep(s.down)
            p.start()
            p.down = False
        elif s.kind == "broker_restart":
            b = self.procs["broker"]
            if b.down:
                return
            b.down = True
            b.stop()
            await asyncio.sleep(s.down)
            b.start()
            await _listening(self.mqtt_port, b, "mosquitto")
            b.down = False
        elif s.kind == "pg_terminate":
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                n = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.dbname,),
                ).fetchone()
            self.report.faults["pg_backends_terminated"] += int(n[0]) if n else 0
        elif s.kind == "gateway_offline":
            p = self.procs[f"gateway-{s.tenant + 1}"]
            if p.down:
                return
            p.down = True
            p.kill()
            offline = self.root / f"agent-offline-{s.tenant + 1}.yaml"
            p.start([*p.argv[:-1], str(offline)])  # polls into its outbox, no broker
            await asyncio.sleep(s.down * 2)
            p.kill()
            p.start()
            p.down = False
        elif s.kind in ("meter_mute", "meter_garbage"):
            faults = self.sims[s.tenant].faults
            chosen = faults.silent if s.kind == "meter_mute" else faults.garbage
            chosen.add(s.meter)
            await asyncio.sleep(s.down)
            chosen.discard(s.meter)

    # -- the run ------------------------------------------------------------------------------
    async def play(self) -> None:
        start = time.monotonic()
        fault_kinds = {f.kind for f in self.schedule.faults()}
        for s in self.schedule.steps:
            delay = start + s.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if s.kind in fault_kinds and s in self.schedule.faults():
                self.tasks.append(asyncio.create_task(self.fault(s)))
            else:
                self.tasks.append(asyncio.create_task(self.workload(s)))
        rest = start + self.schedule.seconds - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)
        await asyncio.gather(*self.tasks)
        for name, p in self.procs.items():
            if not p.alive():
                code = p.exited_by_itself()
                if code is not None:
                    self.report.violate(f"{name} exited by itself ({code})", p.tail(800))
                p.start()
        await _listening(self.mqtt_port, self.procs["broker"], "mosquitto")
        await _listening(self.api_port, self.procs["api"], "prepay api")

    async def settle(self) -> None:
        """Resend what got no answer (same keys), stop the meters' draw, wait for supply to
        converge to the policy and the outboxes to drain."""
        for _ in range(20):
            open_ = [r for r in self.requests if r.status is None and r.kind != "trip"]
            if not open_:
                break
            for r in open_:
                if r.kind in ("sale", "sale_replay", "foreign_sale", "bad_sale"):
                    await self._send(r, "POST", "/api/v1/sales", self._sale_body(r))
                elif r.kind == "reversal":
                    await self._reverse(r)
                elif r.kind == "foreign_trip":
                    r.status = 0  # not sent again: refused or not, it must change nothing
            await asyncio.sleep(0.5)
        await self.pay.drain()
        t0 = time.monotonic()
        while time.monotonic() - t0 < CONVERGE_S:  # a missing notification: the query job
            if not await self._uncredited():
                break
            await asyncio.sleep(1.0)
        for sim in self.sims:
            for m in sim.meters.values():
                m.advance()
                m.speed = 0.0  # frozen: balances stop moving, the policy's decision stands
        t0 = time.monotonic()
        last: list[str] = []
        while time.monotonic() - t0 < CONVERGE_S:
            last = await self._divergent()
            if not last:
                self.report.converged_s = round(time.monotonic() - t0, 1)
                break
            await asyncio.sleep(1.0)
        else:
            self.report.violate(f"supply not converged {CONVERGE_S:.0f}s after the faults", last)

    async def _credits(self) -> dict[str, int]:
        assert self.db is not None
        out: dict[str, int] = {}
        for g in self.groups:
            async with self.db.tenant(g.tenant_id) as conn:
                for key, n in await conn.execute(
                    sa.text(
                        "SELECT idempotency_key, count(*) FROM journal_entry "
                        "WHERE idempotency_key LIKE 'pay:%' GROUP BY 1"
                    )
                ):
                    out[key.removeprefix("pay:")] = int(n)
        return out

    async def _uncredited(self) -> list[str]:
        credited = await self._credits()
        return [no for no in self._paid() if credited.get(no, 0) == 0]

    def _paid(self) -> list[str]:
        """The orders WeChat's stand-in reports paid."""
        out = []
        for r in self.requests:
            if r.kind == "wechat_pay" and r.key:
                with contextlib.suppress(Exception):
                    if self.pay.order(r.key, mchid=self.subs[r.tenant]).state == "SUCCESS":
                        out.append(r.key)
        return out

    async def _divergent(self) -> list[str]:
        """Points whose meter is not where the policy (the twin's desired state) wants it,
        or whose stored register is behind the meter's."""
        assert self.db is not None
        out = []
        for t, g in enumerate(self.groups):
            async with self.db.tenant(g.tenant_id) as conn:
                rows = {
                    r.channel_id: r
                    for r in await conn.execute(
                        sa.text(
                            "SELECT tw.channel_id, tw.desired, rs.last_register "
                            "FROM supply_twin tw "
                            "JOIN binding b ON b.channel_id = tw.channel_id "
                            "AND b.removed_at IS NULL "
                            "JOIN rating_state rs ON rs.service_point_id = b.service_point_id"
                        )
                    )
                }
            for u in range(1, METERS + 1):
                meter = self.sims[t].meters[u]
                row = rows.get(g.channels[f"m{u}"])
                on = meter.supply_on(1)
                register = Decimal(repr(meter.channels[1].total)).quantize(Decimal("0.01"))
                if row is None or row.desired not in ("on", "off"):
                    out.append(f"t{t} m{u}: no decision yet")
                elif (row.desired == "on") != on:
                    out.append(f"t{t} m{u}: policy {row.desired}, meter {'on' if on else 'off'}")
                elif row.last_register is None or abs(row.last_register - register) > Decimal(
                    "0.01"
                ):
                    out.append(f"t{t} m{u}: stored {row.last_register}, meter {register}")
        return out

    async def stop(self) -> None:
        self.agents_stopped_at = datetime.now(UTC)
        for name, p in self.procs.items():
            if name.startswith("gateway"):
                p.stop()
        await asyncio.sleep(1.0)
        for name, p in self.procs.items():
            if name != "broker":
                p.stop()
        self.procs["broker"].stop()
        with contextlib.suppress(Exception):
            await self.http.aclose()
        for standin in (self.pay, self.wx):
            with contextlib.suppress(Exception):
                await standin.stop()
        for sim in self.sims:
            with contextlib.suppress(Exception):
                await sim.stop()

    # -- invariants ---------------------------------------------------------------------------
    async def invariants(self) -> None:
        assert self.db is not None
        rep = self.report
        ledger = await check(self.db, [g.tenant_id for g in self.groups])
        for tenant, name, what, detail in ledger.breaches:
            rep.violate(f"ledger {name}", f"tenant {tenant}: {what} {detail}")
        for t, g in enumerate(self.groups):
            async with self.db.tenant(g.tenant_id) as conn:
                await self._tenant_invariants(t, g, conn)
            # what a gateway still holds was read in its last seconds, not stuck there
            stuck = [
                at
                for at in _outbox_readings(self.root / f"gw-{t + 1}" / "outbox.sqlite3")
                if at < self.agents_stopped_at - timedelta(seconds=5)
            ]
            if stuck:
                rep.violate(
                    "readings never receipted", f"gateway {t + 1}: {len(stuck)}, {stuck[:3]}"
                )
        credited = await self._credits()
        paid = set(self._paid())
        rep.outcomes["wechat paid"] = len(paid)
        rep.outcomes["sales 201"] = sum(
            1 for r in self.requests if r.kind == "sale" and r.status == 201
        )
        rep.outcomes["refused bad input"] = sum(
            1
            for r in self.requests
            if r.kind in ("foreign_sale", "foreign_trip", "bad_sale", "forged_notification")
            and r.status is not None
            and r.status >= 400
        )
        for no in paid:
            if credited.get(no, 0) != 1:
                rep.violate("a paid WeChat order not credited exactly once", (no, credited.get(no)))
        for no in set(credited) - paid:
            rep.violate("a WeChat credit without a payment", no)
        for r in self.requests:
            if r.kind == "forged_notification" and r.status is not None and r.status < 400:
                rep.violate("a forged notification accepted", (r.key, r.body, r.status))
            if r.kind in ("foreign_sale", "foreign_trip", "bad_sale") and r.status in (200, 201):
                rep.violate(f"{r.kind} accepted", r.body)
            if r.kind == "trip" and r.status is not None and r.status >= 500:
                rep.violate("trip answered 5xx", r.body)

    async def _tenant_invariants(self, t: int, g: Seeded, conn: Any) -> None:
        rep = self.report

        async def rows(q: str, **p: object) -> list[Any]:
            return list((await conn.execute(sa.text(q), p)).all())

        sales = {
            r.idempotency_key: r
            for r in await rows(
                "SELECT s.idempotency_key, s.receipt_no, s.amount, s.reversed_at, s.entry_id, "
                "(SELECT count(*) FROM journal_entry e WHERE e.id = s.entry_id) AS entries, "
                "(SELECT count(*) FROM journal_entry e WHERE e.reverses = s.entry_id) AS rev "
                "FROM counter_sale s"
            )
        }
        mine = [r for r in self.requests if r.tenant == t]
        answered: dict[str, set[int]] = {}
        for r in mine:
            if r.kind in ("sale", "sale_replay") and r.status is not None:
                answered.setdefault(r.key, set()).add(r.status)
        for key, statuses in answered.items():
            row = sales.get(key)
            if statuses & {200, 201} and (row is None or row.entries != 1):
                rep.violate("a 201 sale without its one entry", f"{key}: {statuses} {row}")
            if sum(1 for r in mine if r.key == key and r.status == 201) > 1:
                rep.violate("one Idempotency-Key answered 201 twice", key)
            if not statuses & {200, 201} and row is not None and statuses - {None}:
                rep.violate("a refused sale credited", f"{key}: {statuses}")
        for r in mine:
            if r.kind == "reversal" and r.status == 200:
                row = sales.get(r.sale_key)
                if row is None or row.reversed_at is None or row.rev != 1:
                    rep.violate("a 200 reversal without exactly one reversal entry", row)
        for row in sales.values():
            if row.rev > 1:
                rep.violate("a sale reversed twice", row.receipt_no)
        for r in await rows(
            "SELECT channel_id, measured_at, count(*) AS n FROM reading "
            "GROUP BY 1, 2 HAVING count(*) > 1"
        ):
            rep.violate("a reading stored twice", tuple(r))
        for r in await rows(
            "SELECT service_point_id, consumption_total, charge_billed_total FROM rating_state"
        ):
            expected = to_fen(r.consumption_total * PRICE)
            if r.charge_billed_total != expected:
                rep.violate(
                    "charges differ from tariff × consumption",
                    f"{r.service_point_id}: {r.charge_billed_total} vs {expected}",
                )
        first = {
            r.channel_id: r
            for r in await rows(
                "SELECT DISTINCT ON (channel_id) channel_id, total FROM reading "
                "WHERE total IS NOT NULL ORDER BY channel_id, measured_at"
            )
        }
        states = {
            r.service_point_id: r
            for r in await rows(
                "SELECT service_point_id, consumption_total, last_register FROM rating_state"
            )
        }
        anomalies = {r[0] for r in await rows("SELECT DISTINCT service_point_id FROM work_order")}
        for u in range(1, METERS + 1):
            key = f"m{u}"
            point, channel = g.points[key], g.channels[key]
            st, f = states.get(point), first.get(channel)
            if st is not None and f is not None and point not in anomalies:
                if st.consumption_total != st.last_register - f.total:
                    rep.violate(
                        "consumption not the register's movement",
                        f"t{t} {key}: {st.consumption_total} vs {st.last_register} - {f.total}",
                    )
            meter = self.sims[t].meters[u]
            ops = sum(1 for _, ch in meter.controls if ch == 1)
            commands = (
                await rows(
                    "SELECT count(*) FROM device_command WHERE channel_id = :c "
                    "AND action = ANY(:a) AND state <> 'queued'",
                    c=channel,
                    a=[*SUPPLY, "keep_power_on", "keep_power_off"],
                )
            )[0][0]
            if ops > commands:
                rep.violate(
                    "a meter carried out more commands than were sent",
                    f"t{t} {key}: {ops} operations {meter.controls}, {commands} commands",
                )

    async def teardown(self, keep: bool) -> None:
        if self.wiring is not None:
            with contextlib.suppress(Exception):
                await self.wiring.services.wechat_pay.close()
                await self.wiring.db.dispose()
        if self.db is not None:
            await self.db.dispose()
        if not keep:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self.dbname)
                    )
                )
            shutil.rmtree(self.root, ignore_errors=True)


async def run_seed(
    seed: int, seconds: float, admin_url: str, root: Path, log: Any = print, keep: bool = False
) -> Report:
    """One seed over fresh processes and database; the report lists its violations."""
    schedule = make_schedule(seed, seconds)
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    run = Run(schedule, root, admin_url, log)
    t0 = time.monotonic()
    failed = False
    try:
        await run.setup()
        await run.play()
        await run.settle()
        await run.stop()
        await run.invariants()
    except Exception as exc:
        failed = True
        run.report.violate("the run itself failed", repr(exc))
        raise
    finally:
        with contextlib.suppress(Exception):
            await run.stop()
        run.report.elapsed = round(time.monotonic() - t0, 1)
        if run.report.violations:
            failed = True
            for name, p in run.procs.items():
                (root / f"{name}.tail").write_text(p.tail(4000))
            (root / "schedule.txt").write_text(
                "\n".join(s.describe() for s in schedule.steps) + "\n"
            )
            (root / "requests.json").write_text(
                json.dumps([r.__dict__ for r in run.requests], default=str, indent=1)
            )
        await run.teardown(keep or failed)
    return run.report


def _outbox_readings(path: Path) -> list[datetime]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT body FROM outbox WHERE kind = 'reading'").fetchall()
    finally:
        db.close()
    return [datetime.fromisoformat(json.loads(b)["measured_at"]) for (b,) in rows]


def replay_command(seed: int, seconds: float) -> str:
    return f"prepay chaos --seed {seed} --seconds {seconds:g}"
