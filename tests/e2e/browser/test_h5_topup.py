"""The tenant's phone, end to end (issue 15): a shop whose supply was cut — a simulated
DDSY1352 behind a real gateway agent, Mosquitto, ingest and the dispatcher — logs in on the
H5 page at a phone's size, binds its account, tops up ¥30 through WeChat Pay's H5 cashier
(the stand-in), and the same screen shows the money in and the supply back on. The wallet
moved once and `prepay check` holds."""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloud.check import check
from cloud.control.dispatcher import Dispatcher
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.consumer import IngestConsumer
from cloud.ingest.service import IngestService
from contract.mqtt import Topics
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
from meter_profiles.loader import load_profiles
from meter_profiles.simulators.meter import LoadCurve, SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator
from tests.conftest import group_spec, wait_for
from tests.e2e.browser.conftest import ARTIFACTS
from tests.integration.pay_helpers import add_group, credits, pay_env, wallet

pytestmark = pytest.mark.e2e
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True}


async def test_a_cut_tenant_tops_up_on_the_phone_and_sees_the_supply_back(
    db: Database,
    db_url: str,
    mqtt_url: str,
    shared_group: str | None,
    topic_prefix: str,
    tmp_path: Path,
    browser: Any,
) -> None:
    shots = ARTIFACTS / "h5"
    shots.mkdir(parents=True, exist_ok=True)
    spec = group_spec(meters=1, balance="0.20", price="1.0000")
    spec.max_rate = Decimal(1000)  # the simulator runs 100x faster than wall-clock time
    async with pay_env(db_url) as env:
        g = await add_group(env, db, spec=spec)
        async with db.tenant(g.seeded.tenant_id) as conn:
            await conn.execute(sa.text("UPDATE site SET quiet_start = NULL, quiet_end = NULL"))
        profile = load_profiles()["acrel-ddsy1352-modbus"]
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
        env.service.timing = timing
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
        tasks = [asyncio.create_task(c.run()) for c in (ingest, dispatcher)]
        await asyncio.wait_for(ingest.ready.wait(), 10)
        await asyncio.wait_for(dispatcher.ready.wait(), 10)
        tasks.append(asyncio.create_task(agent.run()))
        channel = g.seeded.channels["m1"]

        async def reported() -> object:
            async with db.tenant(g.seeded.tenant_id) as conn:
                return await conn.scalar(
                    sa.text("SELECT reported FROM supply_twin WHERE channel_id = :c"),
                    {"c": channel},
                )

        async def cut() -> bool:
            return await reported() == "off"

        context = await browser.new_context(locale="zh-CN", **PHONE)
        page = await context.new_page()
        try:
            await wait_for(cut, 30, "the meter cut at zero credit")
            assert not meter.channels[1].relay_closed
            before = await wallet(db, g)
            assert before <= 0

            await page.goto(f"{env.base}/h5/{g.slug}/")
            await page.get_by_label("手机号", exact=True).fill(g.phone)
            await page.get_by_role("button", name="获取验证码").click()
            hint = page.locator("#dev-code")
            await hint.wait_for()
            code = re.search(r"\d{6}", await hint.inner_text())
            assert code is not None
            await page.get_by_label("验证码", exact=True).fill(code.group(0))
            await page.screenshot(path=str(shots / "1-login.png"))
            await page.get_by_role("button", name="登录", exact=True).click()

            await page.get_by_label("户号").fill(g.account)
            await page.get_by_label("预留手机号").fill(g.phone)
            await page.screenshot(path=str(shots / "2-bind.png"))
            await page.get_by_role("button", name="绑定", exact=True).click()
            await page.get_by_text("已断电").wait_for()
            await page.screenshot(path=str(shots / "3-cut.png"), full_page=True)

            await page.get_by_role("button", name="¥30.00").click()
            pay = page.get_by_role("button", name="微信支付 ¥30.00")
            await pay.dblclick()  # a double tap pays once
            await page.wait_for_url(re.compile(r".*/standin/cashier.*"))
            await page.screenshot(path=str(shots / "4-cashier.png"))
            await page.get_by_role("button", name="确认支付").click()
            await page.wait_for_url(re.compile(rf".*/h5/{g.slug}/.*"))
            await page.get_by_text("已恢复供电").wait_for(timeout=15000)
            await page.screenshot(path=str(shots / "5-restored.png"), full_page=True)
            assert await page.locator(".point.on").count() == 1
            assert meter.channels[1].relay_closed
            assert await reported() == "on"
        finally:
            await context.close()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sim.stop()
        async with db.tenant(g.seeded.tenant_id) as conn:
            orders = (
                await conn.execute(sa.text("SELECT out_trade_no, status FROM payment_order"))
            ).all()
        assert [o.status for o in orders] == ["paid"]  # the double tap made one order
        assert await credits(db, g, orders[0].out_trade_no) == 1
        after = await wallet(db, g)
        assert after > before  # (the meter went on using power since)
    report = await check(db, [g.seeded.tenant_id])
    assert report.ok, report.breaches
