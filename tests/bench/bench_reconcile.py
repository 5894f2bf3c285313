"""Reconciliation of a 100,000-line WeChat Pay trade bill (issue 18, target ≤ 15 s): our
books hold the day's payments and refunds (inserted set-based), the stand-in holds the same
and serves them as WeChat's real-format bill, gzip, with a few deliberate differences; the
figure is ``Reconciler.reconcile`` end to end (tradebill, download, gunzip, SHA1, parse,
match against PostgreSQL, exceptions stored), with the pure parse and match timed alone.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_reconcile --lines 100000
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from cloud.db import Database, migrate
from cloud.reconcile import bill as bills
from cloud.reconcile.match import match
from cloud.reconcile.service import Reconciler, _our_orders, _our_refunds, china_day
from standins.wechatpay import Order, Refund
from tests.bench.scratch import ScratchDatabase
from tests.integration.pay_helpers import (
    SP_APPID,
    SP_MCHID,
    add_group,
    bind,
    order,
    pay_env,
    wechat_login,
)

FAULTS = 20  # of each kind: amounts changed, payments left out, extra rows, refunds changed


async def run(url: str, lines: int) -> None:
    db = Database.connect(url, None, "prepay_app")
    try:
        async with pay_env(url) as env:
            g = await add_group(env, db, balance="0.00")
            auth = await wechat_login(env, g)
            await bind(env, g, auth)
            first = await order(env, g, auth, "10.00")
            tid = g.seeded.tenant_id
            refunds = lines // 100
            payments = lines - refunds
            now = datetime.now(UTC)
            day = china_day(now)
            noon = datetime.combine(day, datetime.min.time(), bills.CST) + timedelta(hours=12)
            started = time.perf_counter()
            async with db.tenant(tid) as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO payment_order (id, tenant_id, out_trade_no, account_id, "
                        "user_id, site_id, amount, amount_fen, mode, mchid, sub_mchid, appid, "
                        "status, created_at, expires_at, paid_at, transaction_id, entry_id) "
                        "SELECT gen_random_uuid(), o.tenant_id, 'PB' || lpad(i::text, 12, '0'), "
                        "o.account_id, o.user_id, o.site_id, 10 + i % 50, (10 + i % 50) * 100, "
                        "o.mode, o.mchid, o.sub_mchid, o.appid, 'paid', :noon, :noon, :noon + "
                        "make_interval(secs => i % 36000), '42' || lpad(i::text, 26, '0'), "
                        "gen_random_uuid() FROM payment_order o, generate_series(0, :n - 1) i "
                        "WHERE o.out_trade_no = :first"
                    ),
                    {"noon": noon, "n": payments, "first": first["out_trade_no"]},
                )
                await conn.execute(
                    sa.text(
                        "INSERT INTO payment_refund (id, tenant_id, order_id, out_refund_no, "
                        "amount, reason, status, requested_at, requested_by, settled_at) SELECT "
                        "gen_random_uuid(), o.tenant_id, o.id, 'RB' || substr(o.out_trade_no, 3), "
                        "5, 'bench', 'success', :noon, 'bench', :noon + interval '5 hours' FROM "
                        "payment_order o WHERE o.out_trade_no LIKE 'PB%' ORDER BY o.out_trade_no "
                        "LIMIT :n"
                    ),
                    {"noon": noon, "n": refunds},
                )
            seeded = time.perf_counter() - started
            sub = g.sub_mchid
            held: dict[str, Order] = {}
            for i in range(payments):
                no = f"PB{i:012d}"
                at = noon + timedelta(seconds=i % 36000)
                request = {
                    "sp_appid": SP_APPID, "sp_mchid": SP_MCHID, "sub_mchid": sub,
                    "out_trade_no": no, "description": "预付费充值",
                    "amount": {"total": (10 + i % 50) * 100}, "payer": {"sp_openid": "o-b"},
                }  # fmt: skip
                o = Order(sub, request, True, "", at, "SUCCESS", f"42{i:026d}", at)
                env.pay.orders[(sub, no)] = held[no] = o
            for i in range(refunds):
                o = held[f"PB{i:012d}"]
                r = Refund(o, f"RB{i:012d}", f"50{i:030d}", 500, noon, None, None)
                r.status, r.success_time = "SUCCESS", noon + timedelta(hours=5)
                env.pay.refunds[(sub, r.out_refund_no)] = r
            nos = sorted(held)
            env.pay.tamper_bill(
                extra_rows=FAULTS,
                missing=tuple(nos[-FAULTS:]),
                amounts={no: 1 for no in nos[-2 * FAULTS : -FAULTS]},
                refunds={f"RB{i:012d}": 400 for i in range(FAULTS)},
            )
            rec = Reconciler(env.service, clock=lambda: datetime.now(UTC) + timedelta(days=1))
            started = time.perf_counter()
            result = await rec.reconcile(tid, day, "bench")
            took = time.perf_counter() - started
            assert result.state == "matched", result
            expected = 4 * FAULTS
            assert result.found == expected, (result.found, expected)
            # the pure parts alone, on the same bill
            t_render = time.perf_counter()
            text = env.pay.trade_bill(env.pay.merchants[SP_MCHID], day, sub)
            gzip.compress(text.encode())
            standin = time.perf_counter() - t_render  # WeChat's work, done here by the stand-in
            t0 = time.perf_counter()
            bill = bills.parse(text)
            t1 = time.perf_counter()
            async with db.tenant(tid) as conn:
                start = datetime.combine(day, datetime.min.time(), bills.CST)
                span = {"start": start, "end": start + timedelta(days=1)}
                ours = await _our_orders(conn, bill, sub, span)
                back = await _our_refunds(conn, bill, sub, span)
            t2 = time.perf_counter()
            found = match(bill, ours, back)
            t3 = time.perf_counter()
            print(
                f"{result.lines} bill lines ({payments} payments, {refunds} refunds, "
                f"{FAULTS} extra rows, {len(text.encode()) / 1e6:.1f} MB): reconciled in "
                f"{took:.2f} s end to end, {result.found} exceptions (expected {expected}); "
                f"alone: parse {t1 - t0:.2f} s, load our books {t2 - t1:.2f} s, match "
                f"{t3 - t2:.2f} s ({len(found)} differences); the stand-in's rendering and "
                f"gzip of the bill (WeChat's side) {standin:.2f} s of it; seeding {seeded:.1f} s"
            )
    finally:
        await db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    args = ap.parse_args()
    scratch = ScratchDatabase.create()
    try:
        migrate(scratch.url, "prepay_app")
        asyncio.run(run(scratch.url, args.lines))
    finally:
        scratch.drop()


if __name__ == "__main__":
    main()
