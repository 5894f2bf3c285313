"""Store-and-forward under failure, for real (issue 4's acceptance):

a. the broker is stopped for 60 s while the meters keep being polled, then restarted: every
   reading the agent took arrives in the cloud exactly once;
b. the agent (a ``prepay-gateway run`` process) is killed with SIGKILL while it drains its
   outbox, then restarted on the same data directory: nothing is lost, and what it re-sends
   changes nothing in the cloud (no extra reading rows, no second charge).

Each test starts its own Mosquitto (``persistence true``) on a free port, so it can stop and
restart it without touching the shared broker. PostgreSQL is the real one from the conftest.

What the agent took is known exactly, without touching its code: before the agent first
opens its outbox, the test creates the same ``outbox`` table plus an ``audit`` table and a
trigger that copies every inserted reading row into ``audit`` (same transaction, so a
reading is audited if and only if it was committed to the outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from cloud.check import check
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.consumer import IngestConsumer
from cloud.ingest.service import IngestResult, IngestService
from cloud.registry.service import Seeded, seed_group
from contract.mqtt import TelemetryBatch, Topics
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
from meter_profiles.loader import load_profiles
from meter_profiles.simulators.meter import LoadCurve, SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator
from tests.conftest import group_spec, wait_for

pytestmark = pytest.mark.e2e

MOSQUITTO = "/usr/sbin/mosquitto"
PROFILE = "acrel-ddsy1352-modbus"
OUTAGE_S = 60.0
AGENT_BIN = Path(sys.executable).with_name("prepay-gateway")

ReadingKey = tuple[str, int, datetime]  # (device, channel, measured_at)


# -- a Mosquitto of the test's own ------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A broker the test may stop and restart on the same port; QoS 1 messages queued for
    persistent sessions survive the restart (``persistence true``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.store = root / "store"
        self.store.mkdir(parents=True, exist_ok=True)
        self.conf = root / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "user root\n"  # as root, Mosquitto would drop to its own user: keep our tmp files
            "persistence true\n"
            f"persistence_location {self.store}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 50000\n"
            "max_packet_size 8388608\n"
            f"log_dest file {root}/mosquitto.log\n"
            "log_type all\n"
            "connection_messages true\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - a daemon, not awaited
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    async def stop(self) -> None:
        """A clean stop (SIGTERM): Mosquitto writes its persistence file on the way out."""
        if self.proc is None:
            return
        self.proc.terminate()
        for _ in range(200):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        p = self.root / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    if not os.path.exists(MOSQUITTO):  # noqa: ASYNC240 - once, before anything runs
        pytest.skip(f"{MOSQUITTO} is not installed")
    b = Mosquitto(tmp_path / "mosquitto")
    await b.start()
    yield b
    await b.stop()


# -- the outbox audit ---------------------------------------------------------------------------
def prepare_outbox(data_dir: Path) -> Path:
    """Create the agent's outbox table (as ``Outbox`` does) plus the audit trigger."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "outbox.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "kind TEXT NOT NULL, body BLOB NOT NULL)"
        )
        db.execute("CREATE TABLE audit (n INTEGER PRIMARY KEY, outbox_id INTEGER, body BLOB)")
        db.execute(
            "CREATE TRIGGER audit_reading AFTER INSERT ON outbox WHEN NEW.kind = 'reading' "
            "BEGIN INSERT INTO audit (outbox_id, body) VALUES (NEW.id, NEW.body); END"
        )
    finally:
        db.close()
    return path


def _key(body: bytes) -> ReadingKey:
    doc = json.loads(body)
    return doc["device"], int(doc["channel"]), datetime.fromisoformat(doc["measured_at"])


