"""Finance reconciles a WeChat Pay bill in the console: the day's run, its exceptions, a
payment we never heard of credited and WeChat's extra row written off with a reason (after
the bill was first refused for a wrong hash).
Screenshots under .prepay/artifacts/browser/reconcile."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from cloud.db import Database
from cloud.reconcile.service import china_day
from tests.e2e.browser.conftest import ARTIFACTS, sign_in
from tests.integration.pay_helpers import PayEnv, add_group, credits, pay_env
from tests.integration.test_reconcile import paid, tomorrow


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[PayEnv]:
    async with pay_env(db_url) as e:
        yield e


async def test_finance_credits_a_missed_payment_and_writes_off_an_extra_row(
    env: PayEnv, db: Database, browser: Any
) -> None:
    g = await add_group(env, db, balance="0.00")
    await paid(env, g, "30.00")
    missed = await paid(env, g, "25.00", notify=False)
    day = china_day(datetime.now(UTC))
    env.pay.tamper_bill(wrong_hash=True)  # refused first, tried again by the worker
    await tomorrow(env).reconcile(g.seeded.tenant_id, day, "worker:reconcile")
    shots = ARTIFACTS / "reconcile"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    page = await browser.new_page(locale="zh-CN")
    page.set_default_timeout(15_000)
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        await sign_in(page, env.base, g.slug)
        await page.goto(f"{env.base}/console/finance/reconcile")
        await page.get_by_role("heading", name="微信支付对账").wait_for()
        await page.get_by_text("已拒收：账单文件校验值不符，稍后自动重试").wait_for()
        await page.screenshot(path=str(shots / "01-refused.png"), full_page=True)
        env.pay.tamper_bill(extra_rows=1)
        await tomorrow(env).reconcile(g.seeded.tenant_id, day, "worker:reconcile")
        await page.reload()
        await page.screenshot(path=str(shots / "01-runs.png"), full_page=True)
        await page.get_by_role("link", name=str(day)).click()
        await page.get_by_role("heading", name=f"{day} 对账 · {g.sub_mchid}").wait_for()
        await page.screenshot(path=str(shots / "02-run.png"), full_page=True)
        await page.get_by_role("button", name=f"将订单 {missed} 入账到钱包").click()
        await page.get_by_text("该笔支付已补记到钱包。").wait_for()
        await page.get_by_label("核销原因").fill("微信侧测试单，与财务确认后核销")
        await page.get_by_role("button", name="核销").click()
        await page.get_by_text("差异已核销。").wait_for()
        await page.get_by_text("已补记入账", exact=True).wait_for()
        await page.screenshot(path=str(shots / "03-resolved.png"), full_page=True)
    except BaseException:
        await page.screenshot(path=str(shots / "failed.png"), full_page=True)
        raise
    finally:
        await page.close()
    assert await credits(db, g, missed) == 1
