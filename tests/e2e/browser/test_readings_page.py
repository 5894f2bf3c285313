"""A shop's reading history in Chromium, as a counter clerk answering "why so much this
week?" would open it: from the account page, the readings of the last days in local time
with what was used between them. Screenshot under .prepay/artifacts/browser/readings."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cloud.control.service import CommandTiming
from cloud.ingest.service import IngestService
from cloud.registry.service import seed_group
from contract.mqtt import Reading, TelemetryBatch
from tests.conftest import group_spec
from tests.e2e.browser.conftest import ARTIFACTS, Live, sign_in


async def test_a_clerk_opens_a_shops_reading_history(live: Live, browser: Any) -> None:
    spec = group_spec(balance="80.00")
    g = await seed_group(live.wiring.db, spec)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    readings = tuple(
        Reading(device="m1", measured_at=now - timedelta(hours=6 * h), total=Decimal(100 - h))
        for h in range(8)
    )
    batch = TelemetryBatch(
        gateway=spec.gateway_code, boot_id="b1", seq=1, sent_at=now, readings=readings
    )
    await IngestService(live.wiring.db, CommandTiming()).store_telemetry(
        spec.gateway_code, batch, now
    )
    shots = ARTIFACTS / "readings"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    page = await browser.new_page(locale="zh-CN")
    page.set_default_timeout(15_000)
    try:
        await sign_in(page, live.base, spec.slug)
        await page.goto(f"{live.base}/console/accounts/{g.accounts['m1']}")
        await page.get_by_role("link", name="抄表记录").click()
        await page.get_by_role("heading", name="抄表记录: Shop 1").wait_for()
        status = await page.get_by_role("status").inner_text()
        assert "共 8 条读数，用量 7.000 kWh" in status, status
        await page.get_by_role("link", name="导出 Excel").wait_for()
        await page.screenshot(path=str(shots / "01-readings.png"), full_page=True)
    except BaseException:
        await page.screenshot(path=str(shots / "failed.png"), full_page=True)
        raise
    finally:
        await page.close()
