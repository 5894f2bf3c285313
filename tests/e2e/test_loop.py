"""The whole loop once, for real: simulated DDSY1352 → gateway agent → MQTT → ingest →
rating → ledger → trip at zero → simulator stops → counter top-up → close → supply back;
and the tenant is told (a notification worker woken by the outbox, the Twilio stand-in):
one SMS in Chinese per alarm crossed, the cut, the top-up received and the restore."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from cloud.api.app import create_app
from cloud.check import check
from cloud.control.dispatcher import Dispatcher
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.consumer import IngestConsumer
from cloud.ingest.service import IngestService
from cloud.rating.service import post_closed_windows
from cloud.registry.service import seed_group
from cloud.runtime import Wiring
from cloud.settings import CloudSettings
from contract.mqtt import Topics
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
from meter_profiles.loader import load_profiles
from meter_profiles.simulators.meter import LoadCurve, SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator
from notifications.worker import NotifyWorker
from standins.twilio import TwilioStandIn
from tests.conftest import group_spec, wait_for
from tests.integration.notify_helpers import twilio

pytestmark = pytest.mark.e2e


async def test_exhaustion_trips_and_topup_restores(
    db: Database,
    db_url: str,
    mqtt_url: str,
    shared_group: str | None,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    spec = group_spec(meters=1, balance="0.30", price="1.0000")
    spec.max_rate = Decimal(1000)  # the simulator runs 100x faster than wall-clock time
    spec.alarms = (Decimal("0.20"), Decimal("0.10"))
    seeded = await seed_group(db, spec)
    async with db.tenant(seeded.tenant_id) as conn:  # no quiet hours: any time of day
        await conn.execute(sa.text("UPDATE site SET quiet_start = NULL, quiet_end = NULL"))
        await conn.execute(sa.text("UPDATE customer SET phone = '13800138001'"))
    sms_in = TwilioStandIn(callbacks=False)
    await sms_in.start()
    notify = NotifyWorker(db, {"sms": twilio(sms_in)}, sweep_s=3600)  # woken by the outbox
    profile = load_profiles()["acrel-ddsy1352-modbus"]
    # 3.6 kW at 100x: 0.1 kWh (¥0.10) per wall-clock second, so ¥0.30 lasts about 3 s.
    meter = SimulatedMeter(
        profile,
        1,
        curve=LoadCurve(base=3.6, peak=3.6, noise=0.0),
        speed=100.0,
        start_total=50.0,
    )
    sim = ModbusTcpSimulator([meter])
    await sim.start()
    topics = Topics(topic_prefix)
    timing = CommandTiming(deadline=timedelta(seconds=30), retry=timedelta(seconds=2))
    agent = Agent(
        AgentConfig(
            gateway=spec.gateway_code,
            mqtt_url=mqtt_url,
            mqtt_prefix=topic_prefix,
            data_dir=tmp_path / "gw",
            poll_interval_s=0.5,
            buses=[
                BusConfig(
                    name="bus1",
                    port=sim.port,
                    devices=[DeviceConfig(key="m1", profile=profile.model, unit=1)],
                )
            ],
        ),
        load_profiles(),
    )
    ingest = IngestConsumer(IngestService(db, timing), mqtt_url, topics, shared_group)
    dispatcher = Dispatcher(db, mqtt_url, topics, timing)
    wiring = Wiring.build(CloudSettings(database_url=db_url), db_url)
    wiring.services.timing = timing
    tasks = [asyncio.create_task(c.run()) for c in (ingest, dispatcher, notify)]
    await asyncio.wait_for(ingest.ready.wait(), 10)
    await asyncio.wait_for(dispatcher.ready.wait(), 10)
    await asyncio.wait_for(notify.ready.wait(), 10)
    tasks.append(asyncio.create_task(agent.run()))
    channel = seeded.channels["m1"]
    account = seeded.accounts["m1"]

    async def q(query: str) -> object:
        async with db.tenant(seeded.tenant_id) as conn:
            return await conn.scalar(sa.text(query), {"c": channel, "a": account})

    balance_q = (
        "SELECT la.balance FROM account a JOIN ledger_account la ON la.id = a.wallet_id "
        "WHERE a.number = :a"
    )
    try:
        # Balance falls with consumption, and the trip happens at zero.
        async def readings() -> bool:
            return int(await q("SELECT count(*) FROM reading WHERE channel_id = :c")) >= 2

        await wait_for(readings, 15, "readings stored")

        async def tripped() -> bool:
            return await q("SELECT reported FROM supply_twin WHERE channel_id = :c") == "off"

        await wait_for(tripped, 20, "trip reported by the meter")
        assert not meter.channels[1].relay_closed
        balance = await q(balance_q)
        assert isinstance(balance, Decimal) and balance <= 0

        async def trip_acked() -> bool:  # the ack has a lane of its own: it may come later
            return (
                await q(
                    "SELECT state FROM device_command WHERE channel_id = :c AND action = 'trip'"
                )
                == "acked"
            )

        await wait_for(trip_acked, 10, "the trip's ack")
        # The simulator's consumption stops: the register no longer moves.
        frozen = meter.channels[1].total
        await asyncio.sleep(1.5)
        assert meter.channels[1].total == frozen
        assert (
            await q(
                "SELECT supply_on FROM reading WHERE channel_id = :c "
                "ORDER BY measured_at DESC LIMIT 1"
            )
            is False
        )

        # An operator's counter sale credits the wallet and restores supply.
        app = create_app(wiring.services)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http:
            tok = (
                await http.post(
                    "/api/v1/auth/token",
                    json={
                        "tenant": spec.slug,
                        "username": "admin",
                        "password": spec.admin_password,
                    },
                )
            ).json()["access_token"]
            sale = await http.post(
                "/api/v1/sales",
                json={"account": account, "amount": "5.00", "method": "cash"},
                headers={"authorization": f"Bearer {tok}", "Idempotency-Key": "loop-topup-1"},
            )
            assert sale.status_code == 201, sale.text

        async def restored() -> bool:
            return await q("SELECT reported FROM supply_twin WHERE channel_id = :c") == "on"

        await wait_for(restored, 15, "supply restored")
        assert meter.channels[1].relay_closed
        before = meter.channels[1].total
        await asyncio.sleep(1.0)
        assert meter.channels[1].total > before  # consumption resumed

        kinds = ["low_balance_1", "low_balance_2", "supply_cut", "topup_received"]
        kinds.append("supply_restored")

        async def told() -> bool:
            return len(sms_in.messages) >= len(kinds)

        await wait_for(told, 15, "the tenant's messages")
        await asyncio.sleep(0.5)  # (a duplicate would arrive by now)
        async with db.tenant(seeded.tenant_id) as conn:
            notes = (
                await conn.execute(
                    sa.text("SELECT cause_kind, status, provider_id FROM notification")
                )
            ).all()
        assert sorted(n.cause_kind for n in notes) == sorted(kinds)
        assert {n.status for n in notes} == {"sent"}
        assert sorted(m.sid for m in sms_in.messages) == sorted(n.provider_id for n in notes)
        assert {m.to for m in sms_in.messages} == {"+8613800138001"}
        bodies = " ".join(m.body for m in sms_in.messages)
        assert "余额不足" in bodies and "已停止供应" in bodies and "已到账¥5.00" in bodies
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await sim.stop()
        await sms_in.stop()
        await wiring.db.dispose()

    report = await check(db, [seeded.tenant_id])
    assert report.ok, report.breaches  # usage so far is live in the balance, not yet journaled
    async with db.tenant(seeded.tenant_id) as conn:  # the hourly job journals it
        await post_closed_windows(
            conn, seeded.tenant_id, datetime.now(UTC) + timedelta(hours=2), timing
        )
    report = await check(db, [seeded.tenant_id])
    assert report.ok, report.breaches
    assert report.entries >= 3  # opening balance, usage, top-up
