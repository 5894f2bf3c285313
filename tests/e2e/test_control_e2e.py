"""Prepaid control end to end, for a Modbus and a DL/T 645 meter: simulated meter on a TCP
bus → real gateway agent → real broker → ingest (rating, policy) → dispatcher → the meter's
relay, and the operator API on top (DESIGN.md §6).

- credit runs out → the cloud trips → the simulated relay is really open (consumption
  stops) and the twin reports off; a counter top-up → close → relay on, twin reports on;
- keep-power (保电) set by an operator reaches the meter; credit runs out and nothing is
  cut; an operator's trip is refused (409), and a trip sent straight to the meter on the
  gateway's command topic is refused by the meter itself; once keep-power is lifted the
  point in arrears is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cloud.control.dispatcher import Dispatcher
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.consumer import IngestConsumer
from cloud.ingest.service import IngestService
from cloud.mqtt import client as mqtt_client
from cloud.registry.service import MeterSpec, Seeded, seed_group
from cloud.settings import CloudSettings
from contract.mqtt import Ack, AckStatus, Command, CommandAction, DownKind, Topics, UpKind, dump
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
from meter_profiles.loader import load_profiles
from meter_profiles.simulators.dlt645 import Dlt645Responder
from meter_profiles.simulators.line import Faults, LineServer
from meter_profiles.simulators.meter import LoadCurve, SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator
from tests.conftest import admin_auth, api_client, group_spec, wait_for

pytestmark = pytest.mark.e2e

PROFILES = {"modbus": "acrel-ddsy1352-modbus", "dlt645": "dlt645-2007-prepaid"}
# What each meter answers when keep-power makes it refuse a trip: Modbus exception 04
# (server device failure), DL/T 645 error byte b2 (wrong password / unauthorised).
REFUSAL = {"modbus": {"exception_code": "4"}, "dlt645": {"error_code": "0x04"}}
TIMING = CommandTiming(deadline=timedelta(seconds=30), retry=timedelta(seconds=2))
BALANCE_Q = (
    "SELECT la.balance FROM account a JOIN ledger_account la ON la.id = a.wallet_id "
    "WHERE a.number = :a"
)


@dataclass
class Rig:
    """One gateway with one simulated meter ("m1") and the cloud around it, running."""

    protocol: str
    db: Database
    seeded: Seeded
    meter: SimulatedMeter
    http: httpx.AsyncClient
    auth: dict[str, str]
    topics: Topics
    mqtt_url: str
    gateway: str

    @property
    def channel(self) -> uuid.UUID:
        return self.seeded.channels["m1"]

    @property
    def point(self) -> uuid.UUID:
        return self.seeded.points["m1"]

    @property
    def relay_closed(self) -> bool:
        return self.meter.channels[1].relay_closed

    async def q(self, query: str) -> Any:
        async with self.db.tenant(self.seeded.tenant_id) as conn:
            return await conn.scalar(
                sa.text(query), {"c": self.channel, "a": self.seeded.accounts["m1"]}
            )

    async def twin(self, column: str) -> Any:
        return await self.q(f"SELECT {column} FROM supply_twin WHERE channel_id = :c")

    async def balance(self) -> Decimal:
        b = await self.q(BALANCE_Q)
        assert isinstance(b, Decimal)
        return b

    async def acked(self, action: str) -> None:
        """Wait for the latest ``action`` command's ack: acks have a lane of their own, so
        the meter's state may show in a reading before the ack is in."""

        async def done() -> bool:
            states = await self.commands(action)
            return bool(states) and states[-1] == "acked"

        await wait_for(done, 20, f"the {action} ack")

    async def commands(self, action: str) -> list[str]:
        async with self.db.tenant(self.seeded.tenant_id) as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT state FROM device_command WHERE channel_id = :c AND action = :x "
                    "ORDER BY created_at"
                ),
                {"c": self.channel, "x": action},
            )
            return [r[0] for r in rows]

    async def events(self) -> list[str]:
        async with self.db.tenant(self.seeded.tenant_id) as conn:
            rows = await conn.execute(
                sa.text("SELECT kind FROM control_event WHERE service_point_id = :p ORDER BY at"),
                {"p": self.point},
            )
            return [r[0] for r in rows]

    async def control(self, action: str, reason: str) -> httpx.Response:
        return await self.http.post(
            f"/api/v1/service-points/{self.point}/control",
            json={"action": action, "reason": reason},
            headers=self.auth,
        )

    async def view(self) -> dict[str, Any]:
        r = await self.http.get(f"/api/v1/service-points/{self.point}/control", headers=self.auth)
        assert r.status_code == 200, r.text
        view: dict[str, Any] = r.json()
        return view

    async def consuming(self, seconds: float = 1.0) -> bool:
        """Whether the meter's register moves (the simulator counts on every request)."""
        self.meter.advance()
        before = self.meter.channels[1].total
        await asyncio.sleep(seconds)
        self.meter.advance()
        return self.meter.channels[1].total > before


