"""The month's energy and finance report at scale (issue 18's benchmark): 10,000 points
(one account each, in 21 buildings), 30 days of readings, a balance brought over before
the month, a WeChat top-up a week and the usage journaled in windows; then the report per
account and per service point (every figure from the wallets' postings, registers from
the readings) and its Excel file, p50 and max over ``--rounds``.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_reports --rounds 3

``--windows-per-day`` (default 1) is how many usage entries a point gets a day (rating
journals hourly: 24 is the production shape, with 24 times the postings);
``--readings-per-day`` (default 4) does not change the report's work: it reads each
binding's registers by three index lookups whatever the readings' density.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import sqlalchemy as sa

from cloud.auth import PERMISSIONS, Principal
from cloud.console.reports import workbook
from cloud.db import Database, migrate
from cloud.registry.service import GroupSpec, seed_group
from cloud.reports import finance
from cloud.reports.period import Period
from cloud.reports.scope import resolve
from tests.bench.bench_lifecycle_search import _SEED
from tests.bench.scratch import ScratchDatabase

POINTS = 10_000
DAYS = 30

_LEDGER = """
UPDATE binding SET installed_at = %(start)s - interval '60 days';
UPDATE account SET opened_at = %(start)s - interval '60 days';
INSERT INTO ledger_account (id, tenant_id, code, kind, name, normal_side, balance, unposted)
VALUES (gen_random_uuid(), %(t)s, 'revenue:electricity', 'revenue', 'Revenue', 'credit', 0, 0),
       (gen_random_uuid(), %(t)s, 'clearing:wechat:bench', 'clearing', 'WeChat', 'debit', 0, 0)
ON CONFLICT (tenant_id, code) DO NOTHING;
CREATE TEMP TABLE moves AS
SELECT gen_random_uuid() AS id, a.wallet_id, sp.id AS point, m.kind, m.key, m.at, m.amount
FROM service_point sp JOIN account a ON a.id = sp.account_id
CROSS JOIN LATERAL (
  SELECT 'adjustment' AS kind, 'opening:' || a.id AS key,
         %(start)s - interval '1 day' AS at, 100.00 AS amount
  UNION ALL
  SELECT 'topup', 'pay:' || a.id || ':' || w, %(start)s + make_interval(days => 7 * w + 2),
         50.00
  FROM generate_series(0, 3) w
  UNION ALL
  SELECT 'usage', 'usage:' || sp.id || ':' || k,
         %(start)s + make_interval(mins => (k + 1) * 1440 / %(wpd)s),
         -round(0.5 + ((k * 7 + length(sp.name)) %% 13) / 10.0, 2)
  FROM generate_series(0, %(days)s * %(wpd)s - 1) k
) m;
INSERT INTO journal_entry (id, tenant_id, idempotency_key, kind, actor, reason, effective_at)
SELECT id, %(t)s, key, kind, 'bench', '', at FROM moves;
INSERT INTO posting (id, tenant_id, entry_id, ledger_account_id, amount)
SELECT gen_random_uuid(), %(t)s, id, wallet_id, -amount FROM moves
UNION ALL
SELECT gen_random_uuid(), %(t)s, m.id, x.id, m.amount FROM moves m JOIN ledger_account x
  ON x.tenant_id = %(t)s AND x.code = CASE m.kind WHEN 'usage' THEN 'revenue:electricity'
     WHEN 'topup' THEN 'clearing:wechat:bench' ELSE 'adjustments' END;
INSERT INTO reading (channel_id, measured_at, tenant_id, received_at, total, supply_on)
SELECT b.channel_id, %(start)s + make_interval(mins => k * 1440 / %(rpd)s), %(t)s,
       %(start)s + make_interval(mins => k * 1440 / %(rpd)s), 1000 + k * 0.75, true
