"""Reconciliation with WeChat Pay (issue 18 item 3) against the stand-in's real-format
bills, the real API (its notifications) and PostgreSQL: a clean day has no exception, a
bill with four deliberate differences has exactly those four, a wrong hash is refused and
tried again, and resolving a payment we never heard of credits the wallet once, even when
two finance clerks press the button together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cloud.auth import PERMISSIONS, Principal
from cloud.db import Database
from cloud.errors import Conflict, Forbidden, Invalid
from cloud.payments.wechat.refunds import request_refund
from cloud.reconcile.service import Reconciler, china_day
from tests.integration.pay_helpers import (
    Group,
    PayEnv,
    add_group,
    bind,
    credits,
    order,
    pay_env,
    wallet,
    wechat_login,
)


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[PayEnv]:
    async with pay_env(db_url) as e:
        yield e


def admin(g: Group, permissions: frozenset[str] = frozenset(PERMISSIONS)) -> Principal:
    return Principal(g.seeded.tenant_id, g.seeded.operator_id, "admin", permissions)


def tomorrow(env: PayEnv) -> Reconciler:
    """The reconciler a day later (today's bill is ready tomorrow)."""
    return Reconciler(env.service, clock=lambda: datetime.now(UTC) + timedelta(days=1))


async def paid(env: PayEnv, g: Group, amount: str, *, notify: bool = True) -> str:
    auth = await wechat_login(env, g)
    await bind(env, g, auth)
    o = await order(env, g, auth, amount)
    await env.pay.pay(o["out_trade_no"], mchid=g.sub_mchid, notify=notify)
    return str(o["out_trade_no"])


async def clearing(db: Database, g: Group) -> Decimal:
    async with db.tenant(g.seeded.tenant_id) as conn:
        value = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE code = :c"),
            {"c": f"clearing:wechat:{g.sub_mchid}"},
        )
    return value if isinstance(value, Decimal) else Decimal(0)


async def test_a_clean_day_has_no_exception(env: PayEnv, db: Database) -> None:
    g = await add_group(env, db)
    await paid(env, g, "30.00")
    await paid(env, g, "12.50")
    rec = tomorrow(env)
    run = await rec.reconcile(g.seeded.tenant_id, china_day(datetime.now(UTC)), "test")
    assert (run.state, run.lines, run.found, run.paid_total) == ("matched", 2, 0, Decimal("42.50"))
    again = await rec.reconcile(g.seeded.tenant_id, run.bill_date, "test")  # on demand, again
    assert (again.id, again.state, again.found) == (run.id, "matched", 0)
    site_clerk = Principal(
        g.seeded.tenant_id, g.seeded.operator_id, "clerk", frozenset(PERMISSIONS), "site",
        frozenset({g.seeded.site_id}),
    )  # fmt: skip
    with pytest.raises(Forbidden, match="tenant-wide"):  # the merchant's bill is the group's
        await rec.runs(site_clerk)


