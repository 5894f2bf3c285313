"""财务 → 对账 in the console: the runs with their state, a run's exceptions in Chinese,
crediting a payment we never heard of (a double submit credits once), a write-off refused
without a reason, a day that has no bill yet refused; another group's run and exceptions
are 404 and nothing of them changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from cloud.api.app import create_app
from cloud.db import Database
from cloud.reconcile.service import china_day
from tests.conftest import console_form, console_login
from tests.integration.pay_helpers import PayEnv, add_group, credits, pay_env, wallet
from tests.integration.test_reconcile import admin, paid, tomorrow


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[PayEnv]:
    async with pay_env(db_url) as e:
        yield e


@pytest.fixture
async def http(env: PayEnv) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(env.wiring.services))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_finance_resolves_a_bills_exceptions_and_another_groups_are_not_found(
    env: PayEnv, db: Database, http: httpx.AsyncClient
) -> None:
    g = await add_group(env, db, balance="0.00")
    other = await add_group(env, db)
    missed = await paid(env, g, "25.00", notify=False)
    env.pay.tamper_bill(extra_rows=1)
    rec = tomorrow(env)
    day = china_day(datetime.now(UTC))
    run = await rec.reconcile(g.seeded.tenant_id, day, "test")
    theirs_run = await rec.reconcile(other.seeded.tenant_id, day, "test")
    env.pay.tamper_bill()
    (their_ghost,) = (await rec.run_detail(admin(other), theirs_run.id))[1]
    await console_login(http, g.slug)

    page = await http.get("/console/finance/reconcile")
    assert page.status_code == 200
    assert "微信支付对账" in page.text and str(day) in page.text and "已核对" in page.text
    detail = await http.get(f"/console/finance/reconcile/{run.id}")
    assert "微信有、本系统无（长款）" in detail.text and missed in detail.text
    assert "GHOST000000" in detail.text and "补记入账" in detail.text
    found = (await rec.run_detail(admin(g), run.id))[1]
    credit = next(e for e in found if e.out_trade_no == missed)
    ghost = next(e for e in found if e.out_trade_no == "GHOST000000")
    where = f"/console/finance/reconcile/{run.id}/exceptions"

    # a write-off without a reason: refused in Chinese, nothing changes
    r = await console_form(http, f"{where}/{ghost.id}", {"action": "write_off", "reason": " "})
    assert r.status_code == 422 and "请填写原因" in r.text
    # credit, pressed twice: credited once, and the second press says it is done
    for _ in range(2):
        r = await console_form(http, f"{where}/{credit.id}", {"action": "credit"})
        assert r.status_code == 303, r.text
        page = await http.get(r.headers["location"])
        assert "该笔支付已补记到钱包。" in page.text
    assert await credits(db, g, missed) == 1
    assert await wallet(db, g) == 25

    # a day whose bill WeChat has not made yet
    r = await console_form(http, "/console/finance/reconcile", {"day": str(day)})
    assert r.status_code == 422 and "次日上午才生成" in r.text
    r = await console_form(http, "/console/finance/reconcile", {"day": "yesterday"})
    assert r.status_code == 422 and "YYYY-MM-DD" in r.text

    # another group's run and exceptions: 404, and nothing of theirs changes
    assert (await http.get(f"/console/finance/reconcile/{theirs_run.id}")).status_code == 404
    for path in (
        f"{theirs_run.id}/exceptions/{their_ghost.id}",
        f"{run.id}/exceptions/{their_ghost.id}",
    ):
        r = await console_form(
            http, f"/console/finance/reconcile/{path}", {"action": "write_off", "reason": "x"}
        )
        assert r.status_code == 404
    (still,) = (await rec.run_detail(admin(other), theirs_run.id))[1]
    assert still.resolution is None
    async with db.tenant(other.seeded.tenant_id) as conn:
        moved = await conn.scalar(
            sa.text("SELECT count(*) FROM journal_entry WHERE idempotency_key LIKE 'recon-%'")
        )
    assert moved == 0
