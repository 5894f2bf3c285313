"""The 催费 page in Chromium, as a counter clerk would use it: the accounts in arrears of
a building, the one to remind ticked, and its dunning notice opened as a PDF whose text
names the account and the amount. Screenshots under .prepay/artifacts/browser/dunning."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from cloud.registry.service import Seeded
from tests.e2e.browser.conftest import ARTIFACTS, Live, sign_in
from tests.integration.test_dunning import owing  # noqa: F401  (the fixture)


async def test_a_clerk_prints_one_dunning_notice(
    live: Live,
    browser: Any,
    owing: tuple[str, Seeded, dict[str, uuid.UUID]],  # noqa: F811
) -> None:
    slug, g, _buildings = owing
    shots = ARTIFACTS / "dunning"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    context = await browser.new_context(locale="zh-CN", accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    try:
        await sign_in(page, live.base, slug)
        await page.goto(f"{live.base}/console/accounts")
        await page.get_by_role("link", name="欠费与催费").click()
        await page.get_by_label("楼栋").select_option(label="A栋 · " + await _site(page))
        await page.get_by_role("button", name="显示").click()
        await page.get_by_text("共 2 户欠费，合计 ¥17.00。").wait_for()
        await page.get_by_label(f"勾选 {g.accounts['m1']}").check()
        await page.screenshot(path=str(shots / "01-arrears.png"), full_page=True)
        async with context.expect_page() as opened:
            await page.get_by_role("button", name="打印勾选账户的催费通知单（PDF）").click()
        notice = await opened.value
        await notice.wait_for_load_state()
        pdf = await context.request.get(notice.url)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "n.pdf"
            path.write_bytes(await pdf.body())
            text = subprocess.run(  # noqa: ASYNC221  (a test, once)
                ["pdftotext", str(path), "-"], capture_output=True, check=True, text=True
            ).stdout
            shutil.copy(path, shots / "02-notice.pdf")
        assert "催费通知单" in text and g.accounts["m1"] in text and "¥15.00" in text
        assert g.accounts["m2"] not in text
        # the same ticked account gets a reminder: confirmed, then sent through the outbox
        await page.get_by_role("button", name="向勾选的账户发送催费提醒（短信/微信）…").click()
        await page.get_by_role("heading", name="发送催费提醒").wait_for()
        await page.screenshot(path=str(shots / "03-remind-confirm.png"), full_page=True)
        page.once("dialog", lambda d: d.accept())
        await page.get_by_role("button", name="发送提醒").click()
        await page.get_by_role("heading", name="已发送的催费提醒").wait_for()
        assert g.accounts["m1"] in await page.locator("table").inner_text()
        await page.screenshot(path=str(shots / "04-reminders-sent.png"), full_page=True)
        await page.get_by_role("link", name=g.accounts["m1"]).click()
        await page.locator("table").get_by_text("催费提醒").wait_for()
        await page.screenshot(path=str(shots / "05-customer-notifications.png"), full_page=True)
        await page.goto(f"{live.base}/console/reports")
        await page.get_by_role("link", name="通知发送情况").click()
        await page.get_by_role("heading", name="通知发送情况").wait_for()
        await page.screenshot(path=str(shots / "06-delivery.png"), full_page=True)
        await page.get_by_role("link", name="消息模板").click()
        await page.screenshot(path=str(shots / "07-templates.png"), full_page=True)
        await page.goto(f"{live.base}/console/settings/sites/{g.site_id}/notifications")
        await page.get_by_label("姓名").fill("值班电工")
        await page.get_by_label("手机号").fill("13900139000")
        await page.get_by_role("button", name="添加").click()
        await page.get_by_text("工作人员已添加。").wait_for()
        await page.screenshot(path=str(shots / "08-site-notify.png"), full_page=True)
    except BaseException:
        await page.screenshot(path=str(shots / "failed.png"), full_page=True)
        raise
    finally:
        await context.close()


async def _site(page: Any) -> str:
    label = await page.get_by_label("站点").locator("option").nth(1).text_content()
    return str(label).strip()