async def test_four_differences_give_exactly_four_exceptions_and_write_offs_post_them(
    env: PayEnv, db: Database
) -> None:
    g = await add_group(env, db)
    await paid(env, g, "10.00")  # clean
    gone = await paid(env, g, "20.00")  # WeChat's bill leaves it out: ours only
    changed = await paid(env, g, "30.00")  # the bill shows 29.00
    refunded = await paid(env, g, "40.00")
    tid = g.seeded.tenant_id
    await request_refund(
        env.service, tid, refunded, Decimal("15.00"), "moved out", "t", "RFREC0001"
    )
    delivery = await env.pay.settle_refund("RFREC0001", mchid=g.sub_mchid)
    assert delivery is not None and delivery.status == 204
    env.pay.tamper_bill(
        extra_rows=1, missing=(gone,), amounts={changed: 2900}, refunds={"RFREC0001": 1400}
    )
    rec = tomorrow(env)
    run = await rec.reconcile(tid, china_day(datetime.now(UTC)), "test")
    _, found = await rec.run_detail(admin(g), run.id)
    assert sorted((e.kind, e.ref, e.clearing_delta) for e in found) == [
        ("amount_differs", changed, Decimal("-1.00")),
        ("ours_only", gone, Decimal("-20.00")),
        ("refund_mismatch", "RFREC0001", Decimal("1.00")),
        ("theirs_only", "GHOST000000", Decimal("1.00")),
    ]
    # the same bill again: nothing new, nothing lost
    await rec.reconcile(tid, run.bill_date, "test")
    assert len((await rec.run_detail(admin(g), run.id))[1]) == 4

    ghost = next(e for e in found if e.kind == "theirs_only")
    assert ghost.actions == ("write_off",)  # no order of ours to credit
    with pytest.raises(Forbidden):
        await rec.resolve(admin(g, frozenset({"finance.reconcile"})), ghost.id, "write_off", "x")
    with pytest.raises(Invalid, match="reason"):
        await rec.resolve(admin(g), ghost.id, "write_off", "   ")
    with pytest.raises(Conflict):
        await rec.resolve(admin(g), ghost.id, "credit", "")
    before = await clearing(db, g)
    done = await rec.resolve(admin(g), ghost.id, "write_off", "测试单，微信侧多出")
    assert done.resolution == "written_off" and done.entry_id is not None
    with pytest.raises(Conflict, match="already"):
        await rec.resolve(admin(g), ghost.id, "write_off", "again")
    ours_only = next(e for e in found if e.kind == "ours_only")
    await rec.resolve(admin(g), ours_only.id, "write_off", "order never reached WeChat")
    assert await clearing(db, g) == before + Decimal("1.00") - Decimal("20.00")
    async with db.tenant(tid) as conn:
        audited = await conn.scalar(
            sa.text("SELECT count(*) FROM audit_event WHERE action = 'recon.written_off'")
        )
    assert audited == 2
    from cloud.check import check

    assert (await check(db, [tid])).ok  # every write-off balanced, every cached balance right


async def test_a_wrong_hash_is_refused_and_tried_again(env: PayEnv, db: Database) -> None:
    g = await add_group(env, db)
    await paid(env, g, "30.00")
    env.pay.tamper_bill(wrong_hash=True)
    rec = tomorrow(env)
    tid = g.seeded.tenant_id
    run = await rec.reconcile(tid, china_day(datetime.now(UTC)), "test")
    assert (run.state, run.attempts, run.found) == ("refused", 1, 0)
    assert run.error and "SHA1" in run.error
    assert run.next_try_at is not None
    # not due yet: the worker leaves it
    assert await rec.morning([tid]) == {"matched": 0, "refused": 0, "failed": 0}
    env.pay.tamper_bill()  # WeChat's file is right again
    later = Reconciler(env.service, clock=lambda: run.next_try_at + timedelta(seconds=1))  # type: ignore[operator]
    assert (await later.morning([tid]))["matched"] == 1
    (again,) = [r for r in await later.runs(admin(g)) if r.id == run.id]
    assert (again.state, again.attempts, again.found, again.error) == ("matched", 2, 0, None)


async def test_resolving_theirs_only_credits_the_wallet_once(env: PayEnv, db: Database) -> None:
    g = await add_group(env, db, balance="0.00")
    missed = await paid(env, g, "25.00", notify=False)  # WeChat took it; we never heard
    assert await credits(db, g, missed) == 0
    rec = tomorrow(env)
    run = await rec.reconcile(g.seeded.tenant_id, china_day(datetime.now(UTC)), "test")
    (e,) = (await rec.run_detail(admin(g), run.id))[1]
    assert (e.kind, e.actions) == ("theirs_only", ("credit", "refund", "write_off"))
    results = await asyncio.gather(
        rec.resolve(admin(g), e.id, "credit", ""),
        rec.resolve(admin(g), e.id, "credit", ""),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "ExceptionView"]
    assert await credits(db, g, missed) == 1
    assert await wallet(db, g) == Decimal("25.00")
    with pytest.raises(Conflict):
        await rec.resolve(admin(g), e.id, "credit", "")
    assert await wallet(db, g) == Decimal("25.00")
    # the next run of that day finds nothing more, and the resolution stays
    again = await rec.reconcile(g.seeded.tenant_id, run.bill_date, "test")
    assert again.open == 0