def outbox_rows(path: Path, table: str = "outbox") -> list[tuple[int, bytes]]:
    """Reading rows of ``table`` (``outbox`` or ``audit``), read beside the running agent."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        if table == "outbox":
            q = "SELECT id, body FROM outbox WHERE kind = 'reading' ORDER BY id"
        else:
            q = "SELECT outbox_id, body FROM audit ORDER BY n"
        return [(int(i), bytes(b)) for i, b in db.execute(q)]
    finally:
        db.close()


def outbox_depth(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM outbox WHERE kind = 'reading'").fetchone()[0])
    finally:
        db.close()


# -- the cloud side -------------------------------------------------------------------------------
class CountingIngest(IngestService):
    """The real ingest service, also counting what it was handed (for the assertions)."""

    def __init__(self, db: Database, timing: CommandTiming) -> None:
        super().__init__(db, timing)
        self.batches: list[tuple[str, int, int]] = []  # (boot_id, seq, readings)
        self.stored = 0
        self.duplicates = 0

    async def store_telemetry_many(
        self, topic_gateway: str, batches: Sequence[TelemetryBatch], received_at: datetime
    ) -> list[IngestResult]:
        results = await super().store_telemetry_many(topic_gateway, batches, received_at)
        for batch, result in zip(batches, results, strict=True):
            self.batches.append((batch.boot_id, batch.seq, len(batch.readings)))
            self.stored += result.stored
            self.duplicates += result.duplicates
            assert not result.quarantined, result.quarantined
        return results


@dataclass
class Cloud:
    db: Database
    seeded: Seeded
    service: CountingIngest
    consumer: IngestConsumer
    gateway_code: str
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.consumer.run(), name="ingest")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def stored(self) -> set[ReadingKey]:
        device_of = {ch: key for key, ch in self.seeded.channels.items()}
        async with self.db.tenant(self.seeded.tenant_id) as conn:
            rows = (
                await conn.execute(
                    sa.text(
                        "SELECT channel_id, measured_at FROM reading WHERE channel_id = ANY(:chs)"
                    ),
                    {"chs": list(device_of)},
                )
            ).all()
        keys = [(device_of[r.channel_id], 1, r.measured_at) for r in rows]
        assert len(keys) == len(set(keys)), "a reading is stored twice"
        return set(keys)

    async def row_count(self) -> int:
        async with self.db.tenant(self.seeded.tenant_id) as conn:
            return int(
                await conn.scalar(
                    sa.text("SELECT count(*) FROM reading WHERE channel_id = ANY(:chs)"),
                    {"chs": list(self.seeded.channels.values())},
                )
                or 0
            )

    async def ledger_consistent(self, price: Decimal, opening: Decimal) -> None:
        """Charged exactly once per kWh: per point, consumption = last - first register,
        charge = consumption x price, wallet = opening - billed charge; ``prepay check``
        finds no breach."""
        async with self.db.tenant(self.seeded.tenant_id) as conn:
            for key, point in self.seeded.points.items():
                ch = self.seeded.channels[key]
                lo, hi = (
                    await conn.execute(
                        sa.text("SELECT min(total), max(total) FROM reading WHERE channel_id = :c"),
                        {"c": ch},
                    )
                ).one()
                st = (
                    await conn.execute(
                        sa.text(
                            "SELECT consumption_total, charge_exact_total, charge_billed_total "
                            "FROM rating_state WHERE service_point_id = :p"
                        ),
                        {"p": point},
                    )
                ).one()
                balance = await conn.scalar(
                    sa.text(
                        "SELECT la.balance FROM account a JOIN ledger_account la "
                        "ON la.id = a.wallet_id WHERE a.number = :a"
                    ),
                    {"a": self.seeded.accounts[key]},
                )
                assert st.consumption_total == hi - lo, (key, st, lo, hi)
                assert st.charge_exact_total == st.consumption_total * price, (key, st)
                # the live balance carries every rated fen (journaled per hour window)
                assert balance == opening - st.charge_billed_total, (key, balance, st)
        report = await check(self.db, [self.seeded.tenant_id])
        assert report.ok, report.breaches


async def start_meters(n: int) -> tuple[ModbusTcpSimulator, list[SimulatedMeter]]:
    profile = load_profiles()[PROFILE]
    meters = [
        SimulatedMeter(
            profile,
            unit,
            curve=LoadCurve(base=2.0, peak=4.0, seed=unit),
            speed=60.0,
            start_total=100.0 * unit,
        )
        for unit in range(1, n + 1)
    ]
    sim = ModbusTcpSimulator(meters)
    await sim.start()
    return sim, meters


async def make_cloud(
    db: Database, mqtt_url: str, topic_prefix: str, shared_group: str | None, meters: int
) -> tuple[Cloud, Decimal, Decimal]:
    opening, price = Decimal("100000.00"), Decimal("1.0000")
    spec = group_spec(meters=meters, balance=str(opening), price=str(price))
    spec.max_rate = Decimal(1000)  # the simulators run 60x faster than wall-clock time
    seeded = await seed_group(db, spec)
    timing = CommandTiming(deadline=timedelta(seconds=30), retry=timedelta(seconds=5))
    service = CountingIngest(db, timing)
    consumer = IngestConsumer(
        service, mqtt_url, Topics(topic_prefix), shared_group, f"ingest-{uuid.uuid4().hex[:8]}"
    )
    return Cloud(db, seeded, service, consumer, spec.gateway_code), opening, price


# -- a. the broker is down for a minute ------------------------------------------------------------
async def test_broker_outage_loses_and_duplicates_nothing(
    db: Database,
    broker: Mosquitto,
    shared_group: str | None,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    n_meters = 3
    cloud, opening, price = await make_cloud(db, broker.url, topic_prefix, shared_group, n_meters)
    sim, _ = await start_meters(n_meters)
    data_dir = tmp_path / "gw"
    outbox = prepare_outbox(data_dir)
    agent = Agent(
        AgentConfig(
            gateway=cloud.gateway_code,
            mqtt_url=broker.url,
            mqtt_prefix=topic_prefix,
            data_dir=data_dir,
            poll_interval_s=0.5,
            publish_batch=50,
            heartbeat_s=5.0,
            reconnect_min_s=0.5,
            reconnect_max_s=3.0,
            buses=[
                BusConfig(
                    name="bus1",
                    port=sim.port,
                    timeout_s=0.5,
                    devices=[
                        DeviceConfig(key=f"m{u}", profile=PROFILE, unit=u)
                        for u in range(1, n_meters + 1)
                    ],
                )
            ],
        ),
        load_profiles(),
    )
    cloud.start()
    await asyncio.wait_for(cloud.consumer.ready.wait(), 10)
    agent_task = asyncio.create_task(agent.run(), name="agent")
    try:
        # Normal operation first: readings flow.
        async def flowing() -> bool:
            return await cloud.row_count() >= 2 * n_meters

        await wait_for(flowing, 15, "readings before the outage")

        # The broker goes away for a minute; polling goes on.
        await broker.stop()
        polled_before = len(outbox_rows(outbox, "audit"))
        await asyncio.sleep(OUTAGE_S)
        assert not agent.connected.is_set()
        backlog = agent.outbox.depth()
        polled_during = len(outbox_rows(outbox, "audit")) - polled_before
        # ~2 polls/s per meter; allow for the scheduler's slack, not for a stall
        assert polled_during >= n_meters * OUTAGE_S, polled_during
        assert backlog >= polled_during * 0.9, (backlog, polled_during)

        await broker.start()
        await asyncio.wait_for(agent.connected.wait(), 15)
        # The cloud consumer must find its way back by itself (its backoff grows to 30 s).
        await asyncio.wait_for(cloud.consumer.ready.wait(), 45)
        await asyncio.sleep(2.0)  # a little more polling with the link up

        # Silence the meters (polls now time out, nothing new is queued) and let it drain.
        sim.faults.silent.update(range(1, n_meters + 1))
        await asyncio.sleep(1.5)

        async def drained() -> bool:
            return agent.outbox.depth() == 0

        await wait_for(drained, 30, "the outbox to drain")
        taken = {_key(b) for _, b in outbox_rows(outbox, "audit")}

        async def all_arrived() -> bool:
            return len(await cloud.stored()) >= len(taken)

        with contextlib.suppress(AssertionError):
            await wait_for(all_arrived, 20, "every reading in the cloud")
        stored = await cloud.stored()
        missing = sorted(taken - stored)
        extra = stored - taken
        assert not missing, (
            f"{len(missing)} of {len(taken)} readings never arrived "
            f"(first {missing[:3]}, last {missing[-3:]}); "
            f"consumer rejected: {cloud.consumer.rejected}"
        )
        assert not extra, f"{len(extra)} readings in the cloud that the agent never took"
        assert await cloud.row_count() == len(taken)
        assert len(taken) >= polled_before + polled_during
        # Gaps in one boot's batch numbers are expected here, not loss: a batch the broker
        # took while no ingest worker was subscribed got no receipt, and its readings came
        # again in a later batch (checked above: nothing missing, nothing twice).
        assert any(b == agent.boot_id for b, _, _ in cloud.service.batches)
        await cloud.ledger_consistent(price, opening)
    finally:
        agent_task.cancel()
        await asyncio.gather(agent_task, return_exceptions=True)
        await cloud.stop()
        with contextlib.suppress(Exception):
            await sim.stop()


# -- b. the agent is killed mid-publish ----------------------------------------------------------
def agent_yaml(
    path: Path, gateway: str, mqtt_url: str, prefix: str, data_dir: Path, sim_port: int, n: int
) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "gateway": gateway,
                "mqtt_url": mqtt_url,
                "mqtt_prefix": prefix,
                "data_dir": str(data_dir),
                "poll_interval_s": 0.1,
                "publish_batch": 5,
                "heartbeat_s": 5,
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1.0,
                "buses": [
                    {
                        "name": "bus1",
                        "transport": "modbus_tcp",
                        "port": sim_port,
                        "timeout_s": 0.5,
                        "devices": [
                            {"key": f"m{u}", "profile": PROFILE, "unit": u} for u in range(1, n + 1)
                        ],
                    }
                ],
            }
        )
    )
    return path


def spawn_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(AGENT_BIN), "run", "--config", str(config)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_agent_sigkill_mid_publish_loses_nothing_and_resends_harmlessly(
    db: Database,
    broker: Mosquitto,
    shared_group: str | None,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    n_meters = 6
    cloud, opening, price = await make_cloud(db, broker.url, topic_prefix, shared_group, n_meters)
    sim, _ = await start_meters(n_meters)
    data_dir = tmp_path / "gw"
    outbox = prepare_outbox(data_dir)
    config = agent_yaml(
        tmp_path / "agent.yaml",
        cloud.gateway_code,
        broker.url,
        topic_prefix,
        data_dir,
        sim.port,
        n_meters,
    )
    log = tmp_path / "agent.log"
    cloud.start()
    await asyncio.wait_for(cloud.consumer.ready.wait(), 10)
    proc: subprocess.Popen[bytes] | None = None
    try:
        # Build a backlog while the gateway's own link is down (its broker address leads
        # nowhere, as on a dead cellular link), so the next start has something to drain.
        offline = agent_yaml(
            tmp_path / "offline.yaml",
            cloud.gateway_code,
            f"mqtt://127.0.0.1:{free_port()}",
            topic_prefix,
            data_dir,
            sim.port,
            n_meters,
        )
        proc = spawn_agent(offline, log)

        async def backlog() -> bool:
            return outbox_depth(outbox) >= 600

        await wait_for(backlog, 60, "a backlog of 600 readings")
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        # Start it with the link up and kill it while it publishes: once some batches have
        # left the outbox and more are still in it.
        start_depth = outbox_depth(outbox)
        proc = spawn_agent(config, log)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 40
        while True:
            depth = outbox_depth(outbox)
            if 0 < depth <= start_depth - 50:
                break
            assert depth > 0, "drained before the kill: nothing was in flight"
            assert loop.time() < deadline, "the agent never started publishing"
            await asyncio.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        proc = None
        left = outbox_rows(outbox)
        assert left, "the outbox was empty at the kill: nothing was in flight"

        async def settled() -> bool:  # the cloud has what the broker acknowledged
            n = len(await cloud.stored())
            await asyncio.sleep(0.5)
            return n == len(await cloud.stored())

        await wait_for(settled, 20, "ingest to settle")
        stored_at_kill = await cloud.stored()
        assert stored_at_kill, "nothing reached the cloud before the kill"

        # The window the kill may hit: PUBACK received, rows not yet deleted. Make sure the
        # restart re-sends some delivered readings, as it would after such a kill.
        delivered = [(i, b) for i, b in outbox_rows(outbox, "audit") if _key(b) in stored_at_kill]
        resend = delivered[-20:]
        db3 = sqlite3.connect(outbox, isolation_level=None)
        try:
            db3.executemany(
                "INSERT INTO outbox (kind, body) VALUES ('reading', ?)", [(b,) for _, b in resend]
            )
        finally:
            db3.close()
        duplicates_before = cloud.service.duplicates

        # Restart on the same data directory; let it poll a while after the restart.
        proc = spawn_agent(config, log)
        await asyncio.sleep(3.0)
        sim.faults.silent.update(range(1, n_meters + 1))  # no new readings from here on
        await asyncio.sleep(1.5)

        async def drained() -> bool:
            return outbox_depth(outbox) == 0

        await wait_for(drained, 60, "the restarted agent to drain its outbox")
        taken = {_key(b) for _, b in outbox_rows(outbox, "audit")}

        async def all_arrived() -> bool:
            return len(await cloud.stored()) >= len(taken)

        with contextlib.suppress(AssertionError):
            await wait_for(all_arrived, 20, "every reading in the cloud")
        stored = await cloud.stored()
        missing = taken - stored
        assert not missing, f"{len(missing)} of {len(taken)} readings lost"
        assert stored == taken
        assert {_key(b) for _, b in left} <= stored  # in the outbox at the kill: delivered
        assert await cloud.row_count() == len(taken)  # re-sent ones did not add rows
        assert cloud.service.duplicates - duplicates_before >= len(resend)
        assert cloud.service.stored == len(taken)  # each reading stored (and rated) once
        boots = {b for b, _, _ in cloud.service.batches}
        assert len(boots) == 2, boots  # two boots: the second has its own boot id
        await cloud.ledger_consistent(price, opening)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        await cloud.stop()
        with contextlib.suppress(Exception):
            await sim.stop()