FROM binding b CROSS JOIN generate_series(-%(rpd)s, (%(days)s + 1) * %(rpd)s) k;
ANALYZE
"""


def _seed_ledger(url: str, tenant: uuid.UUID, start: datetime, wpd: int, rpd: int) -> None:
    params = {"t": tenant, "start": start, "days": DAYS, "wpd": wpd, "rpd": rpd}
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute(
            "INSERT INTO ledger_account (id, tenant_id, code, kind, name, normal_side, balance, "
            "unposted) VALUES (gen_random_uuid(), %(t)s, 'adjustments', 'adjustments', 'Adj', "
            "'debit', 0, 0) ON CONFLICT (tenant_id, code) DO NOTHING",
            params,
        )
        for statement in _LEDGER.split(";\n"):
            if statement.strip():
                conn.execute(statement, params)  # type: ignore[arg-type]
        conn.commit()


async def main(rounds: int, wpd: int, rpd: int, keep: bool = False) -> None:
    scratch = ScratchDatabase.create()
    try:
        migrate(scratch.url)
        db = Database.connect(scratch.url, None, "prepay_app")
        tag = uuid.uuid4().hex[:8]
        spec = GroupSpec(slug=f"b{tag}", name="基准物业", gateway_code=f"gw-{tag}", meters=[])
        g = await seed_group(db, spec)
        zone = ZoneInfo("Asia/Shanghai")
        today = datetime.now(UTC).astimezone(zone).date()
        period = Period(today - timedelta(days=DAYS), today - timedelta(days=1))
        start = datetime(period.first.year, period.first.month, period.first.day, tzinfo=zone)
        began = time.perf_counter()
        async with db.tenant(g.tenant_id) as conn:
            tariff = await conn.scalar(sa.text("SELECT id FROM tariff"))
            params = {"t": g.tenant_id, "s": g.site_id, "g": g.gateway_id, "tariff": tariff}
            await conn.execute(sa.text(_SEED), {**params, "n": POINTS})
        _seed_ledger(scratch.url, g.tenant_id, start, wpd, rpd)
        with psycopg.connect(scratch.url) as c:
            postings = c.execute("SELECT count(*) FROM posting").fetchone()
            readings = c.execute("SELECT count(*) FROM reading").fetchone()
        print(
            f"seeded {POINTS:,} points, {postings[0] if postings else 0:,} postings, "
            f"{readings[0] if readings else 0:,} readings in {time.perf_counter() - began:.0f} s"
        )
        who = Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))
        timings: dict[str, list[float]] = {"account": [], "point": [], "xlsx": []}
        for _ in range(rounds):
            for level in ("account", "point"):
                t0 = time.perf_counter()
                async with db.tenant(g.tenant_id) as conn:
                    scope = await resolve(conn, who, "")
                    table = await finance.report(conn, scope, period, level)
                timings[level].append(time.perf_counter() - t0)
                assert len(table.rows) == POINTS, len(table.rows)
                if level == "account":
                    t1 = time.perf_counter()
                    book = workbook("能耗财务报表", f"{period.first} – {period.last}", table)
                    timings["xlsx"].append(time.perf_counter() - t0)
                    xlsx_only = time.perf_counter() - t1
        for name, values in timings.items():
            what = {"account": "report per account", "point": "report per point",
                    "xlsx": "report + Excel file"}[name]  # fmt: skip
            print(f"{what:22s} p50 {statistics.median(values):5.2f} s  max {max(values):5.2f} s")
        print(f"Excel file alone {xlsx_only:.2f} s, {len(book):,} bytes")
        await db.dispose()
    finally:
        if keep:
            print(f"kept {scratch.url} (tenant {g.tenant_id}, {period})")
        else:
            scratch.drop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--windows-per-day", type=int, default=1)
    ap.add_argument("--readings-per-day", type=int, default=4)
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    a = ap.parse_args()
    asyncio.run(main(a.rounds, a.windows_per_day, a.readings_per_day, a.keep))
