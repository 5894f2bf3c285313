"""A shop's page and the installer's gateway page in Chromium: from the account, the point's
consumption chart (ECharts drawn, by day then by hour, figures in local time); then the
gateway's buses from its heartbeat, the meter it reports that is not registered, and a
claim code issued for the site, shown once. Screenshots under /tmp/pages-*.png and
.prepay/artifacts/browser/point-installer."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from cloud.control.service import CommandTiming
from cloud.ingest.service import Heartbeat, IngestService
from cloud.registry.service import seed_group
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import group_spec
from tests.e2e.browser.conftest import ARTIFACTS, Live, sign_in

SHOTS = Path(os.environ.get("PREPAY_SHOTS", "/tmp"))


async def test_a_points_chart_and_an_installers_gateway_page(live: Live, browser: Any) -> None:
    spec = group_spec(balance="80.00")
    g = await seed_group(live.wiring.db, spec)
    ingest = IngestService(live.wiring.db, CommandTiming())
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    readings = [
        Reading(device="m1", measured_at=now - timedelta(minutes=30 * h), total=Decimal(200 - h))
        for h in range(10)
    ]
    readings.append(
        Reading(device="new-9", measured_at=now - timedelta(minutes=5), total=Decimal(8))
    )
    batch = TelemetryBatch(
        gateway=spec.gateway_code, boot_id="b1", seq=1, sent_at=now, readings=tuple(readings)
    )
    await ingest.store_telemetry(spec.gateway_code, batch, now)
    stats = {"rs485-1": {"transactions": 880, "timeouts": 3, "errors": 0, "utilisation": 0.31}}
    await ingest.gateway_presence(spec.gateway_code, True, now, 0, Heartbeat(stats, 4))
    keep = ARTIFACTS / "point-installer"
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)

    async def shot(page: Any, name: str) -> None:
        await page.screenshot(path=str(SHOTS / f"pages-{name}.png"), full_page=True)
        shutil.copy(SHOTS / f"pages-{name}.png", keep / f"{name}.png")

    page = await browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    try:
        await sign_in(page, live.base, spec.slug)
        await page.goto(f"{live.base}/console/accounts/{g.accounts['m1']}")
        await page.get_by_role("link", name="Shop 1 electricity", exact=True).click()
        await page.get_by_role("heading", name="Shop 1 electricity").wait_for()
        chart = page.get_by_role("img", name="用量图表")
        await chart.locator("svg").first.wait_for()  # ECharts drew it
        status = await page.locator("#usage-total").inner_text()
        assert "用量 9.000 kWh" in status, status
        await page.get_by_role("link", name="按小时").click()
        await page.wait_for_url("**grain=hour**")
        await chart.locator("svg").first.wait_for()
        await page.get_by_role("heading", name="本计量点的表计（装拆记录）").wait_for()
        await shot(page, "01-point-by-hour")

        await page.get_by_role("link", name=spec.gateway_code).first.click()
        await page.get_by_role("table", name="总线（最近一次心跳）").wait_for()
        assert "880" in await page.get_by_role("table", name="总线（最近一次心跳）").inner_text()
        await page.get_by_text("登记并安装 new-9（通道 1）").wait_for()
        await shot(page, "02-gateway")

        await page.get_by_role("link", name="本站点的认领码").click()
        await page.get_by_role("button", name="签发认领码").click()
        code = page.get_by_label("新认领码")
        await code.wait_for()
        assert len((await code.inner_text()).replace("-", "")) == 12
        assert "等待使用" in await page.get_by_role("table", name="认领码").inner_text()
        await shot(page, "03-claim-code")
    except BaseException:
        await page.screenshot(path=str(SHOTS / "pages-failed.png"), full_page=True)
        raise
    finally:
        await page.close()