async def _serve(
    protocol: str, meter: SimulatedMeter
) -> tuple[BusConfig, Callable[[], Awaitable[None]]]:
    """Serve ``meter`` on a TCP bus: Modbus TCP, or DL/T 645 frames as a serial-to-Ethernet
    converter carries them. Returns the agent's bus config and how to stop the server."""
    model = PROFILES[protocol]
    if protocol == "modbus":
        sim = ModbusTcpSimulator([meter])
        await sim.start()
        device = DeviceConfig(key="m1", profile=model, unit=meter.unit)
        return BusConfig(name="bus1", port=sim.port, devices=[device]), sim.stop
    server = LineServer(Dlt645Responder([meter], Faults()))
    port = await server.start_tcp()
    device = DeviceConfig(key="m1", profile=model, address=meter.address)
    return BusConfig(name="bus1", transport="tcp", port=port, devices=[device]), server.stop


@contextlib.asynccontextmanager
async def rig(
    protocol: str,
    balance: str,
    db: Database,
    db_url: str,
    mqtt_url: str,
    shared_group: str | None,
    topic_prefix: str,
    data_dir: Path,
) -> AsyncIterator[Rig]:
    spec = group_spec(meters=0, balance=balance, price="1.0000")
    spec.meters = [MeterSpec("m1", 1, "Shop 1", Decimal(balance), PROFILES[protocol])]
    spec.max_rate = Decimal(1000)  # the simulator runs 100x faster than wall-clock time
    seeded = await seed_group(db, spec)
    profiles = load_profiles()
    # 3.6 kW at 100x: 0.1 kWh (¥0.10) per wall-clock second. The DL/T 645 profile is a
    # money-prepaid meter; here it runs cloud-controlled (the meter only obeys trip/close).
    meter = SimulatedMeter(
        profiles[PROFILES[protocol]],
        1,
        curve=LoadCurve(base=3.6, peak=3.6, noise=0.0),
        speed=100.0,
        start_total=50.0,
        meter_prepaid=False,
    )
    bus, stop_sim = await _serve(protocol, meter)
    topics = Topics(topic_prefix)
    agent = Agent(
        AgentConfig(
            gateway=spec.gateway_code,
            mqtt_url=mqtt_url,
            mqtt_prefix=topic_prefix,
            data_dir=data_dir,
            poll_interval_s=0.5,
            buses=[bus],
        ),
        profiles,
    )
    ingest = IngestConsumer(IngestService(db, TIMING), mqtt_url, topics, shared_group)
    dispatcher = Dispatcher(db, mqtt_url, topics, TIMING)
    tasks = [asyncio.create_task(c.run()) for c in (ingest, dispatcher)]
    try:
        await asyncio.wait_for(ingest.ready.wait(), 10)
        await asyncio.wait_for(dispatcher.ready.wait(), 10)
        tasks.append(asyncio.create_task(agent.run()))
        settings = CloudSettings(database_url=db_url, command_deadline_s=30, command_retry_s=2)
        async with api_client(settings, db_url) as http:
            auth = await admin_auth(http, spec.slug)
            yield Rig(
                protocol,
                db,
                seeded,
                meter,
                http,
                auth,
                topics,
                mqtt_url,
                spec.gateway_code,
            )
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await stop_sim()


