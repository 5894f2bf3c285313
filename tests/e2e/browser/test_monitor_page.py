"""The room monitor in Chromium: a shop's tile turns red when its credit runs out and
green again when it is topped up, without the page being reloaded (htmx polls the tiles).
Screenshots under .prepay/artifacts/browser/monitor."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cloud.auth import PERMISSIONS, Principal
from cloud.control.service import CommandTiming
from cloud.payments.counter import SaleRequest, sell_credit
from cloud.registry.service import seed_group
from tests.conftest import group_spec
from tests.e2e.browser.conftest import ARTIFACTS, Live, sign_in
from tests.integration.test_console_monitor import place, read


async def test_a_tile_turns_red_when_credit_runs_out_and_green_when_topped_up(
    live: Live, browser: Any
) -> None:
    spec = group_spec(balance="10.00")
    g = await seed_group(live.wiring.db, spec)
    await place(live.wiring.db, g, {"101": "m1", "102": None})
    now = datetime.now(UTC)
    earlier = now - timedelta(minutes=30)  # readings 70 and 40 minutes ago
    await read(live.wiring.db, spec.gateway_code, {"m1": ("100", "101")}, earlier)
    shots = ARTIFACTS / "monitor"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    page = await browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 800})
    page.set_default_timeout(30_000)
    try:
        await sign_in(page, live.base, spec.slug)
        await page.get_by_role("link", name="监控").click()
        await page.get_by_role("heading", name="房间监控: Riverside Market").wait_for()
        await page.get_by_role("listitem", name="101 正常").wait_for()
        await page.get_by_role("listitem", name="102 未开户").wait_for()
        await page.screenshot(path=shots / "1-in-credit.png", full_page=True)
        await page.evaluate("window.notReloaded = true")

        # 15 kWh more at ¥1 (the 40-minutes-ago reading again, and one 10 minutes ago):
        # ¥9 becomes ¥-6
        await read(live.wiring.db, spec.gateway_code, {"m1": ("101", "116")}, now)
        await page.get_by_role("listitem", name="101 欠费/断电").wait_for()
        await page.screenshot(path=shots / "2-in-arrears.png", full_page=True)

        who = Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))
        sale = SaleRequest(g.accounts["m1"], Decimal("50.00"), "cash", g.outlet_id)
        await sell_credit(
            live.wiring.db, who, sale, f"test:{uuid.uuid4()}", datetime.now(UTC), CommandTiming()
        )
        await page.get_by_role("listitem", name="101 正常").wait_for()
        assert await page.evaluate("window.notReloaded === true")
        await page.screenshot(path=shots / "3-topped-up.png", full_page=True)
    finally:
        await page.screenshot(path=shots / "last.png", full_page=True)
        await page.close()
