"""A field worker's day on a phone in Chromium (issue 19's acceptance): download the book,
lose the signal, reopen the page offline, read 20 meters (two with anomalies) seeing the
estimated bill at once, get the signal back and upload; the readings are rated once, the
anomalies are work orders, and uploading the same queue again changes nothing.
Screenshots under .prepay/artifacts/browser/field."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from cloud.control.service import CommandTiming
from cloud.field import books
from cloud.ingest.service import IngestService
from cloud.registry.service import seed_group
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import group_spec, wait_for
from tests.e2e.browser.conftest import ARTIFACTS, Live
from tests.integration.test_field_readings import admin, book_for, worker

PHONE = {"width": 390, "height": 844}


async def _state(live: Live, tenant: Any) -> tuple[int, int, list[str], Decimal]:
    async with live.wiring.db.tenant(tenant) as conn:
        readings = await conn.scalar(sa.text("SELECT count(*) FROM field_reading"))
        stored = await conn.scalar(sa.text("SELECT count(*) FROM reading"))
        kinds = sorted(
            await conn.scalars(sa.text("SELECT kind FROM work_order WHERE kind LIKE 'field_%'"))
        )
        balances = await conn.scalar(
            sa.text("SELECT sum(balance) FROM ledger_account WHERE kind = 'wallet'")
        )
    return int(readings or 0), int(stored or 0), kinds, Decimal(balances)


async def test_a_field_worker_reads_twenty_meters_offline_and_uploads_once(
    live: Live, browser: Any
) -> None:
    spec = group_spec(meters=20, balance="50.00")
    g = await seed_group(live.wiring.db, spec)
    now = datetime.now(UTC).replace(microsecond=0)
    before = now - timedelta(days=2)  # the gateway's last word: two days ago
    batch = TelemetryBatch(
        gateway=spec.gateway_code,
        boot_id="b1",
        seq=1,
        sent_at=before,
        readings=tuple(
            Reading(device=f"m{i}", measured_at=before, total=Decimal(100)) for i in range(1, 21)
        ),
    )
    await IngestService(live.wiring.db, CommandTiming()).store_telemetry(
        spec.gateway_code, batch, before
    )
    who = await worker(live.wiring.db, g, also=("sale.create",))
    book = await book_for(live.wiring.db, g, who, [f"m{i}" for i in range(1, 21)])
    _, tasks = await books.open_cycle(live.wiring.db, admin(g), book, now.date(), now)
    assert tasks == 20
    shots = ARTIFACTS / "field"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    context = await browser.new_context(viewport=PHONE, locale="zh-CN", is_mobile=True)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    try:
        await page.goto(f"{live.base}/field/")
        await page.screenshot(path=str(shots / "01-login.png"), full_page=True)
        await page.get_by_label("物业集团").fill(spec.slug)
        await page.get_by_label("用户名").fill("reader")
        await page.get_by_label("密码").fill("field-pass")
        await page.get_by_role("button", name="登录").click()
        items = page.get_by_role("list", name="抄表任务").get_by_role("listitem")
        await wait_for(lambda: _count(items, 20), 10, "the book's 20 tasks")
        await page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        await page.screenshot(path=str(shots / "02-book.png"), full_page=True)

        await context.set_offline(True)
        await page.reload()  # the page comes from the service worker, the book from the phone
        await wait_for(lambda: _count(items, 20), 10, "the tasks, offline")
        await page.get_by_text("无信号：离线工作中。").wait_for()
        for i in range(1, 21):
            task = page.get_by_role("listitem", name=f"Shop {i} electricity", exact=True)
            if i == 19:
                await task.get_by_label("异常").select_option(label="无法进入")
            else:
                await task.get_by_label("表码读数（kWh）").fill(f"{100 + i}.5")
                if i == 20:
                    await task.get_by_label("异常").select_option(label="封印损坏")
            if i == 1:
                await task.get_by_text("预算电费 ¥1.50").wait_for()
                await page.screenshot(path=str(shots / "03-estimate.png"), full_page=True)
                await task.get_by_role("button", name="保存读数").dblclick()  # saved once
            else:
                await task.get_by_role("button", name="保存读数").click()
            await task.get_by_text("已保存在手机上").wait_for()
        shop1 = page.get_by_role("listitem", name="Shop 1 electricity", exact=True)
        await shop1.get_by_label("收取现金（元）").fill("20.00")
        await shop1.get_by_role("button", name="收款").dblclick()  # collected once
        await shop1.get_by_text("现金已记录在手机上").wait_for()
        await page.get_by_role("button", name="上传读数 (20)").wait_for()
        await page.screenshot(path=str(shots / "04-queued-offline.png"), full_page=True)
        queue = await page.evaluate("localStorage.getItem('field.queue')")
        assert (await _state(live, g.tenant_id))[0] == 0

        await context.set_offline(False)  # the signal returns: the queue goes up by itself
        await page.get_by_role("button", name="上传读数 (0)").wait_for()
        await shop1.get_by_text("已售电，收据 R").wait_for()
        await page.screenshot(path=str(shots / "05-uploaded.png"), full_page=True)
        after = await _state(live, g.tenant_id)
        assert after[0] == 20 and after[1] == 20 + 19
        assert after[2] == ["field_no_access", "field_seal_broken"]
        # m1..m18 used i + 0.5 kWh (180 kWh) and m20 20.5 at ¥1: ¥1,000.00 less 200.50,
        # and ¥20.00 collected from Shop 1
        assert after[3] == Decimal("819.50")

        again = await page.evaluate(
            """async (queue) => {
              const r = await fetch('/field/api/readings', {method: 'POST',
                headers: {'content-type': 'application/json',
                          authorization: 'Bearer ' + localStorage.getItem('field.token')},
                body: JSON.stringify({items: JSON.parse(queue)})});
              return (await r.json()).results.map((x) => x.status);
            }""",
            queue,
        )
        assert again == ["duplicate"] * 20
        assert await _state(live, g.tenant_id) == after
        assert len(json.loads(queue)) == 20
        async with live.wiring.db.tenant(g.tenant_id) as conn:
            drawer = await conn.scalar(
                sa.text("SELECT balance FROM ledger_account WHERE code = :c"),
                {"c": f"cash:{who.operator_id}"},
            )
            sales = await conn.scalar(sa.text("SELECT count(*) FROM counter_sale"))
        assert Decimal(drawer) == Decimal("20.00") and sales == 1
    except BaseException:
        await page.screenshot(path=str(shots / "failed.png"), full_page=True)
        raise
    finally:
        await context.close()


async def _count_impl(items: Any, n: int) -> bool:
    return int(await items.count()) == n


def _count(items: Any, n: int) -> Any:
    return _count_impl(items, n)