@pytest.fixture(params=["modbus", "dlt645"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_exhaustion_trips_the_meter_and_a_topup_restores_it(
    protocol: str,
    db: Database,
    db_url: str,
    mqtt_url: str,
    shared_group: str | None,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    async with rig(
        protocol, "0.30", db, db_url, mqtt_url, shared_group, topic_prefix, tmp_path
    ) as r:
        # ¥0.30 lasts about 3 s; the reading that takes the balance to zero trips it.
        async def tripped() -> bool:
            return bool(await r.twin("reported") == "off")

        await wait_for(tripped, 25, "the meter to report its relay open")
        assert not r.relay_closed
        assert await r.balance() <= 0
        assert await r.twin("desired") == "off"
        await r.acked("trip")
        assert not await r.consuming(1.5)  # the simulator's consumption stopped
        assert (
            await r.q(
                "SELECT supply_on FROM reading WHERE channel_id = :c "
                "ORDER BY measured_at DESC LIMIT 1"
            )
            is False
        )
        assert "supply_cut" in await r.events()

        sale = await r.http.post(
            "/api/v1/sales",
            json={"account": r.seeded.accounts["m1"], "amount": "5.00", "method": "cash"},
            headers={**r.auth, "Idempotency-Key": f"ctl-{uuid.uuid4().hex}"},
        )
        assert sale.status_code == 201, sale.text

        async def restored() -> bool:
            return bool(await r.twin("reported") == "on")

        await wait_for(restored, 15, "the meter to report its relay closed")
        assert r.relay_closed
        assert await r.twin("desired") == "on"
        await r.acked("close")
        assert await r.consuming(1.0)  # consumption resumed
        assert "supply_restored" in await r.events()
        view = await r.view()
        assert view["decision"]["supply"] == "on"
        assert view["twin"]["reported"] == "on" and not view["in_arrears"]


async def test_keep_power_refuses_the_trip_in_the_cloud_and_at_the_meter(
    protocol: str,
    db: Database,
    db_url: str,
    mqtt_url: str,
    shared_group: str | None,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    async with rig(
        # ¥1.20 lasts ~12 s: keep-power is set well before, even on a loaded machine
        protocol,
        "1.20",
        db,
        db_url,
        mqtt_url,
        shared_group,
        topic_prefix,
        tmp_path,
    ) as r:

        async def reading() -> bool:
            return bool(await r.q("SELECT count(*) FROM reading WHERE channel_id = :c"))

        await wait_for(reading, 15, "a first reading")
        keep = await r.control("keep_power_on", "hospital")
        assert keep.status_code == 200, keep.text
        assert keep.json()["done"] and keep.json()["supply"] == "on"

        async def kept() -> bool:
            return await r.twin("reported_keep") is True

        await wait_for(kept, 15, "keep-power acknowledged by the meter")
        assert await r.commands("keep_power_on") == ["acked"]
        assert r.meter.channels[1].keep_power

        # Credit runs out (¥1.20 at ¥0.10/s) and goes on falling: nothing is cut.
        async def deep_in_arrears() -> bool:
            return await r.balance() <= Decimal("-0.30")

        await wait_for(deep_in_arrears, 45, "the balance to fall below zero")
        assert await r.commands("trip") == []
        assert r.relay_closed and await r.consuming(0.5)
        assert await r.twin("desired") == "on" and await r.twin("reported") == "on"
        view = await r.view()
        assert view["in_arrears"]
        assert view["decision"]["supply"] == "on"
        assert "keep-power" in view["decision"]["reason"]
        assert view["keep_power"]["reason"] == "hospital"

        # An operator's trip is refused in the cloud.
        refused = await r.control("trip", "arrears")
        assert refused.status_code == 409, refused.text
        assert "keep-power" in refused.json()["detail"]
        assert await r.commands("trip") == []

        # A trip sent straight to the meter (bypassing the cloud's policy) is refused by
        # the meter itself, and the gateway's ack carries the meter's answer.
        now = datetime.now(UTC)
        cmd = Command(
            id=uuid.uuid4(),
            device="m1",
            action=CommandAction.TRIP,
            issued_at=now,
            deadline=now + timedelta(seconds=30),
        )
        async with mqtt_client(r.mqtt_url, f"test-{uuid.uuid4().hex[:8]}") as mqtt:
            await mqtt.subscribe(r.topics.up(r.gateway, UpKind.ACK), qos=1)
            await mqtt.publish(r.topics.down(r.gateway, DownKind.CMD), dump(cmd), qos=1)
            async with asyncio.timeout(15):
                async for message in mqtt.messages:
                    assert isinstance(message.payload, bytes)
                    ack = Ack.model_validate_json(message.payload)
                    if ack.id == cmd.id:
                        break
        assert ack.status is AckStatus.FAILED, ack
        assert REFUSAL[protocol].items() <= ack.meter_answer.items(), ack.meter_answer
        assert "refused" in ack.detail or "exception" in ack.detail, ack.detail
        assert r.relay_closed and r.meter.channels[1].keep_power
        assert await r.consuming(0.5)
        assert ("trip", 1) in r.meter.controls  # it did reach the meter

        # Keep-power lifted: the point in arrears is cut (keep-power off reaches the meter
        # before the trip does).
        lifted = await r.control("keep_power_off", "discharged")
        assert lifted.status_code == 200, lifted.text

        async def tripped() -> bool:
            return await r.twin("reported") == "off" and await r.twin("reported_keep") is False

        await wait_for(tripped, 20, "the trip once keep-power is off")
        assert not r.relay_closed and not r.meter.channels[1].keep_power
        await r.acked("trip")