async def test_prepay_reconcile_on_demand(
    env: PayEnv, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from cloud.reconcile.cli import run_reconcile

    g = await add_group(env, db)
    await paid(env, g, "30.00")
    env.pay.tamper_bill(amounts={await paid(env, g, "15.00"): 1600})
    today = china_day(datetime.now(UTC))
    args = argparse.Namespace(tenant=g.slug, day=today)
    assert await run_reconcile(env.wiring, args) == 2  # today's bill is not ready
    assert "next morning" in capsys.readouterr().err
    base = env.service.clock
    env.service.clock = lambda: base() + timedelta(days=1)
    assert await run_reconcile(env.wiring, args) == 0
    out = capsys.readouterr().out
    assert f"{today}: matched, 2 line(s), paid 46.00" in out
    assert "amount_differs" in out and "1 open exception(s)" in out
    old = argparse.Namespace(tenant=g.slug, day=today - timedelta(days=91))
    assert await run_reconcile(env.wiring, old) == 2
    assert "90 days" in capsys.readouterr().err


async def test_a_malformed_line_is_an_exception_of_its_own(env: PayEnv, db: Database) -> None:
    g = await add_group(env, db)
    first = await paid(env, g, "30.00")
    await paid(env, g, "20.00")
    env.pay.tamper_bill(bad_lines=("`2026-13-45 99:00:00,`oops", "no backticks at all"))
    run = await tomorrow(env).reconcile(g.seeded.tenant_id, china_day(datetime.now(UTC)), "t")
    assert run.state == "matched" and run.lines == 4
    (a, b) = (await tomorrow(env).run_detail(admin(g), run.id))[1]
    assert [(e.kind, e.line_no) for e in (a, b)] == [("malformed", 3), ("malformed", 4)]
    assert "fields" in a.detail["why"] and "backtick" in b.detail["why"]
    assert first not in {e.out_trade_no for e in (a, b)}  # the good lines matched


async def test_refund_resolution_credits_then_refunds_the_payer(env: PayEnv, db: Database) -> None:
    g = await add_group(env, db, balance="0.00")
    missed = await paid(env, g, "25.00", notify=False)
    rec = tomorrow(env)
    run = await rec.reconcile(g.seeded.tenant_id, china_day(datetime.now(UTC)), "test")
    (e,) = (await rec.run_detail(admin(g), run.id))[1]
    with pytest.raises(Invalid, match="reason"):
        await rec.resolve(admin(g), e.id, "refund", "")
    done = await rec.resolve(admin(g), e.id, "refund", "付款人重复支付，原路退回")
    assert done.resolution == "refunded"
    assert await credits(db, g, missed) == 1
    assert await wallet(db, g) == Decimal("0.00")  # credited, then moved to refunds payable
    (refund,) = [r for r in env.pay.refunds.values() if r.order.out_trade_no == missed]
    assert refund.amount == 2500


async def test_the_worker_fetches_yesterdays_bill_once_it_is_ready(
    env: PayEnv, db: Database
) -> None:
    from datetime import time as clock_time

    from cloud.reconcile.bill import CST

    g = await add_group(env, db)
    await paid(env, g, "30.00")
    day = china_day(datetime.now(UTC))
    tid = g.seeded.tenant_id
    early = datetime.combine(day + timedelta(days=1), clock_time(9, 30), CST)
    assert await Reconciler(env.service, clock=lambda: early).morning([tid]) == {
        "matched": 0, "refused": 0, "failed": 0,
    }  # fmt: skip
    ready = datetime.combine(day + timedelta(days=1), clock_time(10, 5), CST)
    worker = Reconciler(env.service, clock=lambda: ready)
    assert (await worker.morning([tid]))["matched"] == 1
    assert (await worker.morning([tid]))["matched"] == 0  # once a day
    (run,) = await worker.runs(admin(g))
    assert (run.bill_date, run.state, run.found) == (day, "matched", 0)


async def test_no_bill_from_wechat_leaves_our_payments_ours_only(env: PayEnv, db: Database) -> None:
    g = await add_group(env, db)
    only = await paid(env, g, "30.00")
    env.pay.tamper_bill(missing=(only,))  # WeChat: NO_STATEMENT_EXIST
    rec = tomorrow(env)
    run = await rec.reconcile(g.seeded.tenant_id, china_day(datetime.now(UTC)), "test")
    (e,) = (await rec.run_detail(admin(g), run.id))[1]
    assert (run.state, run.lines, e.kind, e.ref, e.ours) == (
        "matched", 0, "ours_only", only, Decimal("30.00"),
    )  # fmt: skip
