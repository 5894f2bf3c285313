"""The business office in a real browser, as a new property group lives it: created with
`prepay tenant create`, its administrator sets up a site, a building, premises, an outlet,
a tariff and a counter operator scoped to that outlet; the operator, in Chromium, opens an
account, installs a simulated meter (its reading comes from the meter through a real
gateway agent), sells ¥50 and downloads the receipt (its text checked), watches the
balance fall with readings, reverses a second sale, swaps the meter, transfers the
premises to a new customer and cancels the account with a cash refund. At the end the
wallets are zero and `prepay check` holds. Once in Chinese, once in English; a screenshot
of every step is kept."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cloud.check import check
from cloud.cli import main as prepay
from cloud.console.i18n import translations
from cloud.console.settings import PERMISSION_LABELS
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
from tests.conftest import wait_for
from tests.e2e.browser.conftest import ARTIFACTS, Live

pytestmark = pytest.mark.e2e

PROFILE = "acrel-ddsy1352-modbus"
WORDS = {
    "zh_CN": {
        "tenant": "物业集团",
        "user": "用户名",
        "password": "密码",
        "login": "登录",
        "name": "客户名称",
        "phone": "电话",
        "premises": "房间",
        "open": "开户",
        "install_form": "装表",
        "gateway": "网关",
        "key": "网关上的表名",
        "profile": "电表型号（规约）",
        "bus": "总线",
        "address": "表地址",
        "read": "现在从电表读取（网关送来的最新读数）",
        "install": "装表",
        "amount": "金额（元）",
        "sell": "收款并售电",
        "reason": "原因",
        "reverse_form": "冲正本笔售电",
        "reverse": "冲正",
        "reversed": "已冲正",
        "swap_form": "换表",
        "final": "旧表止码",
        "initial": "新表起码",
        "swap": "换表",
        "transfer_form": "过户",
        "new_name": "新客户名称",
        "transfer": "过户",
        "cancel_form": "消户",
        "cancel": "消户",
        "closed": "已销户",
        "capitals": "伍拾元整",
    },
    "en": {
        "tenant": "Property group",
        "user": "User",
        "password": "Password",
        "login": "Log in",
        "name": "Customer name",
        "phone": "Phone",
        "premises": "Premises",
        "open": "Open the account",
        "install_form": "Install a meter (装表)",
        "gateway": "Gateway",
        "key": "Meter name on the gateway",
        "profile": "Meter model (profile)",
        "bus": "Bus",
        "address": "Meter address",
        "read": "Read it from the meter now (its newest reading through the gateway)",
        "install": "Install",
        "amount": "Amount (¥)",
        "sell": "Take the money and sell",
        "reason": "Reason",
        "reverse_form": "Reverse this sale (冲正)",
        "reverse": "Reverse",
        "reversed": "Reversed",
        "swap_form": "Swap the meter (换表)",
        "final": "Final reading of the old meter",
        "initial": "Initial reading of the new meter",
        "swap": "Swap",
        "transfer_form": "Transfer (过户)",
        "new_name": "New customer's name",
        "transfer": "Transfer",
        "cancel_form": "Cancel the account (消户)",
        "cancel": "Cancel the account",
        "closed": "closed",
        "capitals": "伍拾元整",
    },
}


async def _setup_group(
    live: Live,
    tmp_path: Path,
    tag: str,
    page: Any,
    lang: str,
    shot: Callable[[str], Awaitable[None]],
) -> dict[str, Any]:
    """`prepay tenant create`, then the administrator's set-up in the console's 设置 pages;
    the installer commissions the gateway with a claim code (the API the CLI calls)."""
    t = translations(lang).gettext
    slug = f"b{tag}"
    pw = tmp_path / "admin-password"
    pw.write_text("first-admin-pw\n", encoding="utf-8")
    code = await asyncio.to_thread(
        prepay,
        [
            "tenant",
            "create",
            "--slug",
            slug,
            "--name",
            f"红星市场{tag}",
            "--admin",
            "boss",
            "--password-file",
            str(pw),
        ],
    )
    assert code == 0
    await _login(page, live, lang, slug, "boss", "first-admin-pw")
    base = f"{live.base}/console/settings"
    await page.goto(f"{base}/sites")
    await page.get_by_label(t("Site name")).fill("一期商铺")
    await shot("admin-site")
    await page.get_by_role("button", name=t("Add site")).click()
    await page.get_by_role("link", name=t("Buildings and premises")).click()
    await page.get_by_label(t("Building name")).fill("A栋")
    await page.get_by_role("button", name=t("Add building")).click()
    await page.get_by_role("link", name=t("Premises"), exact=True).click()
    await page.get_by_label(t("Floor"), exact=True).fill("1")
    await page.get_by_label(t("Number"), exact=True).fill("101")
    await page.get_by_label(t("Floor area (m², optional)")).fill("36.50")
    await shot("admin-premises")
    await page.get_by_role("button", name=t("Add premises")).click()
    await page.get_by_role("link", name=t("Edit premises %(number)s") % {"number": "101"}).click()
    await page.get_by_label(t("Floor area (m², optional)")).fill("38.00")
    await shot("admin-premises-edit")
    await page.get_by_role("button", name=t("Save")).click()
    await page.get_by_role("status").wait_for()
    await page.goto(f"{base}/sites")
    await page.get_by_role("link", name=t("Outlets"), exact=True).click()
    await page.get_by_label(t("Outlet name")).fill("一号营业厅")
    await page.get_by_role("button", name=t("Add outlet")).click()
    await page.goto(f"{base}/tariffs")
    await page.get_by_label(t("Tariff name")).fill("商铺电价")
    await page.get_by_label(t("Utility"), exact=True).select_option("electricity")
    unit = t("Unit price (¥ per %(unit)s), for a flat plan") % {"unit": t("kWh or m³")}
    await page.get_by_label(unit).fill("1.0000")
    await shot("admin-tariff")
    await page.get_by_role("button", name=t("Add tariff")).click()
    # a tiered water tariff in rows: the mistake is named, what was typed stays
    await page.goto(f"{base}/tariffs")
    await page.get_by_label(t("Tariff name")).fill("商铺水价")
    await page.get_by_label(t("Utility"), exact=True).select_option("water")
    await page.get_by_label(t("Tiered: a price per block of use")).check()
    for n, up, price in ((1, "30", "4.50"), (2, "60", "5.80")):  # the last one bounded
        await page.get_by_label(t("Tier %(n)s: up to") % {"n": n}).fill(up)
        await page.get_by_label(t("Tier %(n)s: price") % {"n": n}).fill(price)
    await page.get_by_role("button", name=t("Add tariff")).click()
    await page.get_by_role("alert").wait_for()
    assert await page.get_by_label(t("Tier %(n)s: price") % {"n": 2}).input_value() == "5.80"
    await shot("admin-tariff-tiers-refused")
    await page.get_by_label(t("Tier %(n)s: up to") % {"n": 2}).fill("")
    await page.get_by_role("button", name=t("Add tariff")).click()
    await page.get_by_role("status").wait_for()
    assert t("Water tariff") in await page.get_by_role("heading", level=2).inner_text()
    await shot("admin-water-tariff")
    await page.goto(f"{base}/operators")
    await page.get_by_label(t("Role name")).fill("收费员")
    for perm in (
        "registry.view",
        "account.open",
        "account.close",
        "meter.install",
        "sale.create",
        "sale.reverse",
    ):
        await page.get_by_label(t(PERMISSION_LABELS[perm]), exact=True).check()
    await page.get_by_role("button", name=t("Add role")).click()
    await page.get_by_label(t("User"), exact=True).fill("clerk")
    await page.get_by_label(t("Display name")).fill("王收费")
    await page.get_by_label(t("Password (at least 8 characters)")).fill("clerk-password")
    await page.get_by_label(t("Role"), exact=True).select_option(label="收费员")
    await page.get_by_label(t("Chosen outlets")).check()
    await page.get_by_label(re.compile("一号营业厅")).check()
    await shot("admin-operator")
    await page.get_by_role("button", name=t("Add operator")).click()
    await page.get_by_role("status").wait_for()
    await page.get_by_label(t("Search operators and roles")).fill("clerk")
    await page.get_by_role("button", name=t("Search"), exact=True).click()
    await page.wait_for_url("**/operators?q=clerk")
    await shot("admin-operators-search")
    await page.get_by_role("link", name="clerk", exact=True).click()
    await shot("admin-operator-edit")
    await page.get_by_role("button", name=t("Log out")).click()
    await page.wait_for_url("**/console/login")

    async with httpx.AsyncClient(base_url=live.base) as http:
        tok = await http.post(
            "/api/v1/auth/token",
            json={"tenant": slug, "username": "boss", "password": "first-admin-pw"},
        )
        auth = {"authorization": f"Bearer {tok.json()['access_token']}"}
        sites = (await http.get("/api/v1/sites", headers=auth)).json()
        assert [s["name"] for s in sites] == ["一期商铺"]
        claim = await http.post(
            f"/api/v1/sites/{sites[0]['id']}/claim-codes", json={"ttl_minutes": 30}, headers=auth
        )
        gw = await http.post("/api/v1/gateways/commission", json={"claim": claim.json()["code"]})
        assert gw.status_code == 201, gw.text
    tenant_id = await _scalar(live.wiring.db, None, "SELECT id FROM tenant WHERE slug = :s", s=slug)
    return {"slug": slug, "gateway": gw.json()["gateway"], "tenant_id": tenant_id}


async def _login(page: Any, live: Live, lang: str, slug: str, user: str, password: str) -> None:
    t = translations(lang).gettext
    await page.goto(f"{live.base}/console/login?lang={lang}")
    await page.get_by_label(t("Property group")).fill(slug)
    await page.get_by_label(t("User")).fill(user)
    await page.get_by_label(t("Password")).fill(password)
    await page.get_by_role("button", name=t("Log in")).click()
    await page.wait_for_url("**/console/")


async def _scalar(db: Database, tenant: uuid.UUID | None, query: str, **params: Any) -> Any:
    if tenant is None:
        async with db.platform() as conn:
            return await conn.scalar(sa.text(query), params)
    async with db.tenant(tenant) as conn:
        return await conn.scalar(sa.text(query), params)


def _yuan(text: str) -> Decimal:
    return Decimal(re.sub(r"[^0-9.\-]", "", text))


@pytest.mark.parametrize("lang", ["zh_CN", "en"])
async def test_the_business_office_day(
    lang: str,
    live: Live,
    browser: Any,
    db: Database,
    mqtt_url: str,
    shared_group: str | None,
    topic_prefix: str,
    tmp_path: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREPAY_DATABASE_URL", db_url)  # where `prepay tenant create` writes
    w = WORDS[lang]
    shots = ARTIFACTS / f"business-office-{lang}"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    context = await browser.new_context(
        locale="zh-CN" if lang == "zh_CN" else "en-US", accept_downloads=True
    )
    page = await context.new_page()
    page.set_default_timeout(15_000)
    asked: list[str] = []  # what the confirmations asked (reversal, transfer, cancel)

    async def confirm(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", confirm)
    step = 0

    async def shot(name: str) -> None:
        nonlocal step
        step += 1
        await page.screenshot(path=str(shots / f"{step:02d}-{name}.png"), full_page=True)

    try:
        group = await _setup_group(live, tmp_path, uuid.uuid4().hex[:6], page, lang, shot)
    except BaseException:
        await shot("failed")
        await context.close()
        raise
    tenant = group["tenant_id"]
    profiles = load_profiles()
    # 6 kW at 20x: 120 kW as the cloud sees it, under its plausibility limit for one shop
    curve = LoadCurve(base=6.0, peak=6.0, noise=0.0)
    old = SimulatedMeter(profiles[PROFILE], 1, curve=curve, speed=20.0, start_total=120.0)
    new = SimulatedMeter(profiles[PROFILE], 2, curve=curve, speed=20.0, start_total=3.0)
    sim = ModbusTcpSimulator([old, new])
    await sim.start()
    timing = CommandTiming(deadline=timedelta(seconds=30), retry=timedelta(seconds=2))
    live.wiring.services.timing = timing
    topics = Topics(topic_prefix)
    agent = Agent(
        AgentConfig(
            gateway=group["gateway"],
            mqtt_url=mqtt_url,
            mqtt_prefix=topic_prefix,
            data_dir=tmp_path / "gw",
            poll_interval_s=0.5,
            buses=[
                BusConfig(
                    name="bus1",
                    port=sim.port,
                    devices=[
                        DeviceConfig(key="m1", profile=PROFILE, unit=1),
                        DeviceConfig(key="m2", profile=PROFILE, unit=2),
                    ],
                )
            ],
        ),
        profiles,
    )
    ingest = IngestConsumer(IngestService(db, timing), mqtt_url, topics, shared_group)
    dispatcher = Dispatcher(db, mqtt_url, topics, timing)
    tasks = [asyncio.create_task(c.run()) for c in (ingest, dispatcher)]
    await asyncio.wait_for(ingest.ready.wait(), 10)
    await asyncio.wait_for(dispatcher.ready.wait(), 10)
    tasks.append(asyncio.create_task(agent.run()))
    try:
        await _login(page, live, lang, group["slug"], "clerk", "clerk-password")
        await shot("clerk-logged-in")

        # 开户: a new customer at A栋-1-101, electricity on the shop tariff
        await page.goto(f"{live.base}/console/accounts/new")
        await page.get_by_label(w["name"], exact=True).fill("李记粮油")
        await page.get_by_label(w["phone"], exact=True).fill("13800001111")
        await page.get_by_label(w["premises"], exact=True).select_option(index=1)
        # with a first sale of ¥10, in the opening's transaction, with its receipt
        await page.get_by_label(w["amount"], exact=True).fill("10.00")
        await shot("open-account")
        await page.get_by_role("button", name=w["open"]).click()
        await page.wait_for_url(re.compile(r".*/console/accounts/[^/?]+\?done=opened&receipt=R"))
        number = re.search(r"/accounts/([^/?]+)", page.url).group(1)  # type: ignore[union-attr]
        assert await page.get_by_role("link", name=re.compile(r"R\d{8}")).count() >= 1
        await shot("account-opened")
        assert await _scalar(db, tenant, "SELECT count(*) FROM counter_sale") == 1

        # 装表: the meter's readings already reach the cloud, kept in quarantine
        async def quarantined() -> bool:
            n = await _scalar(
                db, tenant, "SELECT count(*) FROM reading_quarantine WHERE device = 'm1'"
            )
            return int(n) > 0

        await wait_for(quarantined, 20, "the unregistered meter's readings in quarantine")
        form = page.get_by_role("form", name=re.compile(re.escape(w["install_form"])))
        await form.get_by_label(w["gateway"], exact=True).fill(group["gateway"])
        await form.get_by_label(w["key"], exact=True).fill("m1")
        await form.get_by_label(w["profile"], exact=True).fill(PROFILE)
        await form.get_by_label(w["bus"], exact=True).fill("bus1")
        await form.get_by_label(w["address"], exact=True).fill("1")
        await form.get_by_label(w["read"]).check()
        await shot("install")
        await form.get_by_role("button", name=w["install"], exact=True).click()
        await page.wait_for_url(re.compile(r".*done=installed"))
        await shot("installed")
        register = await _scalar(
            db, tenant, "SELECT install_register FROM binding WHERE removed_at IS NULL"
        )
        assert register is not None and Decimal("120") <= register < Decimal("140")

        # 售电 ¥50 and its receipt
        await page.goto(f"{live.base}/console/counter/{number}")
        await page.get_by_label(w["amount"], exact=True).fill("50")
        await shot("counter")
        await page.get_by_role("button", name=w["sell"]).dblclick()  # sells once
        await page.wait_for_url(re.compile(r".*/console/sales/[^/?]+$"))
        receipt = page.url.rsplit("/", 1)[1]
        await shot("receipt")
        sales = await _scalar(db, tenant, "SELECT count(*) FROM counter_sale")
        assert sales == 2  # the first sale and this one, sold once
        pdf = await page.request.get(f"{live.base}/api/v1/sales/{receipt}/receipt.pdf")
        assert pdf.ok and (await pdf.body()).startswith(b"%PDF")
        (shots / f"{receipt}.pdf").write_bytes(await pdf.body())
        text = (
            await asyncio.to_thread(
                subprocess.run,
                ["pdftotext", "-layout", str(shots / f"{receipt}.pdf"), "-"],
                capture_output=True,
                text=True,
                check=True,
            )
        ).stdout
        for expected in (
            receipt,
            number,
            w["capitals"],
            "50.00",
            "李记粮油",
            "一号营业厅",
            "王收费",
            "A栋",
        ):
            assert expected in text, f"{expected!r} not on the receipt:\n{text}"

        # the balance falls with the meter's readings
        async def balance_on_page() -> Decimal:
            await page.goto(f"{live.base}/console/accounts/{number}")
            return _yuan(await page.locator(".big").first.inner_text())

        async def fell() -> bool:
            return await balance_on_page() < Decimal("59.80")

        await wait_for(fell, 30, "the balance to fall with readings")
        await shot("balance-falls")

        # a second sale, reversed the same day
        await page.goto(f"{live.base}/console/counter/{number}")
        await page.get_by_label(w["amount"], exact=True).fill("20.00")
        await page.get_by_role("button", name=w["sell"]).click()
        await page.wait_for_url(re.compile(r".*/console/sales/[^/?]+$"))
        await page.locator("summary", has_text=w["reverse_form"]).click()
        rform = page.get_by_role("form", name=w["reverse_form"])
        await rform.get_by_label(w["reason"], exact=True).fill("客户多报金额")
        await rform.get_by_role("button", name=w["reverse"], exact=True).dblclick()
        await page.wait_for_url(re.compile(r".*done=reversed"))
        assert w["reversed"] in await page.content()
        reversals = "SELECT count(*) FROM journal_entry WHERE kind = 'reversal'"
        assert await _scalar(db, tenant, reversals) == 1  # reversed once
        await shot("reversed")

        # 换表: the old meter's final register, the new one's first
        await page.goto(f"{live.base}/console/accounts/{number}")
        await page.locator("summary", has_text=w["swap_form"]).click()
        sform = page.get_by_role("form", name=re.compile(re.escape(w["swap_form"])))
        final = Decimal(str(old.channels[1].total)).quantize(Decimal("0.01")) + 1
        await sform.get_by_label(w["final"], exact=True).fill(str(final))
        initial = Decimal(str(new.channels[1].total)).quantize(Decimal("0.01"))
        await sform.get_by_label(w["initial"], exact=True).fill(str(initial))
        await sform.get_by_label(w["gateway"], exact=True).fill(group["gateway"])
        await sform.get_by_label(w["key"], exact=True).fill("m2")
        await sform.get_by_label(w["profile"], exact=True).fill(PROFILE)
        await sform.get_by_label(w["bus"], exact=True).fill("bus1")
        await sform.get_by_label(w["address"], exact=True).fill("2")
        await shot("swap")
        await sform.get_by_role("button", name=w["swap"], exact=True).click()
        await page.wait_for_url(re.compile(r".*done=swapped"))
        await shot("swapped")

        # 过户 to a new customer, the balance moving with the premises — once the commands
        # the swap sent to the new meter are answered (a transfer waits for them)
        async def settled() -> bool:
            n = await _scalar(
                db, tenant, "SELECT count(*) FROM device_command WHERE state IN ('queued', 'sent')"
            )
            return int(n) == 0

        await wait_for(settled, 30, "the commands to the new meter answered")
        await page.reload()
        tform = page.get_by_role("form", name=w["transfer_form"])
        await tform.get_by_label(w["new_name"], exact=True).fill("张氏五金")
        await shot("transfer")
        await tform.get_by_role("button", name=w["transfer"], exact=True).click()
        await page.wait_for_url(re.compile(r".*done=transferred"))
        new_number = re.search(r"/accounts/([^/?]+)", page.url).group(1)  # type: ignore[union-attr]
        assert new_number != number
        await shot("transferred")

        # 消户 with the balance refunded in cash (also once the meter has answered)
        await wait_for(settled, 30, "the commands to the meter answered")
        await page.reload()
        cform = page.get_by_role("form", name=w["cancel_form"])
        await cform.get_by_role("button", name=w["cancel"], exact=True).click()
        await page.wait_for_url(re.compile(r".*done=cancelled"))
        await shot("cancelled")
        assert w["closed"] in await page.content()

        async with db.tenant(tenant) as conn:
            wallets = {
                r.number: (r.balance, r.unposted)
                for r in await conn.execute(
                    sa.text(
                        "SELECT a.number, la.balance, la.unposted FROM account a "
                        "JOIN ledger_account la ON la.id = a.wallet_id"
                    )
                )
            }
        assert wallets == {number: (0, 0), new_number: (0, 0)}
        statuses = await _scalar(
            db, tenant, "SELECT string_agg(status, ',' ORDER BY number) FROM account"
        )
        assert statuses == "closed,closed"
        assert len(asked) == 3 and number in asked[1] and new_number in asked[2], asked
        report = await check(db, [tenant])
        assert report.ok, report.breaches
    except BaseException:
        await shot("failed")
        async with db.tenant(tenant) as conn:
            for q in (
                "SELECT * FROM rating_state",
                "SELECT * FROM binding",
                "SELECT channel_id, measured_at, total FROM reading "
                "ORDER BY measured_at DESC LIMIT 3",
                "SELECT reason, count(*) FROM reading_quarantine GROUP BY 1",
                "SELECT code, balance, unposted FROM ledger_account",
                "SELECT * FROM work_order",
            ):
                print(q, [tuple(r) for r in await conn.execute(sa.text(q))])
        raise
    finally:
        await context.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await sim.stop()
