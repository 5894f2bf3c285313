"""The counter's account search and account page with 10,000 service points: server time
per query kind (p50/p95) and the search's plan for a name substring.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python -m tests.bench.bench_lifecycle_search --rounds 30
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import sqlalchemy as sa

from cloud.auth import PERMISSIONS, Principal
from cloud.db import Database, migrate
from cloud.lifecycle import accounts
from cloud.registry.service import GroupSpec, seed_group
from tests.bench.scratch import ScratchDatabase

POINTS = 10_000

# Buildings of 20 floors × 25 premises; customer i holds account A1xxxxx with one point
# bound to device d<i> (serial SN<i>, address <i>) on the seeded gateway.
_SEED = """
WITH b AS (
  INSERT INTO building (id, tenant_id, site_id, name)
  SELECT gen_random_uuid(), :t, :s, 'B' || g FROM generate_series(1, :n / 500 + 1) g
  RETURNING id, name
), p AS (
  INSERT INTO premises (id, tenant_id, site_id, building_id, floor, number)
  SELECT gen_random_uuid(), :t, :s, b.id, ((i / 25) % 20 + 1)::text, i::text
  FROM generate_series(0, :n - 1) i JOIN b ON b.name = 'B' || (i / 500 + 1)
  RETURNING id, number::int AS i
), c AS (
  INSERT INTO customer (id, tenant_id, name, phone)
  SELECT gen_random_uuid(), :t, 'Customer ' || i, '139' || lpad(i::text, 8, '0')
  FROM generate_series(0, :n - 1) i RETURNING id, substr(name, 10)::int AS i
), w AS (
  INSERT INTO ledger_account (id, tenant_id, code, kind, name, normal_side, balance, unposted)
  SELECT gen_random_uuid(), :t, 'wallet:bench' || i, 'wallet', 'Wallet ' || i, 'credit', 0, 0
  FROM generate_series(0, :n - 1) i RETURNING id, substr(code, 13)::int AS i
), a AS (
  INSERT INTO account (id, tenant_id, customer_id, number, wallet_id, status, opened_at)
  SELECT gen_random_uuid(), :t, c.id, 'A' || (1000000 + c.i), w.id, 'active', now()
  FROM c JOIN w USING (i)
  RETURNING id, substr(number, 2)::int - 1000000 AS i
), sp AS (
  INSERT INTO service_point (id, tenant_id, site_id, account_id, tariff_id, name, utility,
    premises_id, control_mode, credit_limit, emergency_credit, common_area)
  SELECT gen_random_uuid(), :t, :s, a.id, :tariff, 'point ' || a.i, 'electricity', p.id,
    'cloud', 0, 0, false
  FROM a JOIN p USING (i) RETURNING id, substr(name, 7)::int AS i
), d AS (
  INSERT INTO device (id, tenant_id, gateway_id, key, profile, bus, address, serial,
    close_only)
  SELECT gen_random_uuid(), :t, :g, 'd' || i, 'acrel-ddsy1352-modbus', 'bus1', i::text,
    'SN' || i, false FROM generate_series(0, :n - 1) i RETURNING id, substr(key, 2)::int AS i
), ch AS (
  INSERT INTO channel (id, tenant_id, device_id, number)
  SELECT gen_random_uuid(), :t, d.id, 1 FROM d RETURNING id, device_id
)
INSERT INTO binding (id, tenant_id, service_point_id, channel_id, installed_at)
SELECT gen_random_uuid(), :t, sp.id, ch.id, now()
FROM ch JOIN d ON d.id = ch.device_id JOIN sp USING (i)
"""


def _stats(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=20)
    return f"p50 {statistics.median(ms):6.1f} ms  p95 {q[18]:6.1f} ms"


async def main(rounds: int) -> None:
    scratch = ScratchDatabase.create()
    try:
        migrate(scratch.url)
        db = Database.connect(scratch.url, None, "prepay_app")
        tag = uuid.uuid4().hex[:8]
        g = await seed_group(
            db, GroupSpec(slug=f"b{tag}", name="Bench", gateway_code=f"gw-{tag}", meters=[])
        )
        async with db.tenant(g.tenant_id) as conn:
            tariff = await conn.scalar(sa.text("SELECT id FROM tariff"))
            await conn.execute(
                sa.text(_SEED),
                {
                    "t": g.tenant_id,
                    "s": g.site_id,
                    "g": g.gateway_id,
                    "tariff": tariff,
                    "n": POINTS,
                },
            )
        async with db.tenant(g.tenant_id) as conn:
            for table in ("customer", "account", "premises", "device", "service_point"):
                await conn.execute(sa.text(f"ANALYZE {table}"))
        who = Principal(g.tenant_id, g.operator_id, "admin", frozenset(PERMISSIONS))
        cases = {
            "account number": "A1004321",
            "name substring": "tomer 4321",
            "phone": "13900004321",
            "premises": "B9-13-4321",
            "meter serial": "SN4321",
            "no query (page 1)": None,
        }
        for name, q in cases.items():
            ms = []
            for _ in range(rounds):
                t = time.perf_counter()
                page = await accounts.search_accounts(db, who, q)
                ms.append((time.perf_counter() - t) * 1000)
            print(f"search {name:20s} {_stats(ms)}  ({page.total} found)")
        ms = []
        for _ in range(rounds):
            t = time.perf_counter()
            await accounts.account_page(db, who, "A1004321")
            ms.append((time.perf_counter() - t) * 1000)
        print(f"account page                {_stats(ms)}")
        async with db.tenant(g.tenant_id) as conn:
            plan = await conn.execute(
                sa.text("EXPLAIN (ANALYZE, COSTS OFF) " + accounts.SEARCH),
                {
                    "q": "tomer 4321",
                    "like": "%tomer 4321%",
                    "site": None,
                    "sites": None,
                    "lim": 20,
                    "off": 0,
                },
            )
            print("\n".join(r[0] for r in plan))
        await db.dispose()
    finally:
        scratch.drop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=30)
    asyncio.run(main(p.parse_args().rounds))
