"""Finance HQ's reports in Chromium, as a finance clerk would use them: from 报表 to the
energy and finance report, per service point (the registers the meters read, what was
used), then collections per operator with its chart, and the print layout (no console
around it). Screenshots under .prepay/artifacts/browser/reports (and /tmp/reports-*.png)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from cloud.auth import PERMISSIONS, Principal
from cloud.control.service import CommandTiming
from cloud.ingest.service import IngestService
from cloud.payments.counter import SaleRequest, sell_credit
from cloud.registry.service import seed_group
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import group_spec
from tests.e2e.browser.conftest import ARTIFACTS, Live, sign_in


async def test_finance_reads_the_energy_report_and_collections(live: Live, browser: Any) -> None:
    spec = group_spec(meters=3, balance="80.00")
    g = await seed_group(live.wiring.db, spec)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    readings = tuple(
        Reading(
            device=f"m{m}", measured_at=now - timedelta(hours=6 * h), total=Decimal(200 - 2 * h * m)
        )
        for h in range(8)
        for m in (1, 2, 3)
    )
    batch = TelemetryBatch(
        gateway=spec.gateway_code, boot_id="b1", seq=1, sent_at=now, readings=readings
    )
    await IngestService(live.wiring.db, CommandTiming()).store_telemetry(
        spec.gateway_code, batch, now
    )
    who = Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))
    for key, amount, method in (
        ("m1", "100.00", "cash"),
        ("m2", "50.00", "card"),
        ("m3", "20.00", "cash"),
    ):
        req = SaleRequest(g.accounts[key], Decimal(amount), method, g.outlet_id)
        await sell_credit(
            live.wiring.db, who, req, f"k-{key}", now - timedelta(minutes=3), CommandTiming()
        )
    shots = ARTIFACTS / "reports"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    page = await browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)

    async def shot(name: str) -> None:
        await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        shutil.copy(shots / f"{name}.png", Path("/tmp") / f"reports-{name}.png")

    try:
        await sign_in(page, live.base, spec.slug)
        await page.goto(f"{live.base}/console/reports")
        await page.get_by_role("link", name="能耗财务报表").click()
        await page.get_by_role("heading", name="能耗财务报表 · 按户").wait_for()
        await page.get_by_label("显示").select_option(label="按计量点")
        await page.get_by_role("button", name="查询").click()
        await page.get_by_role("heading", name="能耗财务报表 · 按计量点").wait_for()
        table = await page.locator(".report-table").inner_text()
        assert "Shop 1 electricity" in table and "200.00" in table, table
        await shot("01-finance-points")
        await page.get_by_label("显示").select_option(label="按户")
        await page.get_by_role("button", name="查询").click()
        await page.get_by_role("heading", name="能耗财务报表 · 按户").wait_for()
        await page.locator("#report-chart svg").wait_for()
        await shot("02-finance-accounts")
        await page.goto(f"{live.base}/console/reports/collections?by=operator")
        await page.locator("#report-chart svg").wait_for()
        total = await page.locator(".report-table tfoot").inner_text()
        assert "¥170.00" in total, total
        await shot("03-collections-operator")
        await page.goto(f"{live.base}/console/reports/collections?by=method")
        await page.locator("#report-chart svg").wait_for()
        await shot("04-collections-method")
        await page.goto(f"{live.base}/console/reports/liability")
        await page.get_by_role("heading", name="预收余额").wait_for()
        await shot("05-liability")
        await page.emulate_media(media="print")
        assert not await page.get_by_role("button", name="查询").is_visible()
        assert "¥338.00" in await page.locator(".report-table tfoot").inner_text()
        await shot("06-liability-print")
    except BaseException:
        await page.screenshot(path=str(shots / "failed.png"), full_page=True)
        raise
    finally:
        await page.close()
