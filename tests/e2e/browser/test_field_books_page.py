"""An operator makes a meter book in the console, walks its route and assigns it.
Screenshots under .prepay/artifacts/browser/field-books."""

from __future__ import annotations

import shutil
from typing import Any

from cloud.registry.service import seed_group
from tests.conftest import group_spec
from tests.e2e.browser.conftest import ARTIFACTS, Live, sign_in
from tests.integration.test_field_readings import worker


async def test_an_operator_makes_and_assigns_a_meter_book(live: Live, browser: Any) -> None:
    spec = group_spec(meters=3)
    g = await seed_group(live.wiring.db, spec)
    await worker(live.wiring.db, g)
    shots = ARTIFACTS / "field-books"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    page = await browser.new_page(locale="zh-CN")
    page.set_default_timeout(15_000)
    try:
        await sign_in(page, live.base, spec.slug)
        await page.goto(f"{live.base}/console/field/books")
        await page.get_by_label("编号").fill("A1")
        await page.get_by_label("表册名称").fill("一层商铺")
        await page.screenshot(path=str(shots / "01-books.png"), full_page=True)
        await page.get_by_role("button", name="建立表册").click()
        await page.get_by_role("heading", name="表册 A1 · 一层商铺").wait_for()
        await page.get_by_label("路线序号: Shop 2 electricity").fill("1")
        await page.get_by_label("路线序号: Shop 1 electricity").fill("2")
        await page.get_by_role("button", name="保存路线").click()
        await page.get_by_text("路线已保存。").wait_for()
        await page.get_by_role("button", name="指派").click()
        await page.get_by_text("已指派抄表员。").wait_for()
        await page.get_by_role("button", name="开启抄表周期").click()
        await page.get_by_text("抄表周期已开启。").wait_for()
        await page.get_by_text("待抄表数: 2", exact=False).wait_for()
        assert "待抄表数: 2.00" not in await page.content()
        await page.screenshot(path=str(shots / "02-book.png"), full_page=True)
    except BaseException:
        await page.screenshot(path=str(shots / "failed.png"), full_page=True)
        raise
    finally:
        await page.close()
